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
        "--format", "-f", help="hf: a Hugging Face transformers model (CTRL) with its "
        "tokenizer, generation settings and a model card; AutoModelForCausalLM and "
        "AutoTokenizer load it, no custom code (extra: hf). safetensors: model.safetensors "
        "(weights and vocabulary, no pickle) and config.json, which tinygpt generate, eval and "
        "info take in place of a checkpoint (extra: safetensors). onnx: model.onnx (opset 20; "
        "input_ids of any batch and length up to the context, to logits) with tokenizer.json "
        "(extra: onnx).")] = "safetensors",
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="The folder to write (written whole, then renamed into place).",
        show_default=False)] = ...,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace an earlier export at --out (a folder holding anything else is "
        "always refused).")] = False,
    json_out: Json = False,
) -> None:
    """Export a checkpoint to a folder other tools load: transformers, safetensors or ONNX.

    Each export is loaded back before it is kept and its logits compared with the
    checkpoint's (the largest difference is printed). Refused with one line: a file that is
    not a tinygpt checkpoint, non-finite weights, an --out that exists and is not empty
    (unless --force), a missing extra (the line names the pip install that brings it).
    """
    from ..export import require

    require(format)  # a missing extra is said before anything is read
    with importing_torch():
        from .. import ui
        from ..export import export

    with ui.status(f"Exporting {checkpoint} ({format}) and checking it", enabled=not json_out):
        result = export(checkpoint, out, format, force=force)
    if json_out:
        ui.print_json(result)
        return
    ui.info(f"Exported {result['checkpoint']} ({result['parameters']:,} parameters) to "
            f"{result['out']}: {', '.join(result['files'])}")
    if "max_logit_difference" in result:
        ui.info(f"Checked: loaded back, its logits are within "
                f"{result['max_logit_difference']:.1e} of the checkpoint's")
        if result["max_logit_difference"] > 1e-4:
            ui.warn("that is more than 1e-4: large logits magnify the one difference CTRL "
                    "cannot match (LayerNorm eps 1e-6 in its blocks, tinygpt's 1e-5)")
    if result.get("extra_tokens"):
        ui.info(f"The tokenizer also holds {result['extra_tokens']:,} tokens the model never "
                "learned, which only text unlike the training corpus can end on (they are never "
                "sampled)")
    where = result["out"]
    ui.info({"hf": f"Load it: AutoModelForCausalLM.from_pretrained({where!r}) and "
                   f"AutoTokenizer.from_pretrained({where!r})",
             "safetensors": f"Generate from it: tinygpt generate --checkpoint {where}",
             "onnx": f"Run it: onnxruntime.InferenceSession('{where}/model.onnx'), "
                     f"tokenizers.Tokenizer.from_file('{where}/tokenizer.json')"}[format])
