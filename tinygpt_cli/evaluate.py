"""Losses: the book's `estimate_loss` (random batches), full-split evaluation (every token once),
perplexity and bits per byte, and `evaluate_checkpoint`, the plain function behind `tinygpt eval`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .data import as_tensor, get_batch


class Stopped(Exception):
    """An evaluation given up part way because its `stop` check said so (a signal)."""


def estimate_loss(model: torch.nn.Module, splits: dict[str, torch.Tensor], *, batch_size: int,
                  context_length: int, eval_iters: int, seed: int | dict[str, int],
                  autocast: AbstractContextManager | None = None,
                  stop: Callable[[], bool] | None = None) -> torch.Tensor:
    """The book's estimate: mean loss of `eval_iters` random batches per split, dropout off.

    Batches come from a generator seeded with `seed`, never from the training generator, so how
    often one evaluates cannot change training. Returns a float32 tensor of one mean per split
    (in the order of `splits`), on the splits' device, ready to be averaged across processes.
    Raises Stopped as soon as `stop()` is true (it is asked between forward passes).
    """
    seeds = seed if isinstance(seed, dict) else dict.fromkeys(splits, seed)
    means = [estimate_split_loss(model, data, context_length=context_length,
                                 batch_size=batch_size, eval_iters=eval_iters, seed=seeds[name],
                                 autocast=autocast, stop=stop)[0]
             for name, data in splits.items()]
    return torch.tensor(means, device=next(iter(splits.values())).device)


def evaluation_seed(seed: int, step: int, rank: int = 0, split: str = "train") -> int:
    """The seed of the estimate a run makes of `split` at `step` (process `rank`): `tinygpt eval`
    uses it to repeat the training's own estimate for a checkpoint.

    The validation windows are the same at every evaluation of a run (its seed ignores the
    step): two evaluations then differ only by the model, never by which text was drawn, so the
    best checkpoint is the better model and not the luckier draw. (Drawn afresh, the book's 10
    batches differ by more than a late evaluation improves: benchmarks/README.md.)"""
    if split == "valid":
        step = VALID_STEP
    return (seed * 1_000_003 + step * 101 + rank) % 2**63


VALID_STEP = -1  # the step the validation windows of every evaluation are drawn for


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


def bits_per_byte(loss: float, tokens: int, nbytes: int) -> float:
    """Nats per token -> bits per byte of text: comparable across vocabularies and tokenizers."""
    return loss * tokens / (math.log(2) * nbytes) if nbytes else math.nan


# --- full-split evaluation ---------------------------------------------------------------------

LOGITS_BUDGET = 1 << 26  # logits per forward pass (256 MB in float32) before --full shrinks a batch


def window_batch_size(batch_size: int, context_length: int, vocab_size: int) -> int:
    """`batch_size`, lowered so one batch's (B, T, V) logits stay within LOGITS_BUDGET.

    The book's full vocabulary (~100k) at context 128 would otherwise need 1.6 GB per 32 windows;
    in --full mode the batch size changes only the speed, never the result.
    """
    return max(1, min(batch_size, LOGITS_BUDGET // (context_length * vocab_size)))


@torch.no_grad()
def full_loss(model: torch.nn.Module, data: torch.Tensor, *, context_length: int,
              batch_size: int, advance: Callable[[int], None] | None = None,
              autocast: AbstractContextManager | None = None,
              stop: Callable[[], bool] | None = None) -> tuple[float, int]:
    """Score every token of `data` once: (mean loss in nats per token, tokens scored).

    Non-overlapping windows: the first predicts tokens 1..T from 0..T-1, the next T+1..2T from
    T..2T-1, and so on; the tail shorter than a window is scored as one shorter sequence. So every
    token but the first is a target exactly once (N - 1 of them), each seeing up to T-1 tokens
    before it in its window. `advance(n)` is called after each forward pass with the windows done.
    Raises Stopped as soon as `stop()` is true (it is asked between forward passes).
    """
    n_targets = len(data) - 1
    if n_targets < 1:
        return math.nan, 0
    T = context_length
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)  # on the CPU: MPS has no float64
    n_full = n_targets // T
    offsets = torch.arange(T + 1, device=data.device)  # (T+1,)
    for lo in range(0, n_full, batch_size):
        if stop is not None and stop():
            model.train(was_training)
            raise Stopped
        hi = min(n_full, lo + batch_size)
        starts = torch.arange(lo, hi, device=data.device) * T  # (B,)
        chunk = data[starts[:, None] + offsets].long()  # (B, T+1)
        total += _summed_loss(model, chunk[:, :-1], chunk[:, 1:], autocast)
        if advance is not None:
            advance(hi - lo)
    tail = n_targets - n_full * T
    if tail:
        chunk = data[n_full * T:].long()[None]  # (1, tail+1)
        total += _summed_loss(model, chunk[:, :-1], chunk[:, 1:], autocast)
        if advance is not None:
            advance(1)
    model.train(was_training)
    return total.item() / n_targets, n_targets


def full_split(model: torch.nn.Module, data: torch.Tensor, nbytes: int, vocab, *,
               context_length: int, batch_size: int,
               advance: Callable[[int], None] | None = None,
               autocast: AbstractContextManager | None = None,
               stop: Callable[[], bool] | None = None) -> tuple[float, int, float]:
    """`full_loss` over a split of `nbytes` bytes, and its bits per byte: (loss, tokens scored,
    bits per byte over exactly the bytes of the tokens scored, all but the first token's)."""
    loss, scored = full_loss(model, data, context_length=context_length, batch_size=batch_size,
                             advance=advance, autocast=autocast, stop=stop)
    scored_bytes = nbytes - len(vocab.token_bytes(int(data[0]))) if len(data) else 0
    return loss, scored, bits_per_byte(loss, scored, scored_bytes)


ESTIMATE_LOGITS = 1 << 23  # logits per forward pass of the estimate: 32 MB in float32
ESTIMATE_TOKENS = 1 << 13  # and tokens per pass, which bound the activations of any vocabulary


@torch.no_grad()
def estimate_split_loss(model: torch.nn.Module, data: torch.Tensor, *, context_length: int,
                        batch_size: int, eval_iters: int, seed: int, rows: int | None = None,
                        autocast: AbstractContextManager | None = None,
                        stop: Callable[[], bool] | None = None) -> tuple[float, int]:
    """The book's estimate for one split: (mean loss, predictions scored).

    `eval_iters` batches of `batch_size` random windows are drawn (in the book's order) from a
    generator seeded with `seed`, then run `rows` windows per forward pass. Every window has the
    same number of tokens, so the mean is the book's mean of batch means however the windows are
    grouped. By default a pass takes as many windows as keep its logits within ESTIMATE_LOGITS
    and its tokens within ESTIMATE_TOKENS, and at least one batch (never more memory than the
    book's pass per batch): on the book's model, all 20 windows in one pass instead of 10 passes
    of 2 make the estimate about a third faster. Raises Stopped when `stop()` turns true.
    """
    stop = stop or (lambda: False)
    T = context_length
    if rows is None:
        fit = min(ESTIMATE_LOGITS // (T * model.config.vocab_size), ESTIMATE_TOKENS // T)
        rows = max(batch_size, fit)
    generator = torch.Generator(device=data.device).manual_seed(seed)
    batches = []
    for i in range(eval_iters):
        if i % 1024 == 1023 and stop():
            raise Stopped
        batches.append(get_batch(data, batch_size, T, generator))
    x = torch.cat([b[0] for b in batches])  # (eval_iters * B, T)
    y = torch.cat([b[1] for b in batches])
    # one sum per pass, left on the device: a GPU never waits for the CPU between passes
    sums = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), rows):
            if stop():
                raise Stopped
            sums.append(_summed_loss(model, x[i:i + rows], y[i:i + rows], autocast,
                                     on_cpu=False))
    finally:
        model.train(was_training)
    scored = eval_iters * batch_size * T
    return torch.stack(sums).cpu().double().sum().item() / scored, scored


def _summed_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                 autocast: AbstractContextManager | None, on_cpu: bool = True) -> torch.Tensor:
    """Summed cross-entropy of targets y (B, T) given inputs x (B, T): a float64 scalar on the
    CPU, or with `on_cpu=False` a float32 scalar left on the model's device."""
    with autocast or nullcontext():
        logits, _ = model(x)  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
    return loss.cpu().double() if on_cpu else loss


def num_windows(tokens: int, context_length: int) -> int:
    """Forward-pass rows `full_loss` runs over a split of `tokens` tokens (windows plus tail)."""
    return -(-max(tokens - 1, 0) // context_length)


# --- evaluating a checkpoint (`tinygpt eval`) ---------------------------------------------------

Split = tuple[np.ndarray, int]  # (model ids, bytes of text they decode to)
TokenizeProgress = Callable[[], AbstractContextManager]  # yields a (done, total) callback or None
ScoreProgress = Callable[[str, int], AbstractContextManager]  # yields an advance(n) callback


def evaluate_checkpoint(checkpoint: Path, device: torch.device | str = "cpu", *,
                        data: Path | None = None, full: bool = False,
                        eval_iters: int | None = None, batch_size: int | None = None,
                        seed: int | None = None, cache_dir: Path | None = None,
                        tokenize_progress: TokenizeProgress | None = None,
                        score_progress: ScoreProgress | None = None,
                        tick: Callable[[], None] | None = None) -> dict:
    """Loss, perplexity and bits per byte of a checkpoint, as plain (JSON-ready) data.

    Without `data`: the train and valid splits of the corpus the checkpoint was trained on, from
    its token cache (rebuilt with the recorded settings when missing). With `data`: that text file,
    encoded with the checkpoint's vocabulary, as one split named "data".
    `full` scores every token once (`full_loss`, `batch_size` windows a pass, 32 by default);
    otherwise the book's estimate averages `eval_iters` random batches of `batch_size` windows
    drawn from `seed`, so a checkpoint always gets the same numbers. Left out, those three are
    the training's own (its batch size and eval_iters, and on its corpus the seed of its last
    evaluation), so the estimate is the one training reported: identical for a checkpoint saved
    at that evaluation (the best one), one update apart for the last checkpoint of a run.
    `tick()` is called after each forward pass of `full` (`runtime.Threads` times them).
    """
    from . import checkpoint as ckpt
    from .config import COUNT_LIMITS, MAX_SEED

    problems = [f"--{name} must be from 1 to {limit:,} (got {value:,})"
                for name, value, limit in (("eval-iters", eval_iters, COUNT_LIMITS["eval_iters"]),
                                           ("batch-size", batch_size, COUNT_LIMITS["batch_size"]))
                if value is not None and not 1 <= value <= limit]
    if seed is not None and not 0 <= seed <= MAX_SEED:
        problems.append(f"--seed must be between 0 and 2**63 - 1 (got {seed})")
    if problems:
        from .errors import UsageError

        raise UsageError("; ".join(problems))
    started = time.perf_counter()
    checkpoint = Path(checkpoint)
    model, vocab, state = ckpt.load_model(checkpoint, device)
    trained = state.get("train_config") or {}
    evaluated = state.get("evaluated_step")
    # the training's own batches exist only where it drew them as eval will: one process, the
    # same kind of device (each has its own random stream), no autocast
    h_params = state.get("h_params") or {}
    same_setup = state.get("world_size", 1) == 1 \
        and h_params.get("device") == torch.device(device).type \
        and (trained.get("dtype") == "float32"
             or (trained.get("dtype", "auto") == "auto" and torch.device(device).type == "cpu"))
    as_training = not full and batch_size is None and eval_iters is None and seed is None \
        and data is None and evaluated is not None and "seed" in trained and same_setup
    if batch_size is None:
        batch_size = 32 if full else int(trained.get("batch_size", 2))
    if eval_iters is None:
        eval_iters = int(trained.get("eval_iters", 10))
    if seed is None:
        seed = evaluation_seed(int(trained["seed"]), int(evaluated)) if as_training else 1337
    # checkpoints written before the validation windows were fixed drew them for each step
    fixed_windows = state.get("valid_windows") == "fixed"
    warnings: list[str] = []
    if data is not None:
        source, cache_path = Path(data), None
        splits = {"data": encode_file(source, vocab)}
    else:
        with tokenize_progress() if tokenize_progress else nullcontext() as progress:
            cache = checkpoint_cache(checkpoint, state, vocab, cache_dir, progress)
        source, cache_path = Path(cache.meta["source"]["path"]), cache.path
        warnings = cache.warnings  # a damaged cache that was rebuilt, say
        splits = {name: (cache.split(name), cache.meta["splits"][name]["bytes"])
                  for name in ("train", "valid")}

    T = model.config.context_length
    full_batch = window_batch_size(batch_size, T, model.config.vocab_size)
    results = {}
    for name, (ids, nbytes) in splits.items():
        tensor = as_tensor(ids, str(device))
        if full:
            bar = score_progress(name, num_windows(len(ids), T)) if score_progress \
                else nullcontext(None)
            with bar as advance:
                loss, scored, bpb = full_split(model, tensor, nbytes, vocab,
                                               context_length=T, batch_size=full_batch,
                                               advance=_ticking(advance, tick))
        else:
            if len(ids) <= T:
                from .errors import DataError

                raise DataError(
                    f"the {name} split has {len(ids)} tokens, too few for the estimate's random "
                    f"windows of context length {T} (it needs {T + 1})",
                    hint="use --full, which also scores texts shorter than a window")
            # the training's estimate groups its windows as the trainer does (same sums)
            split_seed = evaluation_seed(int(trained["seed"]), int(evaluated), split=name) \
                if as_training and fixed_windows else seed
            loss, scored = estimate_split_loss(model, tensor, context_length=T,
                                               batch_size=batch_size, eval_iters=eval_iters,
                                               seed=split_seed,
                                               rows=None if as_training else full_batch)
            # the split's own bytes per token turn nats per token into bits per byte
            bpb = bits_per_byte(loss, len(ids), nbytes)
        if not math.isfinite(loss):
            from .errors import CheckpointError

            raise CheckpointError(f"{checkpoint} gives non-finite logits (NaN or inf) on the "
                                  f"{name} split: the run diverged before it was saved",
                                  hint="evaluate the .best.ckpt beside it")
        results[name] = {
            "loss": _finite(loss), "perplexity": _finite(perplexity(loss)),
            "bits_per_byte": _finite(bpb), "tokens": scored,
            "split_tokens": len(ids), "split_bytes": nbytes,
        }
    tok = state["tokenizer"]
    return {
        "checkpoint": str(checkpoint),
        "step": state.get("step"),
        "mode": "full" if full else "estimate",
        "source": str(source),
        "cache": str(cache_path) if cache_path else None,
        "vocabulary": f"{tok['encoding']}/{tok['mode']}/{vocab.size}",
        "device": str(device),
        "context_length": T,
        "batch_size": full_batch if full else batch_size,
        "eval_iters": None if full else eval_iters,
        "seed": None if full else seed,
        # the training's validation windows, drawn from a seed of their own (evaluation_seed)
        **({"valid_seed": evaluation_seed(int(trained["seed"]), 0, split="valid")}
           if as_training and fixed_windows else {}),
        "splits": results,
        "training_estimate": _training_estimate(state, as_training),
        "seconds": round(time.perf_counter() - started, 3),
        "warnings": warnings,
    }


def _training_estimate(state: dict, repeated: bool) -> dict | None:
    """The losses training reported at its last evaluation, and how they relate to this one."""
    losses, step = state.get("last_losses"), state.get("evaluated_step")
    if not losses or step is None:
        return None
    if not repeated:
        relation = "other settings"
    elif state.get("step") == step:
        relation = "same"  # saved at that evaluation: the same weights, windows and sums
    else:
        relation = "updated"  # the same windows, on weights updated since
    return {"step": step, "train_loss": _finite(float(losses[0])),
            "valid_loss": _finite(float(losses[1])), "relation": relation,
            "updates_since": max(0, int(state.get("step", step)) - step)}


def checkpoint_cache(checkpoint: Path, state: dict, vocab, cache_dir: Path | None,
                     progress=None):  # -> TokenCache
    """The token cache of the corpus a checkpoint was trained on, checked against its vocabulary.

    Re-uses `data.prepare` with the recorded settings, so a missing cache is rebuilt; a corpus
    that changed since, or a cache whose vocabulary is not the checkpoint's, is a clear error.
    """
    from .data import TokenizeSettings, default_corpus, file_sha256, prepare, source_set
    from .errors import CheckpointError, DataError, TinyGPTError

    info = state.get("data")
    if not isinstance(info, dict) or "path" not in info or "settings" not in info:
        raise CheckpointError(f"{checkpoint} does not record the corpus it was trained on",
                              hint="pass --data PATH to score a text file with it")
    try:
        settings = TokenizeSettings(**info["settings"])
    except (TypeError, TinyGPTError) as exc:
        raise CheckpointError(f"{checkpoint} records unusable tokenize settings ({exc})") from None
    tok = state["tokenizer"]
    if (settings.encoding, settings.vocab_mode) != (tok["encoding"], tok["mode"]):
        raise CheckpointError(
            f"{checkpoint} does not hold together: its corpus was tokenized with "
            f"{settings.encoding}/{settings.vocab_mode}, its model uses {tok['encoding']}/"
            f"{tok['mode']}", hint="pass --data PATH to score a text file with the model's own "
            "vocabulary")
    paths = info.get("paths")
    sources = [Path(p) for p in paths] if isinstance(paths, list) and paths \
        else [Path(info["path"])]
    sha = info.get("sha256")
    if len(sources) == 1 and not sources[0].exists():
        # the bundled corpus lives elsewhere in another install; the same bytes are the same data
        try:
            default = default_corpus()
        except DataError:
            default = None
        if default is None or sha is None or file_sha256(default) != sha:
            raise DataError(f"{sources[0]}, the corpus {checkpoint} was trained on, is not "
                            "there", hint="pass --data PATH to score a text file instead")
        sources = [default]
    missing = [p for p in sources if not p.exists()]
    if missing:
        raise DataError(f"{missing[0]}, part of the corpus {checkpoint} was trained on, is not "
                        "there", hint="pass --data PATH to score a text file instead")
    now = source_set(sources, settings).sha256
    if sha is not None and now != sha:
        shown = ", ".join(map(str, sources))
        raise DataError(f"{shown} has changed since {checkpoint} was trained on it (sha256 "
                        f"{sha[:12]} then, {now[:12]} now)",
                        hint="pass --data PATH to score a file with the checkpoint's "
                        "vocabulary anyway")
    # a run started from another checkpoint tokenized its corpus with that vocabulary
    cache = prepare(sources, settings, cache_root=cache_dir, progress=progress,
                    vocab=vocab if state.get("init_from") else None)
    if not (cache.vocab.encoding_name == vocab.encoding_name and cache.vocab.mode == vocab.mode
            and np.array_equal(cache.vocab.ids, vocab.ids)):
        raise DataError(
            f"the token cache {cache.path} does not belong to {checkpoint}: its vocabulary is "
            f"{cache.vocab.encoding_name}/{cache.vocab.mode}/{cache.vocab.size} tokens, the "
            f"checkpoint's {vocab.encoding_name}/{vocab.mode}/{vocab.size}"
            + (" with other ids" if cache.vocab.size == vocab.size else ""),
            hint="rebuild it with tinygpt tokenize --force, or pass --data PATH")
    return cache


def encode_file(path: Path, vocab) -> Split:
    """A UTF-8 text file as model ids of `vocab` (byte fallback: any text is encodable)."""
    from .data import check_source, iter_text_chunks
    from .errors import DataError

    try:
        check_source(path)  # a missing file, a folder, a FIFO or device (never opened)
    except DataError as exc:  # (its hint is about tokenize's default corpus: not eval's)
        raise DataError(f"--data {exc.message}",
                        hint="leave --data out to score the checkpoint's own corpus") from None
    pieces, nbytes = [], 0
    try:
        # chunks end where tiktoken never joins tokens, so this equals encoding the whole text
        for text, consumed in iter_text_chunks(path, "strict"):
            pieces.append(np.asarray(vocab.encode(text), dtype=np.int64))
            nbytes += consumed
    except DataError as exc:  # its hint names tokenize's --errors, which eval does not have
        raise DataError(f"--data {exc.message}", hint="convert it to UTF-8 text") from None
    ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    if len(ids) < 2:
        raise DataError(f"--data {path} has {len(ids)} token(s); scoring needs at least 2")
    return ids, nbytes


def _ticking(advance: Callable[[int], None] | None, tick: Callable[[], None] | None
             ) -> Callable[[int], None] | None:
    """`advance`, calling `tick()` too."""
    if tick is None:
        return advance

    def both(n: int) -> None:
        tick()
        if advance is not None:
            advance(n)
    return both


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: such a value is reported as null."""
    return value if math.isfinite(value) else None
