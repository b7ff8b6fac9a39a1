"""Loss curves of finished (or running) runs: reading metrics files robustly, a PNG with
matplotlib, and a chart drawn with characters for terminals without it.

A run is what `tinygpt train --out NAME.ckpt` leaves behind: the checkpoint and the JSON-lines
metrics beside it (NAME.metrics.jsonl). Either one names the run. No Rich or Typer here;
matplotlib and torch are imported only when they are needed.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TinyGPTError, UsageError
from .files import permit_like_a_new_file, write_hint
from .metrics import METRICS_SUFFIX, Metrics, RunError, read_metrics

PLOT_EXTRA = "pip install 'tinygpt[plot]'"
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")


class MatplotlibMissing(UsageError):
    """A PNG was asked for but matplotlib is not installed (the `plot` extra)."""

    def __init__(self) -> None:
        super().__init__("writing a PNG needs matplotlib, which is not installed",
                         hint=f"{PLOT_EXTRA}, or use --terminal for a chart in the terminal")


# --- reading -----------------------------------------------------------------------------------

@dataclass
class Run:
    """One run to plot: its loss records and what the checkpoint says about tokens per step."""

    name: str
    metrics_path: Path
    metrics: Metrics
    checkpoint: Path | None = None
    tokens_per_step: int | None = None
    notes: list[str] = field(default_factory=list)  # worth saying, not wrong
    warnings: list[str] = field(default_factory=list)  # something was skipped

    @property
    def best(self) -> tuple[int, float] | None:
        """(step, valid loss) of the lowest finite validation loss."""
        finite = [(loss, step) for step, _, loss in self.metrics.evals if math.isfinite(loss)]
        if not finite:
            return None
        loss, step = min(finite)
        return step, loss

    @property
    def last_step(self) -> int:
        steps = [p[0] for p in self.metrics.evals[-1:] + self.metrics.train[-1:]]
        return max(steps, default=0)


def tokens_per_step(state: dict) -> int | None:
    """Tokens one optimizer step consumes: batch x context x grad_accum x processes."""
    train = state.get("train_config") or {}
    model = state.get("model_config") or {}
    values = (train.get("batch_size"), model.get("context_length"), train.get("grad_accum", 1),
              state.get("world_size", 1))
    if not all(isinstance(v, int) and v > 0 for v in values):
        return None
    return math.prod(values)


def _sniff(path: Path) -> str | None:
    """'checkpoint', 'metrics' or None, from the first bytes (the name decides for empty files)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # torch zip, legacy pickle
        return "checkpoint"
    if head.lstrip().startswith(b"{") or path.name.endswith(".jsonl"):
        return "metrics"
    if path.suffix in _CHECKPOINT_SUFFIXES:
        return "checkpoint"  # the loader says how it is broken
    return None


def _metrics_for(checkpoint: Path) -> Path:
    from .checkpoint import related_path

    metrics = related_path(checkpoint, "metrics")
    if not metrics.exists() and checkpoint.name.endswith(".best.ckpt"):
        # model.best.ckpt belongs to the run of model.ckpt and shares its metrics
        metrics = checkpoint.with_name(checkpoint.name[:-len(".best.ckpt")] + METRICS_SUFFIX)
    return metrics


def _checkpoint_for(metrics: Path) -> Path | None:
    """The inverse of related_path(ckpt, "metrics"): model.metrics.jsonl -> model.ckpt."""
    if not metrics.name.endswith(METRICS_SUFFIX):
        return None
    return metrics.with_name(metrics.name[:-len(METRICS_SUFFIX)] + ".ckpt")


def _run_name(path: Path) -> str:
    name = path.name
    for suffix in (METRICS_SUFFIX, ".best.ckpt", *_CHECKPOINT_SUFFIXES, ".jsonl"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return name


def load_run(path: Path) -> Run:
    """A run named by its checkpoint or its metrics file; every way it can be wrong is a RunError
    (or the CheckpointError of a checkpoint that does not load)."""
    from . import checkpoint as ckpt

    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path} is a directory; name a checkpoint (such as "
                       f"{path / 'model.ckpt'}) or its metrics file")
    if not path.exists():
        if path.suffix in _CHECKPOINT_SUFFIXES and _metrics_for(path).exists():
            kind = "checkpoint"  # only the metrics survived: plot them, without a token axis
        else:
            raise RunError(f"{path}: no such checkpoint or metrics file",
                           hint="train a run with `tinygpt train`, or pass a checkpoint or its "
                           f"NAME{METRICS_SUFFIX} file")
    else:
        try:
            kind = _sniff(path)
        except OSError as exc:
            raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    if kind is None:
        raise RunError(f"{path} is neither a tinygpt checkpoint nor a metrics file",
                       hint=f"pass NAME.ckpt (written by `tinygpt train`) or NAME{METRICS_SUFFIX}")

    checkpoint: Path | None
    notes: list[str] = []
    if kind == "checkpoint":
        checkpoint, metrics_path = path, _metrics_for(path)
        if not metrics_path.exists():
            raise RunError(f"{path} has no metrics file beside it (looked for {metrics_path})",
                           hint="the loss curve comes from the metrics `tinygpt train` writes "
                           "beside its checkpoint; plot a run that still has it")
    else:
        checkpoint, metrics_path = _checkpoint_for(path), path
    metrics = read_metrics(metrics_path)  # before the checkpoint: cheap, and what must work
    if not metrics.evals and not metrics.train:
        detail = f" ({metrics.skipped} unreadable line(s))" if metrics.skipped else \
            " (the file is empty)"
        raise RunError(f"{metrics_path} holds no loss records{detail}",
                       hint="a run writes its first record after its first evaluation")
    per_step = None
    if checkpoint is not None and checkpoint.exists():
        try:
            per_step = tokens_per_step(ckpt.load(checkpoint))
        except TinyGPTError as exc:
            if kind == "checkpoint":  # the run named by a checkpoint that does not load
                raise
            # the metrics were named: they still plot, only the token axis is lost
            notes.append(f"{exc.message}: the token axis is left out")
            checkpoint = None
    else:
        checkpoint = None
        notes.append(f"{metrics_path.name}: no checkpoint beside it, so tokens per step are "
                     "unknown and the token axis is left out")
    run = Run(_run_name(checkpoint or metrics_path), metrics_path, metrics, checkpoint, per_step,
              notes)
    if metrics.skipped:
        run.warnings.append(f"skipped {metrics.skipped} unreadable line(s) in {metrics_path}")
    if metrics.restarts:
        run.notes.append(f"{metrics_path.name}: the run went back to step "
                         f"{', '.join(map(str, metrics.restarts))} (resumed from an earlier "
                         "checkpoint); the later records replace the earlier ones")
    return run


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """Several runs, named so that their labels differ (model, or a/model and b/model)."""
    return _distinct_names([load_run(p) for p in paths])


def _distinct_names(runs: list[Run]) -> list[Run]:
    if len({r.name for r in runs}) < len(runs):
        for run in runs:
            source = run.checkpoint or run.metrics_path
            if source.parent.name:
                run.name = f"{source.parent.name}/{_run_name(source)}"
        if len({r.name for r in runs}) < len(runs):
            for run in runs:
                run.name = str(run.checkpoint or run.metrics_path)
    return runs


def default_output(runs: Sequence[Run]) -> Path:
    """Beside the (first) run: model.ckpt -> model.png."""
    first = runs[0]
    source = first.checkpoint or _checkpoint_for(first.metrics_path) or first.metrics_path
    return source.with_name(_run_name(source) + ".png")


def series(run: Run) -> dict[str, list[tuple[int, float]]]:
    """The curves of a run, as (step, loss) points: valid and train (both from the evaluations,
    as the book plots them) and train_running (the mean loss of the steps between log records)."""
    return {
        "valid": [(step, valid) for step, _, valid in run.metrics.evals],
        "train": [(step, train) for step, train, _ in run.metrics.evals],
        "train_running": list(run.metrics.train),
    }


# --- the PNG -----------------------------------------------------------------------------------

def _matplotlib():
    """matplotlib's Figure and Agg canvas, without pyplot: no global backend switch, no GUI."""
    try:
        import matplotlib  # noqa: F401 - fails first, and cleanly, when it is not installed
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import EngFormatter
    except ImportError:
        raise MatplotlibMissing() from None
    return Figure, FigureCanvasAgg, EngFormatter


def require_matplotlib() -> None:
    """Raise MatplotlibMissing now (say, before a training run that ends with a plot)."""
    _matplotlib()


def _xy(points: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


def figure(runs: Sequence[Run]):
    """The loss figure: train and valid loss by step, the best point starred, tokens on a top
    axis (or, for runs that differ in tokens per step, a second panel of valid loss by tokens).

    Every curve is a Line2D whose gid is "NAME:valid", "NAME:train", "NAME:train_running" or
    "NAME:best", so a test (or a notebook) can find what was drawn.
    """
    Figure, FigureCanvasAgg, EngFormatter = _matplotlib()
    per_step = {run.tokens_per_step for run in runs}
    by_tokens_panel = len(per_step) > 1 and None not in per_step
    fig = Figure(figsize=(10, 5.6) if by_tokens_panel else (9, 5.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if by_tokens_panel else 1, squeeze=False)[0]
    ax = axes[0]
    single = len(runs) == 1
    for i, run in enumerate(runs):
        curves = series(run)
        prefix = "" if single else f"{run.name} "
        colors = {"train": "C0", "valid": "C1"} if single else {"train": f"C{i}", "valid": f"C{i}"}
        if single and curves["train_running"]:
            ax.plot(*_xy(curves["train_running"]), color="0.65", lw=1, gid=f"{run.name}:"
                    "train_running", label="train (running mean)")
        ax.plot(*_xy(curves["train"]), ls="--", lw=1.6, color=colors["train"],
                gid=f"{run.name}:train", label=f"{prefix}train")
        ax.plot(*_xy(curves["valid"]), ls="-", lw=1.8, marker="o", ms=3, color=colors["valid"],
                gid=f"{run.name}:valid", label=f"{prefix}valid")
        if run.best is not None:
            step, loss = run.best
            ax.plot([step], [loss], ls="none", marker="*", ms=15, color=colors["valid"],
                    mec="black", mew=0.8, zorder=5, gid=f"{run.name}:best")
            ax.annotate(f"best {loss:.3f} @ {step}", (step, loss), textcoords="offset points",
                        xytext=(6, 9), fontsize=8)
        if by_tokens_panel:
            tokens = [(step * run.tokens_per_step, loss) for step, loss in curves["valid"]]
            axes[1].plot(*_xy(tokens), marker="o", ms=3, color=f"C{i}",
                         gid=f"{run.name}:valid_by_tokens", label=f"{run.name} valid")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    title = "Training and validation loss"
    ax.set_title(f"{title}: {runs[0].name}" if single else title, fontsize=11)
    if len(per_step) == 1 and None not in per_step:
        # step -> tokens is linear, so the same curve reads on a token axis at the top
        (tps,) = per_step
        top = ax.secondary_xaxis("top", functions=(lambda s, t=tps: s * t,
                                                   lambda x, t=tps: x / t))
        top.set_xlabel(f"tokens ({tps:,} per step)")
        top.xaxis.set_major_formatter(EngFormatter(sep=""))
    if by_tokens_panel:
        axes[1].set_xlabel("tokens")
        axes[1].xaxis.set_major_formatter(EngFormatter(sep=""))
        axes[1].set_title("Validation loss by tokens seen", fontsize=11)
        axes[1].grid(alpha=0.3)
        axes[1].legend(fontsize=8)
    return fig


def write_png(runs: Sequence[Run | Path | str], output: Path) -> Path:
    """Draw the runs' loss curves into `output` (PNG; .svg or .pdf by its suffix) and return it.

    Runs may be given as loaded `Run`s or as paths (checkpoints or metrics files). The file is
    replaced atomically, so an image viewer never shows half a plot. Raises MatplotlibMissing
    without matplotlib, RunError/CheckpointError for a run that cannot be read.
    """
    output = Path(output)
    require_matplotlib()  # the clear error before any work
    fig = figure(_distinct_names([r if isinstance(r, Run) else load_run(Path(r)) for r in runs]))
    fmt = output.suffix.lstrip(".").lower() or "png"
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UsageError(f"--output {output}: matplotlib cannot write .{fmt} files",
                         hint="use a .png (or .svg, .pdf) file name")
    _check_replaceable(output, fmt)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    try:
        permit_like_a_new_file(fd)
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format=fmt)
        os.replace(tmp, output)
    except OSError as exc:  # a full disk, say: one line, and the old image (if any) kept
        Path(tmp).unlink(missing_ok=True)
        raise TinyGPTError(f"could not write {output}: {exc.strerror or exc}",
                           hint=write_hint(exc, "choose another --output")) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output


# the first bytes of each format's files: a plot replaces an image, never a file of another kind
IMAGE_MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "pdf": (b"%PDF-",), "svg": (b"<?xml", b"<svg")}


def _check_replaceable(output: Path, fmt: str) -> None:
    """Refuse to write the image over anything but an image of its format (an earlier plot):
    `-o notes.png` on a file that is really a text, a checkpoint or a folder is refused."""
    if not os.path.lexists(output):
        return
    if os.path.isdir(output):
        raise UsageError(f"--output {output} is a folder", hint="give a file name, e.g. plot.png")
    if not os.path.isfile(output):  # a FIFO would block the open below forever
        raise UsageError(f"--output {output} exists and is not a regular file",
                         hint="choose another --output")
    try:
        with open(output, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    if head and not head.startswith(IMAGE_MAGIC.get(fmt, (head,))):
        raise UsageError(f"--output {output} exists and is not a .{fmt} image; tinygpt replaces "
                         "only an image it could have written", hint="move it away, or choose "
                         "another --output")


# --- the terminal chart ------------------------------------------------------------------------

# Per run: (valid, train) glyphs, filled for valid, hollow for train; then the best point's.
UNICODE_GLYPHS = (("●", "○"), ("■", "□"), ("▲", "△"), ("◆", "◇"))
ASCII_GLYPHS = (("o", "."), ("x", "+"), ("#", ":"), ("@", "-"))
BEST = {True: "★", False: "*"}


@dataclass(frozen=True)
class Chart:
    """A chart as lines of text, none wider than the width it was drawn for.

    `glyphs` maps each plotting character to (run index, "valid" | "train" | "best"), so a
    renderer can color it; the text alone already reads in a plain terminal.
    """

    lines: list[str]
    glyphs: dict[str, tuple[int, str]]


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 2)] + ".."


def _pack(items: list[str], width: int) -> list[str]:
    """Legend entries, several to a line while they fit."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + 3 + len(item) <= width:
            lines[-1] += "   " + item
        else:
            lines.append(_fit(item, width))
    return lines


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def _interpolate(points: list[tuple[int, float]], x: float) -> float | None:
    """The curve through `points` at x, or None outside it or next to a non-finite point."""
    if not points or x < points[0][0] or x > points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 <= x <= x1:
            if not (math.isfinite(y0) and math.isfinite(y1)):
                return None
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    y = points[-1][1]
    return y if math.isfinite(y) else None


def text_chart(runs: Sequence[Run], width: int = 80, height: int = 12,
               unicode: bool = True) -> Chart:
    """Valid and train loss by step, drawn with characters in `width` columns (40 is enough)."""
    width = max(width, 24)
    height = max(height, 4)
    sets = UNICODE_GLYPHS if unicode else ASCII_GLYPHS
    best_glyph = BEST[unicode]
    curves = []  # (run index, role, glyph, points) in drawing order: train under valid
    for i, run in enumerate(runs):
        valid_glyph, train_glyph = sets[i % len(sets)]
        s = series(run)
        curves.append((i, "train", train_glyph, s["train"] or s["train_running"]))
        curves.append((i, "valid", valid_glyph, s["valid"]))
    ys = [y for *_, points in curves for _, y in points if math.isfinite(y)]
    xs = [x for *_, points in curves for x, _ in points]
    if not ys:
        return Chart([_fit("no finite losses to plot", width)], {})
    x0, x1 = min(xs), max(xs)
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    labels = [f"{hi:.2f}", f"{(lo + hi) / 2:.2f}", f"{lo:.2f}"]
    label_w = max(map(len, labels))
    plot_w = width - label_w - 2
    grid = [[" "] * plot_w for _ in range(height)]

    def col(x: float) -> int:
        return 0 if x1 == x0 else round((x - x0) / (x1 - x0) * (plot_w - 1))

    def row(y: float) -> int:
        return round((hi - y) / (hi - lo) * (height - 1))

    glyphs: dict[str, tuple[int, str]] = {}
    for i, role, glyph, points in curves:
        if not points:
            continue
        glyphs.setdefault(glyph, (i, role))
        previous = None
        for c in range(plot_w):
            y = _interpolate(points, x0 + (x1 - x0) * c / max(1, plot_w - 1))
            if y is None:
                previous = None
                continue
            r = row(y)
            # a steep stretch: fill the rows it jumps over, so the curve stays connected
            top, bottom = (r, r) if previous is None else sorted((r, previous))
            for fill in range(top, bottom + 1):
                if fill != previous or fill == r:
                    grid[fill][c] = glyph
            previous = r
        for x, y in points:  # the measured points themselves, whatever the column spacing
            if math.isfinite(y):
                grid[row(y)][col(x)] = glyph
    for i, run in enumerate(runs):
        if run.best is not None:
            step, loss = run.best
            grid[row(loss)][col(step)] = best_glyph
            glyphs.setdefault(best_glyph, (i, "best"))

    v, h, tee, corner = ("│", "─", "┤", "└") if unicode else ("|", "-", "+", "+")
    label_rows = {0: labels[0], (height - 1) // 2: labels[1], height - 1: labels[2]}
    title = "loss by step" + (f": {runs[0].name}" if len(runs) == 1 else "")
    lines = [_fit(title, width)]
    for r, cells in enumerate(grid):
        label = label_rows.get(r)
        prefix = f"{label:>{label_w}}{tee}" if label else f"{'':>{label_w}}{v}"
        lines.append(prefix + " " + "".join(cells).rstrip())
    lines.append(" " * label_w + corner + h * (plot_w + 1))
    left, right = str(x0), str(x1)
    middle = "step"
    gap = plot_w + 1 - len(left) - len(right) - len(middle)
    if gap >= 2:
        axis = left + " " * (gap // 2) + middle + " " * (gap - gap // 2) + right
    else:
        axis = left + " " * max(1, plot_w + 1 - len(left) - len(right)) + right
    lines.append(_fit(" " * (label_w + 1) + axis, width))
    per_step = {run.tokens_per_step for run in runs}
    if len(per_step) == 1 and None not in per_step:
        (tps,) = per_step
        lines.append(_fit(f"{' ' * (label_w + 1)}tokens: {_si(x0 * tps)} to {_si(x1 * tps)} "
                          f"({tps:,}/step)", width))
    legend = []
    for i, run in enumerate(runs):
        valid_glyph, train_glyph = sets[i % len(sets)]
        prefix = "" if len(runs) == 1 else f"{run.name} "
        train_name = "train" if run.metrics.evals else "train (running)"
        legend += [f"{valid_glyph} {prefix}valid", f"{train_glyph} {prefix}{train_name}"]
        if run.best is not None:
            legend.append(f"{best_glyph} {prefix}best {run.best[1]:.3f} @ {run.best[0]}")
    lines += _pack(legend, width)
    return Chart(lines, glyphs)
