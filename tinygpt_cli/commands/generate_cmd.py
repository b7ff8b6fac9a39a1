"""`tinygpt generate`: continue a prompt with a trained checkpoint, streaming text as it comes."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..generation import DEFAULT_PROMPT
from .common import Checkpoint, Fast, Threads, funnel, importing_torch

if TYPE_CHECKING:
    import torch

    from ..config import SampleConfig
    from ..generation import Prompt, Sample


# --- the command ---------------------------------------------------------------------------------

@funnel
def generate_command(
    checkpoint: Checkpoint = Path("model/model.ckpt"),
    prompt: Annotated[str | None, typer.Option(
        "--prompt", "-p", help="Text to continue; '-' reads standard input; '' starts from a "
        "newline. Default: where the checkpoint's corpus starts its documents: the book's "
        f"{DEFAULT_PROMPT} for the bundled corpus, else the end-of-text token where the model "
        "learned one (documents joined by it), else a new line.", show_default=False)] = None,
    prompt_file: Annotated[Path | None, typer.Option(
        "--prompt-file", help="Read the prompt from this UTF-8 file.", show_default=False)
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(
        "--max-new-tokens", "-n", help="Tokens to generate per sample.")] = 200,
    temperature: Annotated[float, typer.Option(
        "--temperature", "-t", help="Sampling temperature; 0 is greedy (always the most likely "
        "token).")] = 0.8,
    top_k: Annotated[int | None, typer.Option(
        "--top-k", help="Sample only from the k most likely tokens.", show_default="off")
    ] = None,
    top_p: Annotated[float, typer.Option(
        "--top-p", help="Sample only from the most likely tokens whose probability adds up to "
        "p, in (0, 1]; 1 is off.")] = 1.0,
    num_samples: Annotated[int, typer.Option(
        "--num-samples", help="Continuations of the same prompt.")] = 1,
    seed: Annotated[int, typer.Option(
        "--seed", help="Random seed: the same seed gives the same text.")] = 1337,
    stop: Annotated[list[str] | None, typer.Option(
        "--stop", help="End a sample where its generated text contains this (cut before it); "
        "repeatable.", show_default=False)] = None,
    device: Annotated[str, typer.Option(
        "--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")] = "auto",
    threads: Threads = "auto",
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Recompute the whole window for every token instead of using the KV "
        "cache (slower; for comparison).")] = False,
    fast: Fast = None,
    allow_invalid_utf8: Annotated[bool, typer.Option(
        "--allow-invalid-utf8", help="Draw from every token, as the raw model would: the text "
        "may then hold pieces of characters, shown as U+FFFD. By default only tokens that keep "
        "the text valid UTF-8 are drawn (their probabilities renormalised).")] = False,
    ignore_eot: Annotated[bool, typer.Option(
        "--ignore-eot", help="Go on past the end-of-text token (shown as <|endoftext|>) instead "
        "of ending the sample there, where the model learned one (documents joined by it).")
    ] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print prompt, samples and settings as JSON on stdout instead of "
        "streaming the text.")] = False,
) -> None:
    """Continue a prompt with a trained checkpoint; the text streams to stdout as it is generated.

    Each sample is printed as the book's inference does: the prompt, then its continuation.
    Tokens generated and tokens/s go to stderr.
    """
    with importing_torch():
        import torch

        from .. import fast as speed_path
        from .. import ui
        from ..checkpoint import load_model
        from ..config import SampleConfig
        from ..errors import UsageError
        from ..generation import (
            TextChunk,
            default_prompt,
            encode_prompt,
            generate,
            read_prompt,
            stream_samples,
        )
        from ..runtime import Threads as ThreadCount
        from ..runtime import parse_threads, resolve_device

    stops = tuple(stop or ())
    if any(s == "" for s in stops):
        raise UsageError("--stop needs some text (an empty string would stop at once)")
    config = SampleConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                          top_p=top_p, num_samples=num_samples, seed=seed, stop=stops)
    text = read_prompt(prompt, prompt_file)
    count = parse_threads(threads)
    dev = resolve_device(device)
    use_fast = speed_path.decide(fast, dev, torch.float32) and not no_cache  # a cached decoder
    model, vocab, state = load_model(checkpoint, dev)
    tuner = ThreadCount.resolve(count, dev)
    if text is None:  # where the checkpoint's samples start: its corpus's kind of beginning
        encoded = default_prompt(state, vocab, model.config.context_length)
        text = encoded.text
    else:
        encoded = encode_prompt(vocab, text, model.config.context_length)
    if encoded.cropped:
        ui.warn(f"the prompt has {len(encoded.ids) + encoded.cropped} tokens, more than the "
                f"context length {model.config.context_length}: the model sees its last "
                f"{len(encoded.ids)}")
    use_cache = not no_cache

    if json_out:
        samples = generate(model, vocab, encoded, config, device=dev, use_cache=use_cache,
                           fast=use_fast, valid_utf8=not allow_invalid_utf8, tick=tuner.tick,
                           stop_at_eot=not ignore_eot)
        ui.print_json(_json(checkpoint, encoded, config, samples, dev, use_cache, use_fast,
                            not allow_invalid_utf8, tuner.count))
        return

    if encoded.start_token:
        ui.info("starting from the end-of-text token (the start of a document)"
                if encoded.ids == [vocab.eot] else
                "empty prompt: starting from a newline token (the start of a line)")
    rules = num_samples > 1 and sys.stdout.isatty() and sys.stderr.isatty()

    def begin(index: int) -> None:
        if rules:
            ui.sample_rule(index, num_samples)
        elif index:
            ui.stream("\n")  # a blank line between samples
        ui.stream(text)  # each sample is the prompt and its continuation, as the book prints it

    samples: list[Sample] = []
    try:
        begin(0)
        for event in stream_samples(model, vocab, encoded, config, device=dev,
                                    use_cache=use_cache, fast=use_fast,
                                    valid_utf8=not allow_invalid_utf8, tick=tuner.tick,
                                    stop_at_eot=not ignore_eot):
            if isinstance(event, TextChunk):
                ui.stream(event.text)
                continue
            samples.append(event)
            if not (text + event.text).endswith("\n"):
                ui.stream("\n")
            if event.index + 1 < num_samples:
                begin(event.index + 1)
    except BrokenPipeError:
        _stdout_gone()
        raise typer.Exit(141) from None  # what a shell reports for a reader that left (SIGPIPE)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: end the cut-off line before the error's
        with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
            ui.stream("\n")
        raise
    ui.generate_summary(sum(s.tokens for s in samples), sum(s.seconds for s in samples),
                        len(samples), use_cache)


def _stdout_gone() -> None:
    """The reader of stdout left (`tinygpt generate | head -3`): stop quietly. Point stdout at
    /dev/null so the interpreter's final flush does not raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test runner)
        pass


def _json(checkpoint: Path, prompt: Prompt, config: SampleConfig, samples: list[Sample],
          device: torch.device, use_cache: bool, fast: bool, valid_utf8: bool,
          threads: int | None) -> dict:
    tokens, seconds = sum(s.tokens for s in samples), sum(s.seconds for s in samples)
    return {
        "checkpoint": str(checkpoint),
        "prompt": prompt.text,
        "prompt_tokens": len(prompt.ids),
        "prompt_cropped": prompt.cropped,
        "start_token": prompt.start_token,
        # "finishing_tokens": drawn past --max-new-tokens to finish a character (never cut)
        "samples": [{"text": s.text, "tokens": s.tokens, "finish_reason": s.finish_reason,
                     "stop": s.stop, "finishing_tokens": s.finishing_tokens,
                     "seconds": round(s.seconds, 4)} for s in samples],
        "settings": {**asdict(config), "stop": list(config.stop), "device": str(device),
                     "kv_cache": use_cache, "fast": fast, "valid_utf8": valid_utf8,
                     "threads": threads},  # what --threads ran on at the end
        "tokens": tokens,
        "seconds": round(seconds, 4),
        "tokens_per_sec": round(tokens / seconds, 2) if seconds > 0 else None,
    }
