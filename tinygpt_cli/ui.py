"""Everything Rich: progress bars, tables, messages. Never imports torch.

stdout carries data (generated text, --json results); everything else goes to stderr.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

LOG_WIDTH = 4096  # off a terminal: wide enough that no line of ours is ever wrapped


class _Stderr:
    """sys.stderr as it is at each write (a test runner may swap it). Off a terminal, the spaces
    Rich pads a table's lines with are dropped: a log wants no trailing whitespace."""

    def write(self, text: str) -> int:
        stream = sys.stderr
        if not stream.isatty():
            text = _TRAILING_SPACE.sub("", text)
        return stream.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()

    def fileno(self) -> int:
        return sys.stderr.fileno()

    @property
    def encoding(self) -> str:
        return getattr(sys.stderr, "encoding", None) or "utf-8"


_TRAILING_SPACE = re.compile(r"[ \t]+(?=\n)")


class _Console(Console):
    """A Rich console that reads like a log off a terminal: lines as long as they are (a path or
    a hash is never broken at 80 columns), unless COLUMNS asks for a width. On a terminal, its
    width as Rich finds it."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        if self.is_terminal or self._width is not None or "COLUMNS" in os.environ:
            return size
        return ConsoleDimensions(LOG_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


err = _Console(file=_Stderr(), highlight=False)
out = Console(highlight=False, soft_wrap=True)


def error(message: str, hint: str | None = None) -> None:
    # soft_wrap: one line per message, however narrow the terminal, so logs and greps keep it whole
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    if hint:
        err.print(f"[dim]hint:[/] {escape(hint)}", soft_wrap=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def info(message: str) -> None:
    err.print(escape(message), soft_wrap=True)


def print_json(data: object) -> None:
    """Machine-readable results on stdout, one JSON document."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def key_value_table(title: str, rows: dict[str, object]) -> None:
    """A two-column summary table on stderr."""
    table = Table(title=title, show_header=False, title_justify="left", box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows.items():
        table.add_row(key, escape(_fmt(value)))
    err.print(table)


@contextmanager
def status(description: str, enabled: bool = True) -> Iterator[None]:
    """A transient spinner on a terminal for work of a few seconds with no count to show."""
    if not (enabled and err.is_terminal):
        yield
        return
    with err.status(description):
        yield


@contextmanager
def byte_progress(description: str, enabled: bool = True) -> Iterator:
    """A transient progress bar over bytes; yields a `(done, total)` callback."""
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
        DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=err, transient=True,
    )
    task = progress.add_task(description, total=None)
    with progress:
        yield lambda done, total: progress.update(task, completed=done, total=total)


@contextmanager
def count_progress(description: str, total: int, enabled: bool = True) -> Iterator:
    """A transient progress bar over a count; yields an `advance(n)` callback."""
    if not enabled:
        yield lambda n=1: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
    )
    task = progress.add_task(description, total=total)
    with progress:
        yield lambda n=1: progress.advance(task, n)


SEPARATOR_NAMES = {"eot": "end-of-text", "newline": "a newline", "none": "nothing"}


def _count_of(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def tokenize_summary(s: dict) -> None:
    title = "Token cache (hit: nothing to do)" if s["cache_hit"] else "Tokenized"
    read = f"{_count_of(s['files'], 'file')}, {_count_of(s['documents'], 'document')}"
    if s["documents"] > 1:
        read += f", separated by {SEPARATOR_NAMES[s['separator']]}"
    passed = [f"{_count_of(s['skipped_files'], 'file')} not text" if s["skipped_files"] else "",
              f"{s['not_matched_files']:,} not matching --include/--exclude"
              if s["not_matched_files"] else ""]
    rows = {"source": ", ".join(s["sources"]), "read": read}
    if any(passed):
        rows["skipped"] = "; ".join(p for p in passed if p)
    if s["fallback_share"]:
        rows["byte fallback"] = (f"{s['fallback_share']:.2%} of tokens (not in the model's "
                                 "vocabulary: spelled as bytes)")
    key_value_table(title, {
        **rows,
        "validation": (f"{s['val_fraction']:.0%} of the documents, whole, spread evenly"
                       if s["split"] == "documents"
                       else f"the last {s['val_fraction']:.0%} of the tokens"),
        "characters": s["characters"],
        "tokens": s["tokens"],
        "distinct tokens": s["distinct_tokens"],
        "vocabulary": f"{s['vocab_size']:,} ({s['vocab_mode']}, {s['encoding']})",
        "train tokens": s["train_tokens"],
        "valid tokens": s["valid_tokens"],
        "tokens per character": s["tokens_per_character"],
        "cache": s["cache"],
        "seconds": s["seconds"],
    })


# --- training display --------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _rate(tokens_per_sec: float) -> str:
    return f"{tokens_per_sec / 1000:,.1f}k" if tokens_per_sec >= 1000 else f"{tokens_per_sec:,.0f}"


def _one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", " ⏎ ")


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class TrainReporter:
    """Plain output for logs, pipes and CI: the book's lines on stdout (on stderr where stdout
    carries JSON, `json_out`), the rest on stderr."""

    def __init__(self, json_out: bool = False) -> None:
        self.started = None
        self.book_out = sys.stderr if json_out else sys.stdout

    def __enter__(self) -> TrainReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def handle(self, event) -> None:
        kind = type(event).__name__
        method = getattr(self, f"on_{kind}", None)
        if method is not None:
            method(event)

    def on_RunStarted(self, e) -> None:  # noqa: N802 - named after the event class
        self.started = e
        p = e.params
        where = f"{e.device}, {e.dtype}" + (f", {e.world_size} processes" if e.world_size > 1
                                             else "")
        resumed = f", resuming {e.resumed_from} at step {e.start_step}" if e.resumed_from else ""
        budget = e.train_config.max_time
        steps = (f"{_duration(budget)} (up to {e.max_iters:,} steps)" if budget
                 else f"{e.max_iters} steps")
        info(f"Training {p['total'] / 1e6:.2f}M parameters ({p['embedding'] / 1e6:.2f}M "
             f"embedding + {p['other'] / 1e6:.2f}M other) on {where}: {steps} of "
             f"{e.tokens_per_step:,} tokens{resumed}")

    def on_EvalDone(self, e) -> None:  # noqa: N802
        # the book's line, to stdout, exactly as the chapter prints it
        print(f"Step: {e.step}, Training Loss: {e.train_loss:.3f}, "
              f"Validation Loss: {e.valid_loss:.3f}", file=self.book_out, flush=True)

    def on_Notice(self, e) -> None:  # noqa: N802
        (warn if e.warning else info)(e.message)

    def on_Sample(self, e) -> None:  # noqa: N802
        info(f"sample at step {e.step}: {_one_line(e.text)}")

    def on_RunDone(self, e) -> None:  # noqa: N802
        train_summary(e)


class LiveTrainDisplay(TrainReporter):
    """On a terminal: a table that gains a row per evaluation, above a progress bar with ETA."""

    MAX_ROWS = 30
    ETA_WINDOW = 6  # StepDone events (10 steps each by default) the ETA's rate is taken over

    def __init__(self) -> None:
        super().__init__()
        from rich.live import Live

        self.rows: list[tuple[str, ...]] = []
        self.sample: str | None = None
        self.marks: list[tuple[float, int]] = []  # (elapsed, step) of the recent StepDone events
        self.progress = Progress(
            TextColumn("[bold]{task.fields[label]}"), BarColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[rate]} tok/s"), TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}"), console=err)
        self.task = None
        self.live = Live(console=err, refresh_per_second=8, get_renderable=self._render)

    def __enter__(self) -> LiveTrainDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)

    def _render(self):
        from rich.console import Group

        table = Table(title_justify="left", expand=False)
        for name, justify in (("step", "right"), ("train loss", "right"),
                              ("valid loss", "right"), ("", "left"), ("lr", "right"),
                              ("tok/s", "right"), ("elapsed", "right")):
            table.add_column(name, justify=justify)
        for row in self.rows[-self.MAX_ROWS:]:
            table.add_row(*row)
        parts = [table, self.progress]
        if self.sample:
            parts.append(self.sample)
        return Group(*parts)

    def on_RunStarted(self, e) -> None:  # noqa: N802
        super().on_RunStarted(e)
        # a --max-time run's bar is its budget: the steps it takes are planned as it goes
        self.budget = e.train_config.max_time
        self.task = self.progress.add_task(
            "train", total=self.budget or e.max_iters, completed=0 if self.budget
            else e.start_step, label=f"step {e.start_step}" + ("" if self.budget
                                                               else f"/{e.max_iters}"),
            rate="-", eta="-:--:--")
        self.total = e.max_iters

    def on_StepDone(self, e) -> None:  # noqa: N802
        self.marks = (self.marks + [(e.elapsed, e.step + 1)])[-self.ETA_WINDOW:]
        if self.budget:  # the budget, or --max-iters where that comes first
            by_steps = self.budget * (e.step + 1) / self.total
            left = min(self.budget - e.elapsed, _seconds_left(self.marks, self.total))
            self.progress.update(self.task, completed=min(max(e.elapsed, by_steps), self.budget),
                                 label=f"step {e.step + 1}", rate=_rate(e.tokens_per_sec),
                                 eta=_duration(max(0.0, left)))
            return
        self.progress.update(self.task, completed=e.step + 1, rate=_rate(e.tokens_per_sec),
                             label=f"step {e.step + 1}/{self.total}",
                             eta=eta(self.marks, self.total))

    def on_EvalDone(self, e) -> None:  # noqa: N802
        self.rows.append((str(e.step), _loss(e.train_loss), _loss(e.valid_loss),
                          "[green]★ best[/]" if e.best else "", f"{e.lr:.2e}",
                          _rate(e.tokens_per_sec) if e.tokens_per_sec else "-",
                          _duration(e.elapsed)))
        if not self.budget:
            self.progress.update(self.task, completed=e.step, label=f"step {e.step}/{self.total}")

    def on_Sample(self, e) -> None:  # noqa: N802
        self.sample = f"[dim]sample at step {e.step}:[/] {escape(_one_line(e.text))}"

    def on_RunDone(self, e) -> None:  # noqa: N802
        self.progress.update(self.task, label=f"step {e.steps}" + ("" if self.budget
                                                                     else f"/{self.total}"),
                             completed=min(e.seconds, self.budget) if self.budget else e.steps)
        self.live.refresh()
        self.live.__exit__(None, None, None)
        train_summary(e)

    def on_Notice(self, e) -> None:  # noqa: N802
        label = "[yellow]warning:[/] " if e.warning else ""
        self.live.console.print(f"{label}{escape(e.message)}", soft_wrap=True)


def eta(marks: list[tuple[float, int]], total: int) -> str:
    """Time left at the recent pace: steps per wall-clock second between the oldest and newest
    of `marks` ((elapsed, steps done) pairs), evaluations and saves included."""
    seconds = _seconds_left(marks, total)
    if seconds == math.inf:
        return "-:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _seconds_left(marks: list[tuple[float, int]], total: int) -> float:
    """`eta`'s seconds; infinite before there is a pace to go by."""
    if len(marks) < 2 or marks[-1][0] <= marks[0][0] or marks[-1][1] <= marks[0][1]:
        return math.inf
    rate = (marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
    return max(0, total - marks[-1][1]) / rate


def train_summary(e) -> None:
    title = {"finished": "Training finished", "max_time": "Stopped at --max-time",
             "interrupted": "Training interrupted"}[e.reason]
    rows: dict[str, object] = {
        "steps": e.steps,
        "final losses": f"train {_loss(e.final_train_loss)}, valid {_loss(e.final_valid_loss)}"
                        + (f" at step {e.final_step}" if getattr(e, "final_step", None) is not None
                           else ""),
        "best valid loss": (f"{_loss(e.best_valid_loss)} at step {e.best_step}"
                            if e.best_valid_loss is not None else "-"),
        "time": _duration(e.seconds) + f" ({e.seconds:.1f} s)",
        "throughput": f"{_rate(e.tokens_per_sec)} tokens/s",
    }
    if e.mfu is not None:
        rows["MFU (estimate)"] = f"{e.mfu * 100:.1f}%"
    rows.update(report_rows(getattr(e, "report", None)))
    rows["checkpoint"] = str(e.checkpoint)
    key_value_table(title, rows)
    if e.reason != "interrupted":
        err.print(f"Generate from it: [bold]tinygpt generate --checkpoint {e.checkpoint}[/]",
                  soft_wrap=True)


def train_json(e) -> dict:
    """`tinygpt train --json`: the summary and the report card of a RunDone."""
    return {"reason": e.reason, "steps": e.steps, "checkpoint": str(e.checkpoint),
            "final_train_loss": e.final_train_loss, "final_valid_loss": e.final_valid_loss,
            "final_step": e.final_step, "best_valid_loss": e.best_valid_loss,
            "best_step": e.best_step, "seconds": round(e.seconds, 3),
            "tokens_per_sec": round(e.tokens_per_sec, 1), "mfu": e.mfu, "report": e.report}


def report_rows(card: dict | None) -> dict[str, str]:
    """The report card's rows (`Trainer.report_card`)."""
    if not card:
        return {}
    rows = {"model": f"{card['parameters'] / 1e6:,.2f}M parameters",
            "tokens seen": f"{_count(card['tokens_seen'])} ({card['tokens_per_parameter']:,.2f} "
                           f"per parameter, {card['epochs']:,.2f} epochs of the training split)"}
    if card["peak_memory_bytes"] is not None:
        rows["peak memory"] = (f"{card['peak_memory_bytes'] / 2**20:,.0f} MiB "
                               f"({card['peak_memory_measure']})")
    if card["valid_loss"] is not None:
        how = ("every validation token" if card["valid_measure"] == "full"
               else f"estimate at step {card['valid_step']}")
        rows["validation"] = (f"loss {card['valid_loss']:.3f}, "
                              f"{card['valid_bits_per_byte']:.3f} bits/byte ({how})")
    return rows


def _count(n: int) -> str:
    return f"{n / 1e6:,.2f}M" if n >= 1e6 else f"{n / 1e3:,.1f}k" if n >= 1e3 else str(n)


# --- eval and generate ---------------------------------------------------------------------------

def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def eval_table(r: dict) -> None:
    """`tinygpt eval`'s results: one row per split, with what was scored and how in the title."""
    if r["mode"] == "full":
        how = f"full: every token once, windows of {r['context_length']}"
    else:
        seeds = f"seed {r['seed']}" + (f", valid {r['valid_seed']}" if "valid_seed" in r else "")
        how = (f"estimate: {r['eval_iters']} random batches of {r['batch_size']} x "
               f"{r['context_length']} tokens, {seeds}")
    step = f" at step {r['step']}" if r.get("step") is not None else ""
    # the title on a line of its own: a table title would wrap to the width of the table
    err.print(f"[bold]{escape(r['checkpoint'])}[/]{step} ({how})", soft_wrap=True)
    table = Table()
    table.add_column("split")
    for name in ("loss", "perplexity", "bits/byte", "tokens scored"):
        table.add_column(name, justify="right")
    for name, s in r["splits"].items():
        table.add_row(name, _num(s["loss"]), _num(s["perplexity"], 2),
                      _num(s["bits_per_byte"]), f"{s['tokens']:,}")
    err.print(table)
    t = r.get("training_estimate")
    if t:
        updates = t["updates_since"]
        said = {"same": "the same estimate, on the same weights",
                "updated": f"the same batches, on weights {updates} update"
                           f"{'s' if updates != 1 else ''} earlier",
                "other settings": "its own batches and settings"}[t["relation"]]
        err.print(f"training reported at step {t['step']}: train {_num(t['train_loss'])}, valid "
                  f"{_num(t['valid_loss'])} ({said})", soft_wrap=True)
    err.print(f"[dim]data {escape(r['source'])}, vocabulary {escape(r['vocabulary'])}, "
              f"{escape(r['device'])}, {r['seconds']:.1f} s[/]", soft_wrap=True)


def stream(text: str) -> None:
    """Generated text, on stdout as it comes."""
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()


def sample_rule(index: int, total: int) -> None:
    """A dim rule on stderr before a sample (on a terminal, between samples)."""
    err.rule(f"[dim]sample {index + 1}/{total}[/]", style="dim")


def generate_summary(tokens: int, seconds: float, samples: int, cache: bool) -> None:
    rate = tokens / seconds if seconds > 0 else 0.0
    per = f" in {samples} samples" if samples > 1 else ""
    err.print(f"[dim]{tokens:,} tokens{per} in {seconds:.2f} s: {_rate(rate)} tokens/s "
              f"(KV cache {'on' if cache else 'off'})[/]", soft_wrap=True)


# --- plots and checkpoint info -----------------------------------------------------------------

CHART_LOG_WIDTH = 100  # a chart drawn off a terminal, where the console is as wide as its lines
CHART_COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red")


def hint(message: str) -> None:
    err.print(f"[dim]hint:[/] {escape(message)}", soft_wrap=True)


def loss_chart(runs, console: Console | None = None) -> None:
    """The loss chart drawn with characters, as wide as the terminal (40 columns is enough)."""
    from rich.text import Text

    from .plotting import text_chart

    console = console or err
    unicode = console.encoding.lower().startswith("utf")
    # a log is as wide as its lines; a chart in one is drawn at a terminal's usual width
    width = console.width if console.is_terminal else min(console.width, CHART_LOG_WIDTH)
    chart = text_chart(runs, width=width, height=max(8, min(14, console.height - 10)),
                       unicode=unicode)
    styles = {}
    for glyph, (index, role) in chart.glyphs.items():
        color = CHART_COLORS[index % len(CHART_COLORS)]
        styles[glyph] = {"valid": f"bold {color}", "train": color, "best": "bold yellow"}[role]
    for line in chart.lines:
        text = Text(no_wrap=True, overflow="crop")
        for char in line:
            text.append(char, styles.get(char))
        console.print(text)


def run_summaries(runs) -> None:
    """One line per plotted run: steps and the best and last validation loss."""
    for run in runs:
        best = run.best
        last = next((v for _, _, v in reversed(run.metrics.evals)), None)
        parts = [f"{len(run.metrics.evals)} evaluations up to step {run.last_step}"]
        if best is not None:
            parts.append(f"best valid {_loss(best[1])} at step {best[0]}")
        if last is not None:
            parts.append(f"last valid {_loss(last)}")
        info(f"{run.name}: " + ", ".join(parts))


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


def checkpoint_summary(d: dict) -> None:
    """`tinygpt info`: the checkpoint as a two-column table on stderr."""
    m, p, tok = d["model_config"], d["parameters"], d["tokenizer"]
    rows: dict[str, object] = {
        "checkpoint": d["path"],
        "file size": _bytes(d["file_bytes"]),
        "written by": f"tinygpt {d['tinygpt_version']} (format {d['format_version']})",
        "model": f"{m.get('num_blocks')} blocks, d_model {m.get('d_model')}, "
                 f"{m.get('num_heads')} heads, context {m.get('context_length')}, "
                 f"dropout {m.get('dropout')}",
        "parameters": f"{p['total']:,} ({p['embedding']:,} token embedding + "
                      f"{p['other']:,} other)",
        "tokenizer": f"{tok['encoding']}, {tok['mode']} vocabulary of {tok['vocab_size']:,} "
                     "tokens",
    }
    if d["steps"] is not None:
        tokens = f", {d['tokens_seen']:,} tokens ({d['tokens_per_step']:,} per step)" \
            if d["tokens_seen"] is not None else ""
        rows["steps"] = f"{d['steps']:,}{tokens}"
    if d["best_valid_loss"] is not None:
        rows["best valid loss"] = f"{_loss(d['best_valid_loss'])} at step {d['best_step']}"
    if d["last_valid_loss"] is not None:
        rows["last losses"] = (f"train {_loss(d['last_train_loss'])}, "
                               f"valid {_loss(d['last_valid_loss'])}")
    t = d["train_config"]
    if t:
        procs = f" x {d['world_size']} processes" if d["world_size"] > 1 else ""
        rows["training"] = (f"batch {t.get('batch_size')} x grad_accum {t.get('grad_accum')}"
                            f"{procs}, lr {t.get('learning_rate')} ({t.get('lr_schedule')}), "
                            f"seed {t.get('seed')}")
        if t.get("fast") is not None:  # recorded since the speed path has a switch
            rows["training"] += ", speed path " + ("on" if t["fast"] else "off (--no-fast)")
    data = d["data"]
    if data:
        paths = data.get("paths")
        rows["data"] = ", ".join(map(str, paths)) if isinstance(paths, list) and paths \
            else data["path"]
        if isinstance(data.get("files"), int) and isinstance(data.get("documents"), int) \
                and data["documents"] > 1:
            rows["data"] += f" ({data['files']:,} files, {data['documents']:,} documents)"
        rows["data sha256"] = data["sha256"]
        if data.get("train_tokens") is not None:
            rows["data tokens"] = f"{data['train_tokens']:,} train, {data['valid_tokens']:,} valid"
    start = d.get("init_from")
    if start:
        rows["started from"] = f"{start.get('path')} (step {start.get('step')}, trained on " \
                               f"{start.get('data')})"
    rows["can resume"] = ("yes (optimizer and RNG state saved)"
                          if d["has_optimizer_state"] and d["has_rng_state"] else
                          f"optimizer state {'saved' if d['has_optimizer_state'] else 'missing'}, "
                          f"RNG state {'saved' if d['has_rng_state'] else 'missing'}")
    if not d["finite_weights"]:
        rows["weights"] = "NOT finite (NaN or inf): training diverged"
    for kind, label in (("best", "best checkpoint"), ("metrics", "metrics"), ("plot", "plot")):
        if d["related_files"].get(kind):
            rows[label] = d["related_files"][kind]
    key_value_table("Checkpoint", rows)
