"""`tinygpt plot`: a run's loss curves as a PNG, or drawn in the terminal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import funnel

DEFAULT_RUN = Path("model/model.ckpt")


@funnel
def plot(
    runs: Annotated[list[Path] | None, typer.Argument(
        help="Runs to plot, each a checkpoint or its NAME.metrics.jsonl; several are overlaid. "
        f"Default: {DEFAULT_RUN}.", show_default=False, metavar="RUN")] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Where to write the image (.png; .svg and .pdf work too). "
        "Default: beside the (first) checkpoint, NAME.png.", show_default=False)] = None,
    terminal: Annotated[bool, typer.Option(
        "--terminal", help="Draw the chart in the terminal (no matplotlib needed); with "
        "--output, write the image as well.")] = False,
) -> None:
    """Plot training and validation loss by step (and tokens), the best step starred.

    The image needs matplotlib (the `plot` extra); without it the chart is drawn in the
    terminal, with the command that installs it.
    """
    from .. import ui
    from ..plotting import PLOT_EXTRA, MatplotlibMissing, default_output, load_runs, write_png

    loaded = load_runs(runs or [DEFAULT_RUN])
    for run in loaded:
        for message in run.warnings:
            ui.warn(message)
        for message in run.notes:
            ui.info(message)
    if terminal:
        ui.loss_chart(loaded)
        if output is not None:
            ui.info(f"wrote {write_png(loaded, output)}")
        return
    path = output or default_output(loaded)
    try:
        path = write_png(loaded, path)
    except MatplotlibMissing:
        ui.loss_chart(loaded)
        if output is not None:  # a file was asked for by name: its absence is an error
            raise
        ui.warn(f"matplotlib is not installed, so the chart is drawn here instead of {path}")
        ui.hint(f"for the image: {PLOT_EXTRA}")
        return
    ui.run_summaries(loaded)
    ui.info(f"wrote {path}")
