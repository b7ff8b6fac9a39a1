"""`--preset auto`: the model and schedule that a time budget buys on this machine and this text.

Each shape of a ladder (small to large) is timed for a few training steps on this device (a
probe), which says how many tokens the budget would train it on. A scaling law then predicts the
loss of each from the parameters of its transformer body and the tokens it would see, with
repeated epochs of a small corpus worth less than new text (Muennighoff et al. 2023's discount).
On a small vocabulary-heavy model the output layer costs more than the body, so a wider, deeper
body costs little speed: the probe measures that, the law weighs it against the tokens lost.
The rest follows from the winner: dropout from the epochs it will repeat, a cosine schedule
that the time budget plans to end at min_lr, evaluations spaced to rank checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from .config import ModelConfig

DEFAULT_SECONDS = 300.0  # what `--preset auto` sizes for without --max-time
# The ladder, small to large: (d_model, num_blocks, num_heads, context_length).
LADDER = ((48, 2, 4, 64), (64, 4, 4, 128), (80, 6, 4, 128), (128, 6, 4, 128), (192, 6, 6, 128),
          (256, 8, 8, 256), (384, 8, 8, 256), (512, 8, 8, 512), (768, 12, 12, 1024))
# Tokens per optimizer step: on a CPU twice the book's 256 (a few minutes buy a few thousand
# updates, and more of smaller batches beat fewer large ones: benchmarks/README.md); a GPU needs
# larger steps to be busy.
STEP_TOKENS = {"cpu": 512, "gpu": 16_384}
BUSY_SHARE = 0.85  # of the budget spent in training steps (the rest: evaluations, saves, probe)
# Evaluations per run, of the book's 10 batches a split: enough to keep the best model (their
# validation windows are the same each time), few enough to leave the budget to training (12
# of 20 batches took a tenth of a 143 s run).
EVALUATIONS = 8
# The law: L = E + A / N^ALPHA + B / D^BETA (bits per byte; E does not rank). Chinchilla's form
# (Hoffmann et al. 2022), fitted to seven 143 s runs of different shapes on tinyshakespeare on
# the 2-core development machine (benchmarks/README.md): at a few minutes of a CPU the tokens
# seen count for more than Chinchilla's own constants say (they were fitted at 10^18+ FLOPs).
LAW_A, LAW_ALPHA, LAW_B, LAW_BETA = 80.0, 0.5, 165.0, 0.5
# A body of more than this many parameters per training token only memorises the corpus (the
# law has no term for it): the climb stops there, whatever the law says.
MAX_BODY_PER_TOKEN = 40
REPEAT_DECAY = 15.4  # Muennighoff's R*: repeated epochs of the same text are worth less


@dataclass(frozen=True)
class Candidate:
    """One shape of the ladder, as the probe found it."""

    config: ModelConfig
    batch_size: int
    tokens_per_sec: float
    tokens: float  # what the budget would train it on
    epochs: float
    loss: float  # the scaling law's prediction, for ranking only



@dataclass
class Plan:
    options: dict  # option name -> value, as the command line would give them
    reasons: list[str] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)


def predicted_loss(body_params: int, tokens: float, unique_tokens: int) -> float:
    """The scaling law's loss (bits per byte), less its constant: only differences between
    shapes count."""
    if unique_tokens > 0 and tokens > unique_tokens:
        repeats = tokens / unique_tokens - 1
        tokens = unique_tokens * (1 + REPEAT_DECAY * (1 - math.exp(-repeats / REPEAT_DECAY)))
    return LAW_A / max(body_params, 1) ** LAW_ALPHA + LAW_B / max(tokens, 1.0) ** LAW_BETA


def dropout_for(epochs: float) -> float:
    """None for text seen up to 3 times, else the book's 0.1. Dropout slows what a short run
    learns: with 2.4 epochs of tinyshakespeare, 0.1 cost 0.025 bits per byte; with 12 epochs of
    the bundled corpus, whose validation loss still fell, 0.2 cost far more than 0.1 gained
    (benchmarks/README.md)."""
    return 0.0 if epochs <= 3 else 0.1


def choose(*, train_tokens: int, vocab_size: int, seconds: float, device_type: str,
           probe: Callable[[ModelConfig, int], float | None], max_context: int,
           fits: Callable[[ModelConfig, int], bool] = lambda config, batch: True) -> Plan:
    """Probe the ladder from its smallest shape up and keep the one the law ranks best; stop
    climbing once a shape predicts worse than the best so far, does not fit memory (`fits`
    false, or `probe` None), or has a body too large for the corpus (MAX_BODY_PER_TOKEN)."""
    step_tokens = STEP_TOKENS["cpu" if device_type == "cpu" else "gpu"]
    candidates: list[Candidate] = []
    stopped = "the ladder ends there"
    for d_model, blocks, heads, context in LADDER:
        context = min(context, max_context)
        batch = max(1, step_tokens // context)
        config = ModelConfig(vocab_size=vocab_size, d_model=d_model, num_blocks=blocks,
                             num_heads=heads, context_length=context, dropout=0.0)
        body = 12 * blocks * d_model ** 2
        if candidates and body > MAX_BODY_PER_TOKEN * train_tokens:
            stopped = (f"d_model {d_model} with {blocks} blocks has more than "
                       f"{MAX_BODY_PER_TOKEN} parameters per training token")
            break
        rate = probe(config, batch) if fits(config, batch) else None
        if rate is None:
            stopped = f"d_model {d_model} with {blocks} blocks would not fit in memory"
            break
        tokens = rate * seconds * BUSY_SHARE
        candidate = Candidate(config, batch, rate, tokens, tokens / max(train_tokens, 1),
                              predicted_loss(body, tokens, train_tokens))
        candidates.append(candidate)
        if candidate.loss > min(c.loss for c in candidates):
            stopped = (f"d_model {d_model} with {blocks} blocks predicts worse: a larger body "
                       "no longer pays for the tokens it costs")
            break
    if not candidates:
        from .errors import UsageError

        raise UsageError(f"--preset auto: even its smallest model ({stopped}) does not fit this "
                         "machine's memory", hint="give the model options yourself")
    best = min(candidates, key=lambda c: c.loss)
    return Plan(_options(best, seconds),
                _reasons(best, candidates, train_tokens, seconds, stopped), candidates)


def _options(best: Candidate, seconds: float) -> dict:
    c = best.config
    steps = max(1, int(best.tokens / (best.batch_size * c.context_length)))
    learning_rate = 2e-3 if c.d_model <= 192 else 1e-3 if c.d_model <= 384 else 6e-4
    return {
        "d_model": c.d_model, "num_blocks": c.num_blocks, "num_heads": c.num_heads,
        "context_length": c.context_length, "dropout": dropout_for(best.epochs),
        "batch_size": best.batch_size, "learning_rate": learning_rate,
        "min_lr": learning_rate / 10, "lr_schedule": "cosine",
        "warmup_iters": min(100, steps // 20), "max_time": seconds,
        # the budget plans the real length; this bound only stops a probe that was far too slow
        "max_iters": 3 * steps + 100,
        "eval_interval": max(50, steps // EVALUATIONS), "eval_iters": 10,
    }


def fitted(options: dict, given: dict) -> dict:
    """The choice, with what follows from an option the user gave (`given`) recomputed from it:
    the final learning rate from --learning-rate, warmup and the evaluation interval from
    --max-iters, the batch (the same tokens a step) from --context-length."""
    out = dict(options)
    if "learning_rate" in given and "min_lr" not in given:
        out["min_lr"] = given["learning_rate"] / 10
    if "max_iters" in given:
        steps = int(given["max_iters"])
        out["warmup_iters"] = min(out["warmup_iters"], steps // 20)
        out["eval_interval"] = max(1, min(out["eval_interval"], steps // EVALUATIONS))
    if "context_length" in given and "batch_size" not in given:
        step_tokens = options["batch_size"] * options["context_length"]
        out["batch_size"] = max(1, step_tokens // int(given["context_length"]))
    return out


def _reasons(best: Candidate, candidates: list[Candidate], train_tokens: int,
             seconds: float, stopped: str) -> list[str]:
    c = best.config
    probed = ", ".join(f"d{k.config.d_model}x{k.config.num_blocks} {k.tokens_per_sec:,.0f}"
                       for k in candidates)
    return [
        f"probe (tokens/s per shape): {probed}",
        f"in {seconds:,.0f} s: about {best.tokens:,.0f} tokens, {best.epochs:,.1f} epochs of "
        f"the {train_tokens:,} training tokens",
        f"model: d_model {c.d_model}, {c.num_blocks} blocks, {c.num_heads} heads, context "
        f"{c.context_length}: the best loss a scaling law predicts of the shapes probed "
        f"({stopped})",
        f"dropout {dropout_for(best.epochs)} for {best.epochs:,.1f} epochs; batch "
        f"{best.batch_size}; cosine learning rate planned to end with the budget",
    ]


def probe_throughput(config: ModelConfig, batch_size: int, device: torch.device,
                     use_fast: bool, steps: int = 3) -> float:
    """Training tokens per second of `config` on `device`: the median of `steps` timed steps
    (after one untimed) of the path the run will take, on random ids."""
    from . import fast
    from .model import GPT

    generator = torch.Generator().manual_seed(0)
    model = GPT(config).to(device)
    step = fast.TrainingPass(model) if use_fast else model
    optimizer = fast.make_optimizer(model.parameters(), 1e-3, 0.01)[0] if use_fast \
        else torch.optim.AdamW(model.parameters(), lr=1e-3)
    shape = (batch_size, config.context_length)
    x = torch.randint(config.vocab_size, shape, generator=generator).to(device)
    y = torch.randint(config.vocab_size, shape, generator=generator).to(device)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        step(x, y)[1].backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - t0)
    return batch_size * config.context_length / sorted(times)[len(times) // 2]


def plan_run(cache, train_config, seconds: float | None) -> Plan:
    """`choose` for a run of `train_config` on `cache` (a TokenCache), probing the device and
    path (fast or readable) the run will take; `seconds`: the --max-time budget, if any."""
    from . import fast
    from .checkpoint import parameter_count
    from .data import max_context_length
    from .runtime import memory_bytes, resolve_device, resolve_dtype, training_memory

    device = resolve_device(train_config.device)
    dtype = resolve_dtype(train_config.dtype, device)
    use_fast = fast.decide(train_config.fast, device, dtype, train_config.compile)
    memory = memory_bytes(device)

    def fits(config: ModelConfig, batch: int) -> bool:
        need = training_memory(parameter_count(config), config, batch, 20,
                               attention_weights=device.type == "cpu")
        return memory is None or need <= 0.8 * memory

    def probe(config: ModelConfig, batch: int) -> float | None:
        autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 \
            else nullcontext()
        try:
            with autocast:
                return probe_throughput(config, batch, device, use_fast)
        except torch.OutOfMemoryError:  # the device's memory is shared, or fragmented
            return None
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()

    fits_context = max_context_length(cache)
    if fits_context < 1:
        from .errors import UsageError

        raise UsageError(f"--preset auto: the corpus is too small to train on (its "
                         f"{len(cache.train):,} training and {len(cache.valid):,} validation "
                         "tokens cannot fill a window of 2)",
                         hint="use more text, or change --val-fraction")
    plan = choose(train_tokens=len(cache.train), vocab_size=cache.vocab.size,
                  seconds=seconds or DEFAULT_SECONDS, device_type=device.type, probe=probe,
                  max_context=fits_context, fits=fits)
    if not seconds:
        plan.reasons.insert(0, f"no --max-time: sized for {DEFAULT_SECONDS / 60:g} minutes, "
                               "and the run stops there (give --max-time to change it)")
    return plan
