"""`tinygpt plot` and tinygpt_cli.plotting: the PNG holds the run's points, the terminal chart fits
a narrow terminal and works without matplotlib, and every bad RUN is one error line."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import helpers
import pytest
from rich.cells import cell_len
from rich.console import Console
from typer.testing import CliRunner

from tinygpt_cli import plotting, ui
from tinygpt_cli.cli import app
from tinygpt_cli.plotting import (
    Metrics,
    Run,
    RunError,
    figure,
    load_run,
    load_runs,
    read_metrics,
    series,
    text_chart,
    write_png,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# matplotlib is the optional `plot` extra: without it only the terminal chart is tested
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="needs matplotlib (pip install 'tinygpt[plot]')")
MAX_ITERS = 6  # evaluations at steps 0, 2, 4 and the last step, 5; a train record every step


def train_tiny(out: Path, corpus: Path, cache: Path, batch_size: int = 2) -> list:
    """The plot tests' run: 6 steps, an evaluation every 2 and a train record every step."""
    return helpers.train_tiny(out, corpus, cache, batch_size=batch_size, max_iters=MAX_ITERS,
                              eval_interval=2, eval_iters=1, log_interval=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, corpus_text: str):
    """(checkpoint, events) of one tiny run, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("plot-run")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    events = train_tiny(root / "run" / "model.ckpt", corpus, root / "cache")
    return root / "run" / "model.ckpt", events


def invoke(*args: str | Path):
    return CliRunner().invoke(app, ["plot", *map(str, args)])


def assert_user_error(result, exit_code: int, *fragments: str) -> str:
    """One "error:" line on stderr, the exit code, no traceback."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    for fragment in fragments:
        assert fragment in line
    return line


def write_metrics(path: Path, records: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


def evals(*points: tuple[int, float, float]) -> list[dict]:
    return [{"type": "eval", "step": s, "train_loss": t, "valid_loss": v, "best": False,
             "lr": 1e-3, "tokens_per_sec": 0.0, "mfu": None, "elapsed": 1.0}
            for s, t, v in points]


def token_axes(fig) -> list[str]:
    """The x labels of the token axes: secondary axes are children of an Axes, not fig.axes."""
    every = [a for ax in fig.axes for a in (ax, *ax.child_axes)]
    return [a.get_xlabel() for a in every if a.get_xlabel().startswith("tokens")]


# --- reading -----------------------------------------------------------------------------------

def test_series_are_the_events_the_run_emitted(tiny):
    from tinygpt_cli.events import EvalDone, StepDone

    ckpt, events = tiny
    run = load_run(ckpt)
    s = series(run)
    eval_events = [e for e in events if isinstance(e, EvalDone)]
    step_events = [e for e in events if isinstance(e, StepDone)]
    assert [p[0] for p in s["valid"]] == [0, 2, 4, 5] == [e.step for e in eval_events]
    assert s["valid"] == [(e.step, pytest.approx(e.valid_loss, abs=1e-6)) for e in eval_events]
    assert s["train"] == [(e.step, pytest.approx(e.train_loss, abs=1e-6)) for e in eval_events]
    assert len(s["train_running"]) == len(step_events) == MAX_ITERS
    assert run.tokens_per_step == 2 * 16  # batch x context (grad_accum 1, one process)
    best = min(eval_events, key=lambda e: e.valid_loss)
    assert run.best == (best.step, pytest.approx(best.valid_loss, abs=1e-6))
    assert run.name == "model" and not run.warnings and not run.notes


def test_a_line_cut_off_mid_record_is_skipped_and_reported(tmp_path: Path):
    full = evals((0, 5.0, 5.1), (10, 4.0, 4.2))
    path = write_metrics(tmp_path / "m.metrics.jsonl", full, tail='{"type": "eval", "step": 2')
    metrics = read_metrics(path)
    assert metrics.skipped == 1 and [e[0] for e in metrics.evals] == [0, 10]
    run = load_run(path)
    assert run.warnings == [f"skipped 1 unreadable line(s) in {path}"]
    assert any("token axis is left out" in n for n in run.notes)  # no checkpoint beside it
    result = invoke(path, "--terminal")
    assert result.exit_code == 0, result.output
    assert f"skipped 1 unreadable line(s) in {path}" in result.stderr.replace("\n", "")


def test_malformed_records_are_skipped_and_unknown_types_ignored(tmp_path: Path):
    lines = [json.dumps(r) for r in evals((0, 5.0, 5.1))] + [
        '{"type": "eval", "step": "2", "train_loss": 1, "valid_loss": 1}',  # step not an int
        '{"type": "train", "step": 3}',  # no loss
        "[1, 2]", "not json", "\xff\xfe",
        '{"type": "sample", "step": 4, "text": "from a newer tinygpt"}',  # unknown: ignored
        '{"type": "eval", "step": 5, "train_loss": NaN, "valid_loss": NaN}',  # diverged: kept
        "",
    ]
    path = tmp_path / "m.metrics.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    metrics = read_metrics(path)
    assert metrics.skipped == 5
    assert [e[0] for e in metrics.evals] == [0, 5]
    run = load_run(path)
    assert run.best == (0, 5.1)  # the NaN is never the best


def test_a_resumed_run_that_went_back_keeps_the_later_records(tmp_path: Path):
    # trained to step 40, then resumed from the best checkpoint at step 20 and trained on
    records = evals((0, 6, 6), (20, 5, 5), (40, 4.5, 4.9), (20, 5, 5), (40, 4.4, 4.6))
    run = load_run(write_metrics(tmp_path / "m.metrics.jsonl", records))
    assert [(s, v) for s, _, v in run.metrics.evals] == [(0, 6), (20, 5), (40, 4.6)]
    assert run.metrics.restarts == [20]
    assert any("went back to step 20" in n for n in run.notes)


# --- the PNG -----------------------------------------------------------------------------------

@needs_matplotlib
def test_write_png_is_a_valid_image_with_the_runs_points(tiny, tmp_path: Path):
    from matplotlib.image import imread

    ckpt, _ = tiny
    output = write_png([ckpt], tmp_path / "plots" / "loss.png")
    assert output == tmp_path / "plots" / "loss.png"
    assert output.read_bytes()[:8] == PNG_SIGNATURE
    height, width, channels = imread(output).shape
    assert (width, height) == (9 * 120, int(5.6 * 120)) and channels in (3, 4)
    assert not list(output.parent.glob(".*.tmp"))  # written atomically, nothing left behind

    fig = figure(load_runs([ckpt]))
    drawn = {line.get_gid(): len(line.get_xdata()) for line in fig.axes[0].lines}
    assert drawn == {"model:valid": 4, "model:train": 4, "model:train_running": MAX_ITERS,
                     "model:best": 1}
    (best,) = [line for line in fig.axes[0].lines if line.get_gid() == "model:best"]
    run = load_run(ckpt)
    assert (best.get_xdata()[0], best.get_ydata()[0]) == run.best
    assert token_axes(fig) == ["tokens (32 per step)"]  # the secondary axis on top


@needs_matplotlib
def test_overlaid_runs_are_labelled_and_differing_token_rates_get_a_panel(tmp_path: Path):
    def run(folder: str, per_step: int | None) -> Run:
        metrics = Metrics(evals=[(0, 6.0, 6.1), (10, 5.0, 5.2), (20, 4.5, 4.8)], train=[])
        return Run("model", tmp_path / folder / "model.metrics.jsonl", metrics,
                   tmp_path / folder / "model.ckpt", per_step)

    runs = plotting._distinct_names([run("a", 256), run("b", 1024)])
    assert [r.name for r in runs] == ["a/model", "b/model"]
    fig = figure(runs)
    assert len(fig.axes) == 2  # loss by step, and valid loss by tokens
    labels = {line.get_label() for line in fig.axes[0].lines}
    assert {"a/model valid", "a/model train", "b/model valid", "b/model train"} <= labels
    by_tokens = {line.get_gid(): list(line.get_xdata()) for line in fig.axes[1].lines}
    assert by_tokens == {"a/model:valid_by_tokens": [0, 2560, 5120],
                         "b/model:valid_by_tokens": [0, 10240, 20480]}
    assert write_png(runs, tmp_path / "both.svg").read_text().startswith("<?xml")

    same = figure(plotting._distinct_names([run("a", 256), run("b", 256)]))
    assert len(same.axes) == 1 and token_axes(same) == ["tokens (256 per step)"]
    assert token_axes(figure([run("a", 256), run("b", None)])) == []  # unknown: left out


@needs_matplotlib
def test_plot_command_writes_the_png_beside_the_checkpoint(tiny):
    ckpt, _ = tiny
    result = invoke(ckpt)
    assert result.exit_code == 0, result.output
    png = ckpt.with_name("model.png")
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert f"wrote {png}" in result.stderr.replace("\n", "")
    assert "best valid" in result.stderr
    assert result.stdout == ""


@needs_matplotlib
def test_a_metrics_file_names_the_run_too(tiny, tmp_path: Path):
    ckpt, _ = tiny
    metrics = ckpt.with_name("model.metrics.jsonl")
    run = load_run(metrics)
    assert run.checkpoint == ckpt and run.tokens_per_step == 32  # found beside it
    result = invoke(metrics, "-o", tmp_path / "m.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.png").read_bytes()[:8] == PNG_SIGNATURE


# --- the terminal chart ------------------------------------------------------------------------

def test_terminal_chart_fits_a_40_column_terminal(tiny):
    ckpt, _ = tiny
    buffer = io.StringIO()
    console = Console(file=buffer, width=40, height=24, color_system=None)
    ui.loss_chart(load_runs([ckpt]), console=console)
    lines = buffer.getvalue().splitlines()
    assert len(lines) > 10
    assert max(cell_len(line) for line in lines) <= 40
    text = buffer.getvalue()
    assert "●" in text and "○" in text and "★ best" in text and "step" in text


def test_terminal_chart_in_plain_ascii_and_for_several_runs(tiny, tmp_path: Path):
    ckpt, _ = tiny
    other = write_metrics(tmp_path / "other.metrics.jsonl",
                          evals((0, 9.0, 9.0), (3, 8.0, 8.5), (5, 7.0, 7.5)))
    for width in (40, 60, 120):
        chart = text_chart(load_runs([ckpt, other]), width=width, height=10, unicode=False)
        assert max(len(line) for line in chart.lines) <= width
        assert all(line.isascii() for line in chart.lines)
        assert chart.glyphs["o"] == (0, "valid") and chart.glyphs["x"] == (1, "valid")
        assert "x other valid" in "\n".join(chart.lines)


def test_without_matplotlib_the_chart_is_drawn_with_a_hint(tiny, monkeypatch, tmp_path: Path):
    ckpt, _ = tiny
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    output = tmp_path / "no.png"
    with pytest.raises(plotting.MatplotlibMissing):
        plotting.require_matplotlib()
    with pytest.raises(plotting.MatplotlibMissing):
        write_png([ckpt], output)

    result = invoke(ckpt, "-o", output)  # a file asked for by name: an error, after the chart
    assert_user_error(result, 2, "matplotlib")
    assert "★" in result.stderr and not output.exists()

    ckpt.with_name("model.png").unlink(missing_ok=True)
    result = invoke(ckpt)  # the default: the chart and how to get the PNG
    assert result.exit_code == 0, result.output
    assert "pip install 'tinygpt[plot]'" in result.stderr
    assert "valid" in result.stderr and "★" in result.stderr
    assert not ckpt.with_name("model.png").exists()


# --- bad input ---------------------------------------------------------------------------------

def test_a_missing_run_is_one_error_line(tmp_path: Path, monkeypatch):
    assert_user_error(invoke(tmp_path / "nope.ckpt"), 1, "no such checkpoint or metrics file")
    monkeypatch.chdir(tmp_path)  # the default, model/model.ckpt, is not there either
    assert_user_error(invoke(), 1, "model/model.ckpt", "no such")


def test_an_empty_metrics_file_is_one_error_line(tmp_path: Path):
    path = tmp_path / "model.metrics.jsonl"
    path.write_bytes(b"")
    assert_user_error(invoke(path), 1, "no loss records", "empty")
    path.write_text("garbage\n{\"type\": \"eval\"\n", encoding="utf-8")
    assert_user_error(invoke(path), 1, "no loss records", "2 unreadable line(s)")


def test_a_file_that_is_neither_is_one_error_line(tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n", encoding="utf-8")
    assert_user_error(invoke(notes), 1, "neither a tinygpt checkpoint nor a metrics file")
    assert_user_error(invoke(tmp_path), 1, "is a directory")
    with pytest.raises(RunError):
        load_run(notes)


def test_a_truncated_checkpoint_or_one_without_metrics(tiny, tmp_path: Path):
    ckpt, _ = tiny
    cut = tmp_path / "model.ckpt"
    cut.write_bytes(ckpt.read_bytes()[:5000])
    (tmp_path / "model.metrics.jsonl").write_bytes(
        ckpt.with_name("model.metrics.jsonl").read_bytes())
    assert_user_error(invoke(cut), 1, "truncated or not a checkpoint")
    result = invoke(tmp_path / "model.metrics.jsonl", "--terminal")  # the metrics still plot
    assert result.exit_code == 0, result.output
    assert "token axis is left out" in result.stderr and "★" in result.stderr

    alone = tmp_path / "alone" / "model.ckpt"
    alone.parent.mkdir()
    alone.write_bytes(ckpt.read_bytes())
    assert_user_error(invoke(alone), 1, "no metrics file beside it")


@needs_matplotlib
def test_an_unwritable_format_is_a_usage_error(tiny, tmp_path: Path):
    ckpt, _ = tiny
    assert_user_error(invoke(ckpt, "-o", tmp_path / "loss.xyz"), 2, "cannot write .xyz")
