"""Generation as a tool: prompts, stop strings, and samples streamed as text.

`sampling.py` draws token ids; this module turns them into what `tinygpt generate` shows: the
prompt read and encoded (cropped to the context, an empty one started from a newline), text decoded
incrementally so a character split across byte tokens appears only once complete, and samples cut
before a --stop string without ever showing part of it.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import torch

    from .config import SampleConfig
    from .model import GPT
    from .tokenizer import Vocabulary

DEFAULT_PROMPT = "农夫山泉"  # the book's opening: a brand of bottled water, as in the corpus
START_TEXT = "\n"  # an empty prompt starts here: the corpus is one title per line


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
    finish_reason: str  # "length" (max_new_tokens reached), "stop" or "eot" (end-of-text)
    stop: str | None  # the stop string that ended it
    seconds: float
    # tokens drawn past max_new_tokens to finish the character the last one left open
    finishing_tokens: int = 0

    @property
    def tokens(self) -> int:
        return len(self.ids)


def read_prompt(prompt: str | None, prompt_file: Path | None, stdin: TextIO | None = None) -> str:
    """The prompt text: --prompt, --prompt - (standard input), --prompt-file, or the default.

    Text read from a file or standard input loses one trailing newline, as `$(cat file)` would
    (an editor's final newline would otherwise make the model start a new title).
    """
    from .data import check_source
    from .errors import DataError, UsageError

    if prompt is not None and prompt_file is not None:
        raise UsageError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        try:
            check_source(prompt_file)  # a missing file, a folder, a FIFO or device
        except DataError as exc:
            raise UsageError(f"--prompt-file {exc.message}") from None
        try:
            raw = prompt_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"--prompt-file {prompt_file}: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"--prompt-file {prompt_file} is not UTF-8 text: byte "
                            f"0x{raw[exc.start]:02x} at offset {exc.start}") from None
    elif prompt == "-":
        try:
            text = (stdin or sys.stdin).read()
        except UnicodeDecodeError:
            raise DataError("the prompt on standard input is not UTF-8 text") from None
    else:
        return prompt  # None: the checkpoint's own start (`default_prompt`)
    return text[:-1] if text.endswith("\n") else text


@functools.lru_cache(maxsize=1)
def _bundled_sha256() -> str | None:
    from .data import default_corpus, file_sha256
    from .errors import DataError

    try:
        return file_sha256(default_corpus())
    except DataError:
        return None


def sample_start(meta: dict, vocab: Vocabulary) -> dict:
    """Where a sample of a model trained on a cache (its `meta`) starts, as a checkpoint records
    it: the book's prompt for the bundled corpus; else the start of a document: the end-of-text
    token where the model learned it (documents joined by it), else a new line."""
    if meta["source"]["sha256"] == _bundled_sha256():
        return {"text": DEFAULT_PROMPT}
    if vocab.eot is not None:
        return {"token": "eot"}
    return {"text": START_TEXT}


def default_prompt(state: dict, vocab: Vocabulary, context_length: int) -> Prompt:
    """The prompt when none is given: where the checkpoint says its samples start (a checkpoint
    that does not say was trained before tinygpt knew: the book's prompt)."""
    start = state.get("sample_start")
    if isinstance(start, dict) and start.get("token") == "eot" and vocab.eot is not None:
        return Prompt("", [vocab.eot], 0, True)
    text = start.get("text") if isinstance(start, dict) else None
    return encode_prompt(vocab, text if isinstance(text, str) else DEFAULT_PROMPT,
                         context_length)


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
                   device: torch.device | str = "cpu", use_cache: bool = True,
                   fast: bool = False, valid_utf8: bool = True,
                   tick: Callable[[], None] | None = None,
                   stop_at_eot: bool = True) -> Iterator[TextChunk | Sample]:
    """Generate `config.num_samples` continuations, yielding text as it is decoded and a `Sample`
    at the end of each.

    Sample i draws from its own generator seeded with `config.seed + i`, so the same seed gives the
    same text, and sample 1 does not depend on how many samples follow. Text is decoded
    incrementally: a character split across byte-level tokens comes out once complete, so the
    chunks never hold a replacement character the final text would not, and add up to it.
    With `valid_utf8` (the default) only tokens that keep the text valid UTF-8 are drawn, and a
    character the last token leaves open is finished (`Sample.finishing_tokens` says with how
    many more), so no sample shows U+FFFD; False draws from the raw model. `tick()` is
    called after each token (`runtime.Threads` measures the time between calls). With
    `stop_at_eot`, the end-of-text token (where the vocabulary has it) ends a sample: the
    document is over (finish reason "eot"); else it shows as the text <|endoftext|>.
    """
    import torch

    from .sampling import generate_tokens

    for i in range(config.num_samples):
        generator = torch.Generator(device=device).manual_seed(config.seed + i)
        decoder, stops, ids = vocab.stream_decoder(), StopFilter(config.stop), []
        finish = "length"
        started = time.perf_counter()
        tokens = generate_tokens(model, prompt.ids, config.max_new_tokens,
                                 temperature=config.temperature, top_k=config.top_k,
                                 top_p=config.top_p, generator=generator, use_cache=use_cache,
                                 fast=fast, utf8=vocab.utf8 if valid_utf8 else None)
        try:
            for token in tokens:
                if tick is not None:
                    tick()
                ids.append(token)
                if stop_at_eot and token == vocab.eot:
                    finish = "eot"
                    break
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
        else:
            finish = "stop"
        yield Sample(i, stops.text, ids, finish, stops.hit,
                     time.perf_counter() - started,
                     max(0, len(ids) - config.max_new_tokens))


def generate(model: GPT, vocab: Vocabulary, prompt: Prompt, config: SampleConfig, *,
             device: torch.device | str = "cpu", use_cache: bool = True,
             fast: bool = False, valid_utf8: bool = True,
             tick: Callable[[], None] | None = None, stop_at_eot: bool = True) -> list[Sample]:
    """All samples at once (what --json prints)."""
    return [event for event in stream_samples(model, vocab, prompt, config, device=device,
                                              use_cache=use_cache, fast=fast,
                                              valid_utf8=valid_utf8, tick=tick,
                                              stop_at_eot=stop_at_eot)
            if isinstance(event, Sample)]
