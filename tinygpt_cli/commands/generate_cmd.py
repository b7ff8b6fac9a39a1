"""`tinygpt generate`: continue a prompt with a trained checkpoint, streaming text as it comes.

The plain functions (`read_prompt`, `encode_prompt`, `stream_samples`, `generate`) use neither
Typer nor Rich: they are the core of the command, kept here until `sampling.py` can take them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from .common import Checkpoint, funnel

if TYPE_CHECKING:
    import torch

    from ..config import SampleConfig
    from ..model import GPT
    from ..tokenizer import Vocabulary

DEFAULT_PROMPT = "农夫山泉"  # the book's opening: a brand of bottled water, as in the corpus
START_TEXT = "\n"  # an empty prompt starts here: the corpus is one title per line


# --- the plain functions -------------------------------------------------------------------------

@dataclass(frozen=True)
class Prompt:
    text: str  # what the user gave (printed before each sample)
    ids: list[int]  # what the model sees: the last context_length tokens, or the start token
    cropped: int  # tokens dropped from the left to fit the context
    start_token: bool  # the prompt was empty: the model starts from START_TEXT


@dataclass(frozen=True)
class TextChunk:
    """Text of sample `sample`, complete characters only, ready to print."""

    sample: int
    text: str


@dataclass(frozen=True)
class Sample:
    index: int
    text: str  # the continuation, cut before a --stop string
    ids: list[int]  # every id generated (the last one may hold the stop string)
    finish_reason: str  # "length" (max_new_tokens reached) or "stop"
    stop: str | None  # the stop string that ended it
    seconds: float

    @property
    def tokens(self) -> int:
        return len(self.ids)


def read_prompt(prompt: str | None, prompt_file: Path | None, stdin: TextIO | None = None) -> str:
    """The prompt text: --prompt, --prompt - (standard input), --prompt-file, or the default.

    Text read from a file or standard input loses one trailing newline, as `$(cat file)` would
    (an editor's final newline would otherwise make the model start a new title).
    """
    from ..errors import DataError, UsageError

    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise UsageError(f"--prompt-file {prompt_file}: "
                             + ("is a directory" if prompt_file.is_dir() else "no such file"))
        raw = prompt_file.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"--prompt-file {prompt_file} is not UTF-8 text: byte "
                            f"0x{raw[exc.start]:02x} at offset {exc.start}") from None
    elif prompt == "-":
        text = (stdin or sys.stdin).read()
    else:
        return DEFAULT_PROMPT if prompt is None else prompt
    return text[:-1] if text.endswith("\n") else text


def encode_prompt(vocab: Vocabulary, text: str, context_length: int) -> Prompt:
    """Encode with byte fallback (any text fits any vocabulary), keeping the last context_length
    tokens; an empty prompt becomes the newline token, which every vocabulary has."""
    ids = vocab.encode(text)
    if not ids:
        return Prompt(text, vocab.encode(START_TEXT), 0, True)
    cropped = max(0, len(ids) - context_length)
    return Prompt(text, ids[cropped:], cropped, False)


class StopFilter:
    """Cuts a stream of text before the first stop string, releasing text as soon as it is safe.

    Text that could be the start of a stop string is held back until the next piece decides, so
    a stream never shows part of a stop string, and the pieces released add up to `text`.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.text = ""
        self.released = 0  # text[:released] has been handed out
        self.hit: str | None = None

    def feed(self, piece: str) -> str:
        """Add a piece; return the text now safe to show. After a hit, `hit` names the stop."""
        if self.hit is not None:
            return ""
        before = len(self.text)
        self.text += piece
        found = [(at, s) for s in self.stops
                 if (at := self.text.find(s, max(0, before - len(s) + 1))) >= 0]
        if found:
            at, self.hit = min(found)
            self.text = self.text[:at]
            return self._release(at)
        return self._release(len(self.text) - self._held())

    def finish(self) -> str:
        """The end of the stream: release what was held back."""
        return self._release(len(self.text))

    def _held(self) -> int:
        """Length of the longest tail of the unreleased text that begins some stop string."""
        for k in range(min(len(self.text) - self.released,
                           max((len(s) for s in self.stops), default=1) - 1), 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self.stops):
                return k
        return 0

    def _release(self, end: int) -> str:
        out, self.released = self.text[self.released:end], max(self.released, end)
        return out


def stream_samples(model: GPT, vocab: Vocabulary, prompt: Prompt, config: SampleConfig, *,
                   device: torch.device | str = "cpu", use_cache: bool = True
                   ) -> Iterator[TextChunk | Sample]:
    """Generate `config.num_samples` continuations, yielding text as it is decoded and a `Sample`
    at the end of each.

    Sample i draws from its own generator seeded with `config.seed + i`, so the same seed gives the
    same text, and sample 1 does not depend on how many samples follow. Text is decoded
    incrementally: a character split across byte-level tokens comes out once complete, so the
    chunks never hold a replacement character the final text would not, and add up to it.
    """
    import torch

    from ..sampling import generate_tokens

    for i in range(config.num_samples):
        generator = torch.Generator(device=device).manual_seed(config.seed + i)
        decoder, stops, ids = vocab.stream_decoder(), StopFilter(config.stop), []
        started = time.perf_counter()
        tokens = generate_tokens(model, prompt.ids, config.max_new_tokens,
                                 temperature=config.temperature, top_k=config.top_k,
                                 top_p=config.top_p, generator=generator, use_cache=use_cache)
        try:
            for token in tokens:
                ids.append(token)
                text = stops.feed(decoder.push(token))
                if text:
                    yield TextChunk(i, text)
                if stops.hit is not None:
                    break
        finally:
            tokens.close()  # restores the model's mode when a stop string ends the sample early
        if stops.hit is None:
            text = stops.feed(decoder.flush())
            text += stops.finish()
            if text:
                yield TextChunk(i, text)
        yield Sample(i, stops.text, ids, "length" if stops.hit is None else "stop", stops.hit,
                     time.perf_counter() - started)


def generate(model: GPT, vocab: Vocabulary, prompt: Prompt, config: SampleConfig, *,
             device: torch.device | str = "cpu", use_cache: bool = True) -> list[Sample]:
    """All samples at once (what --json prints)."""
    return [event for event in stream_samples(model, vocab, prompt, config, device=device,
                                              use_cache=use_cache) if isinstance(event, Sample)]


# --- the command ---------------------------------------------------------------------------------

@funnel
def generate_command(
    checkpoint: Checkpoint = Path("model/model.ckpt"),
    prompt: Annotated[str | None, typer.Option(
        "--prompt", "-p", help="Text to continue; '-' reads standard input; '' starts from a "
        "newline (a new title).", show_default=DEFAULT_PROMPT)] = None,
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
    threads: Annotated[int, typer.Option(
        "--threads", min=1, help="CPU threads for torch. One token at a time gains nothing from "
        "more on a small model, and on a busy machine extra threads spin (10x slower).")] = 1,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Recompute the whole window for every token instead of using the KV "
        "cache (slower; for comparison).")] = False,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print prompt, samples and settings as JSON on stdout instead of "
        "streaming the text.")] = False,
) -> None:
    """Continue a prompt with a trained checkpoint; the text streams to stdout as it is generated.

    Each sample is printed as the book's inference does: the prompt, then its continuation.
    Tokens generated and tokens/s go to stderr.
    """
    import torch

    from .. import ui
    from ..checkpoint import load_model
    from ..config import SampleConfig
    from ..errors import UsageError
    from ..train import resolve_device

    stops = tuple(stop or ())
    if any(s == "" for s in stops):
        raise UsageError("--stop needs some text (an empty string would stop at once)")
    config = SampleConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                          top_p=top_p, num_samples=num_samples, seed=seed, stop=stops)
    text = read_prompt(prompt, prompt_file)
    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(threads)
    model, vocab, _ = load_model(checkpoint, dev)
    encoded = encode_prompt(vocab, text, model.config.context_length)
    if encoded.cropped:
        ui.warn(f"the prompt has {len(encoded.ids) + encoded.cropped} tokens, more than the "
                f"context length {model.config.context_length}: the model sees its last "
                f"{len(encoded.ids)}")
    use_cache = not no_cache

    if json_out:
        samples = generate(model, vocab, encoded, config, device=dev, use_cache=use_cache)
        ui.print_json(_json(checkpoint, encoded, config, samples, dev, use_cache))
        return

    if encoded.start_token:
        ui.info("empty prompt: starting from a newline token (the start of a title)")
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
                                    use_cache=use_cache):
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
          device: torch.device, use_cache: bool) -> dict:
    tokens, seconds = sum(s.tokens for s in samples), sum(s.seconds for s in samples)
    return {
        "checkpoint": str(checkpoint),
        "prompt": prompt.text,
        "prompt_tokens": len(prompt.ids),
        "prompt_cropped": prompt.cropped,
        "start_token": prompt.start_token,
        "samples": [{"text": s.text, "tokens": s.tokens, "finish_reason": s.finish_reason,
                     "stop": s.stop, "seconds": round(s.seconds, 4)} for s in samples],
        "settings": {**asdict(config), "stop": list(config.stop), "device": str(device),
                     "kv_cache": use_cache},
        "tokens": tokens,
        "seconds": round(seconds, 4),
        "tokens_per_sec": round(tokens / seconds, 2) if seconds > 0 else None,
    }
