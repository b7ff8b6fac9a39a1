"""`tinygpt export`: a trained model in a form other tools load."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Checkpoint, Json, funnel, importing_torch


@funnel
def export_command(
    checkpoint: Checkpoint = Path("model/model.ckpt"),
    format: Annotated[str, typer.Option(
        "--format", "-f", help="safetensors: a folder of model.safetensors (weights and "
        "vocabulary, no pickle) and config.json, which tinygpt generate, eval and info take in "
        "place of a checkpoint. Needs the safetensors extra.")] = "safetensors",
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="The folder to write (written whole, then renamed into place).",
        show_default=False)] = ...,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an earlier export at --out (a folder holding anything else is "
        "always refused).")] = False,
    json_out: Json = False,
) -> None:
    """Export a checkpoint to a folder of safetensors and JSON, loadable without pickle.

    Hugging Face transformers and ONNX formats are not done yet.

    Refused with one line: a file that is not a tinygpt checkpoint, non-finite weights, an --out
    that exists and is not empty (unless --force).
    """
    from ..export import require

    require(format)  # a missing extra is said before anything is read
    with importing_torch():
        from .. import ui
        from ..export import export

    result = export(checkpoint, out, format, force=force)
    if json_out:
        ui.print_json(result)
    else:
        ui.info(f"Exported {result['checkpoint']} ({result['parameters']:,} parameters) to "
                f"{result['out']}: {', '.join(result['files'])}")
        ui.info(f"Generate from it: tinygpt generate --checkpoint {result['out']}")
