"""Everything Rich: progress bars, tables, messages. Never imports torch.

stdout carries data (generated text, --json results); everything else goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
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

err = Console(stderr=True, highlight=False)
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


def tokenize_summary(s: dict) -> None:
    title = "Token cache (hit: nothing to do)" if s["cache_hit"] else "Tokenized"
    key_value_table(title, {
        "source": s["source"],
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


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class TrainReporter:
    """Plain output for logs, pipes and CI: the book's lines on stdout, the rest on stderr."""

    def __init__(self) -> None:
        self.started = None

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
        info(f"Training {p['total'] / 1e6:.2f}M parameters ({p['embedding'] / 1e6:.2f}M "
             f"embedding + {p['other'] / 1e6:.2f}M other) on {where}: {e.max_iters} steps of "
             f"{e.tokens_per_step:,} tokens{resumed}")

    def on_EvalDone(self, e) -> None:  # noqa: N802
        # the book's line, to stdout, exactly as the chapter prints it
        print(f"Step: {e.step}, Training Loss: {e.train_loss:.3f}, "
              f"Validation Loss: {e.valid_loss:.3f}", flush=True)

    def on_Notice(self, e) -> None:  # noqa: N802
        warn(e.message)

    def on_Sample(self, e) -> None:  # noqa: N802
        info(f"sample at step {e.step}: {e.text}")

    def on_RunDone(self, e) -> None:  # noqa: N802
        train_summary(e)


class LiveTrainDisplay(TrainReporter):
    """On a terminal: a table that gains a row per evaluation, above a progress bar with ETA."""

    MAX_ROWS = 30

    def __init__(self) -> None:
        super().__init__()
        from rich.live import Live

        self.rows: list[tuple[str, ...]] = []
        self.sample: str | None = None
        self.progress = Progress(
            TextColumn("[bold]step {task.completed}/{task.total}"), BarColumn(),
            TaskProgressColumn(), TextColumn("{task.fields[rate]} tok/s"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=err)
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
        self.task = self.progress.add_task("train", total=e.max_iters, completed=e.start_step,
                                           rate="-")

    def on_StepDone(self, e) -> None:  # noqa: N802
        self.progress.update(self.task, completed=e.step + 1, rate=_rate(e.tokens_per_sec))

    def on_EvalDone(self, e) -> None:  # noqa: N802
        self.rows.append((str(e.step), _loss(e.train_loss), _loss(e.valid_loss),
                          "[green]★ best[/]" if e.best else "", f"{e.lr:.2e}",
                          _rate(e.tokens_per_sec) if e.tokens_per_sec else "-",
                          _duration(e.elapsed)))
        self.progress.update(self.task, completed=e.step)

    def on_Sample(self, e) -> None:  # noqa: N802
        self.sample = f"[dim]sample at step {e.step}:[/] {escape(e.text)}"

    def on_RunDone(self, e) -> None:  # noqa: N802
        self.progress.update(self.task, completed=e.steps)
        self.live.refresh()
        self.live.__exit__(None, None, None)
        train_summary(e)

    def on_Notice(self, e) -> None:  # noqa: N802
        self.live.console.print(f"[yellow]warning:[/] {escape(e.message)}", soft_wrap=True)


def train_summary(e) -> None:
    title = {"finished": "Training finished", "max_time": "Stopped at --max-time",
             "interrupted": "Training interrupted"}[e.reason]
    rows: dict[str, object] = {
        "steps": e.steps,
        "final losses": f"train {_loss(e.final_train_loss)}, valid {_loss(e.final_valid_loss)}",
        "best valid loss": (f"{_loss(e.best_valid_loss)} at step {e.best_step}"
                            if e.best_valid_loss is not None else "-"),
        "time": _duration(e.seconds) + f" ({e.seconds:.1f} s)",
        "throughput": f"{_rate(e.tokens_per_sec)} tokens/s",
    }
    if e.mfu is not None:
        rows["MFU (estimate)"] = f"{e.mfu * 100:.1f}%"
    rows["checkpoint"] = str(e.checkpoint)
    key_value_table(title, rows)
    if e.reason != "interrupted":
        err.print(f"Generate from it: [bold]tinygpt generate --checkpoint {e.checkpoint}[/]",
                  soft_wrap=True)
