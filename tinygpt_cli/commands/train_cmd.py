"""`tinygpt train`: the book's run by default; every hyperparameter is an option."""

from __future__ import annotations

import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..config import AUTO, PRESETS
from .common import (
    cache_dir_option,
    column_option,
    funnel,
    importing_torch,
    is_rank_zero,
    source_options,
    threads_option,
)

BOOK = "Model and loop (the book's defaults)"
MORE = "Beyond the book (off or neutral by default)"
RUN = "Data, output and resume"
WATCH = "Watching the run"
RunColumn = column_option(RUN)
RunInclude, RunExclude, RunField, RunSeparator, RunSplit, RunStrict = source_options(RUN)
RunCacheDir = cache_dir_option(RUN)
RunThreads = threads_option(MORE)


def _opt(default: str, help: str, panel: str = BOOK, **kwargs) -> typer.models.OptionInfo:
    # The default is shown in --help but passed as None, so that a value given in --config or a
    # preset is only overridden by what the user actually typed.
    return typer.Option(help=help, show_default=default, rich_help_panel=panel, **kwargs)


@funnel
def train(
    d_model: Annotated[int | None, _opt("80", "Embedding width.")] = None,
    num_blocks: Annotated[int | None, _opt("6", "Transformer blocks.")] = None,
    num_heads: Annotated[int | None, _opt("4", "Attention heads (must divide --d-model).")] = None,
    context_length: Annotated[int | None, _opt("128", "Tokens the model sees at once.")] = None,
    dropout: Annotated[float | None, _opt("0.1", "Dropout rate, in [0, 1).")] = None,
    batch_size: Annotated[int | None, _opt("2", "Sequences per step (per process).")] = None,
    max_iters: Annotated[int | None, _opt("500", "Total training steps (also with --resume).")
    ] = None,
    learning_rate: Annotated[float | None, _opt("1e-3", "AdamW learning rate.")] = None,
    eval_interval: Annotated[int | None, _opt("50", "Evaluate (and save) every N steps.")] = None,
    eval_iters: Annotated[int | None, _opt("10", "Batches averaged per split and evaluation.")
    ] = None,
    device: Annotated[str | None, _opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda, "
                                       "cuda:N or mps.")] = None,
    seed: Annotated[int | None, _opt("1337", "Random seed (model init, batches, dropout).")
    ] = None,
    dtype: Annotated[str | None, _opt("auto", "auto (bfloat16 autocast on a CUDA GPU that has "
                                      "it, else float32), float32, bfloat16 or float16.",
                                      MORE)] = None,
    compile: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile the model (falls back to eager with a "
        "warning if compilation fails).", show_default="off", rich_help_panel=MORE)] = None,
    fast: Annotated[bool | None, typer.Option(
        "--fast/--no-fast", help="The speed path (tinygpt_cli/fast/): the same model trained "
        "faster. On by default where it applies (CPU, float32, no --compile); --no-fast trains "
        "the readable model.py code as written.", show_default="auto", rich_help_panel=MORE)
    ] = None,
    threads: RunThreads = "auto",
    compile_mode: Annotated[str, typer.Option(
        help="torch.compile mode: default, reduce-overhead (CUDA graphs: best for small models "
        "on a GPU) or max-autotune.", rich_help_panel=MORE)] = "default",
    grad_accum: Annotated[int | None, _opt("1", "Gradient accumulation steps per update.", MORE)
    ] = None,
    grad_clip: Annotated[float | None, _opt("0 (off)", "Clip the gradient norm to this.", MORE)
    ] = None,
    weight_decay: Annotated[float | None, _opt("0.01", "AdamW weight decay (torch's default, "
                                               "which the book uses).", MORE)] = None,
    lr_schedule: Annotated[str | None, _opt("constant", "constant, cosine or linear decay to "
                                            "--min-lr.", MORE)] = None,
    warmup_iters: Annotated[int | None, _opt("0", "Linear learning-rate warmup steps.", MORE)
    ] = None,
    min_lr: Annotated[float | None, _opt("0", "Learning rate at the end of a decay.", MORE)
    ] = None,
    max_time: Annotated[str | None, _opt(
        "0 (off)", "Stop and save after this long: seconds, or a duration such as 90s, 10m, "
        "1h30m. The run's length is planned from measured step times so that its last "
        "evaluation and save fit inside, and a decaying --lr-schedule reaches --min-lr there.",
        MORE, metavar="DURATION")] = None,
    preset: Annotated[str | None, typer.Option(
        help=f"Named settings: {', '.join([AUTO, *PRESETS])}. auto: the model, batch, "
        "schedule and dropout that --max-time (or 5 minutes without it) buys on this corpus and "
        "machine, "
        "from a few seconds' probe of training speed; it prints its choice and reasons, and "
        "any option you give wins. book: the chapter's defaults; gpt2-small: d_model 768, 12 "
        "blocks, 12 heads, context 1024.", rich_help_panel=MORE,
        show_default=False)] = None,
    data: Annotated[list[Path] | None, typer.Option(
        help="Corpus to train on: a text, CSV, JSONL or Parquet file, or a folder (read "
        "recursively); repeat for more (tokenized and cached as by `tinygpt tokenize`). "
        "Default: the bundled corpus.", rich_help_panel=RUN, show_default=False)] = None,
    include: RunInclude = None,
    exclude: RunExclude = None,
    field: RunField = None,
    separator: RunSeparator = None,
    split: RunSplit = None,
    strict: RunStrict = False,
    init_from: Annotated[Path | None, typer.Option(
        "--init-from", help="Start a new run (step 0, a fresh optimizer, its own --out) from "
        "this checkpoint's weights, on any --data: the model's shape and tokenizer come from "
        "it (options that would change them are refused); steps, learning rate, schedule and "
        "dropout are yours. Text its vocabulary lacks is spelled in byte tokens; the share "
        "that was is reported. (--resume continues the same run on the same data.)",
        rich_help_panel=RUN, show_default=False)] = None,
    column: RunColumn = None,
    encoding: Annotated[str | None, typer.Option(
        "--encoding", help="tiktoken encoding. cl100k_base works offline (bundled); others need "
        "tiktoken's cache (TIKTOKEN_CACHE_DIR) or the network.", show_default="cl100k_base",
        rich_help_panel=RUN)] = None,
    full_vocab: Annotated[bool, typer.Option(
        "--full-vocab", help="Use the book's max(id)+1 vocabulary instead of the compact one.",
        rich_help_panel=RUN)] = False,
    val_fraction: Annotated[float | None, typer.Option(
        help="Share of tokens (the end of the corpus) kept for validation.", show_default="0.1",
        rich_help_panel=RUN)] = None,
    errors: Annotated[str | None, typer.Option(
        help="Bytes that are not UTF-8: 'strict' stops with their offset, 'replace' "
        "substitutes U+FFFD.", show_default="strict", rich_help_panel=RUN)] = None,
    cache_dir: RunCacheDir = None,
    out: Annotated[Path, typer.Option(help="Where to save the checkpoint (the best one goes "
                                      "beside it as NAME.best.ckpt, metrics as "
                                      "NAME.metrics.jsonl).", rich_help_panel=RUN)
    ] = Path("model/model.ckpt"),
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace the checkpoint of another run at --out (and the files kept "
        "beside it). Without it, tinygpt refuses to write over one.", rich_help_panel=RUN)
    ] = False,
    resume: Annotated[Path | None, typer.Option(
        help="Continue a run from its checkpoint up to --max-iters, with its model and training "
        "settings unless given again.", rich_help_panel=RUN,
        show_default=False)] = None,
    sample_every: Annotated[int, typer.Option(
        min=0, help="Every N steps, show a short sample under the live table (and in the "
        "metrics file). 0: never.", rich_help_panel=WATCH)] = 0,
    sample_prompt: Annotated[str, typer.Option(
        help="Prompt for --sample-every (default: a new line, i.e. a fresh title).",
        rich_help_panel=WATCH, show_default=False)] = "\n",
    json_out: Annotated[bool, typer.Option(
        "--json", help="At the end, print the run's summary and report card as JSON on stdout "
        "(the book's per-evaluation lines then go to stderr).", rich_help_panel=WATCH)] = False,
    plot: Annotated[bool, typer.Option(
        "--plot", help="Write the loss plot (NAME.png beside the checkpoint) at the end; needs "
        "matplotlib (the plot extra).", rich_help_panel=WATCH)] = False,
    wandb: Annotated[bool, typer.Option(
        "--wandb", help="Log the run to Weights & Biases, as the book does (the wandb extra; "
        "WANDB_MODE=offline logs locally).", rich_help_panel=WATCH)] = False,
    wandb_project: Annotated[str, typer.Option(
        help="W&B project name.", rich_help_panel=WATCH)] = "tinygpt",
    tensorboard: Annotated[Path | None, typer.Option(
        help="Write TensorBoard scalars to this folder (the tensorboard extra).",
        rich_help_panel=WATCH, show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="A TOML file whose keys set these options (d_model = 128, ...); the "
        "command line wins.", rich_help_panel=RUN, show_default=False)] = None,
) -> None:
    """Train the book's GPT on a corpus (default: the bundled one) and save a checkpoint.

    Ctrl-C stops after the current step and saves; --resume continues from there.
    """
    cli_values = {k: v for k, v in locals().items() if v is not None}
    _run(cli_values)


def _run(cli_values: dict) -> None:
    with importing_torch():
        from .. import ui
        from ..checkpoint import saved_run
        from ..config import merge_settings, parse_duration, read_toml
        from ..data import TokenizeSettings
        from ..runtime import parse_threads
        from ..tokenizer import FULL
        from ..train import Trainer, TrainRequest

    threads = parse_threads(cli_values["threads"]) or "auto"
    command_line = dict(cli_values)
    if "max_time" in command_line:
        command_line["max_time"] = parse_duration(command_line["max_time"])
    if command_line.pop("full_vocab"):
        command_line["vocab_mode"] = FULL
    if not command_line.get("strict"):
        command_line.pop("strict", None)  # False is the default, not a choice to record
    for key in ("include", "exclude"):
        if key in command_line:
            command_line[key] = tuple(command_line[key])
    if "init_from" in cli_values:
        _check_init_from(cli_values, command_line)
    file_values = read_toml(cli_values["config"]) if "config" in cli_values else None
    talk = is_rank_zero()
    if talk:
        _check_extras(cli_values)  # a missing optional package is said now, not after the run
    cache = None
    if cli_values.get("preset") == AUTO and "resume" not in cli_values:
        settings, cache = _auto_settings(cli_values, command_line, file_values, talk, threads)
    else:
        if cli_values.get("preset") == AUTO and talk:
            ui.info("--preset auto: a resumed run keeps its own settings")
        settings = merge_settings(
            resumed=saved_run(cli_values["resume"]) if "resume" in cli_values else None,
            preset_name=None if cli_values.get("preset") == AUTO else cli_values.get("preset"),
            file_values=file_values, command_line=command_line)
    request = TrainRequest(
        train_config=settings.train_config,
        model_options=settings.model_options,
        data=settings.data,
        tokenize=TokenizeSettings(**settings.tokenize),
        cache_dir=cli_values.get("cache_dir"),
        out=cli_values["out"],
        resume=cli_values.get("resume"),
        compile_mode=cli_values["compile_mode"],
        threads=threads,
        sample_every=cli_values["sample_every"],
        sample_prompt=cli_values["sample_prompt"],
        overwrite=cli_values["overwrite"],
        init_from=cli_values.get("init_from"),
        inputs=tuple(Path(cli_values[k]) for k in ("config",) if k in cli_values),
    )
    with ui.byte_progress("Tokenizing", enabled=talk and sys.stderr.isatty()) as progress:
        trainer = Trainer(request, cache=cache, tokenize_progress=progress)
    if trainer.fast:
        from ..fast.allocator import keep_freed_memory

        keep_freed_memory()  # the process is ours: no page faults for what each step reallocates
    json_out = cli_values["json_out"]
    # the live table where a person watches (stdout too, unless it carries JSON), else lines
    live = talk and sys.stderr.isatty() and (json_out or sys.stdout.isatty())
    reporter = ui.LiveTrainDisplay() if live else ui.TrainReporter(json_out)
    done = None
    subscribers: list = []
    try:
        if talk:
            _add_trackers(subscribers, cli_values, trainer)
        with reporter:
            for event in trainer.run():
                if talk:
                    reporter.handle(event)
                    for subscriber in subscribers:
                        subscriber.handle(event)
                done = event
    finally:
        for subscriber in subscribers:
            subscriber.close()
        trainer.close()
    if talk and cli_values["plot"] and done is not None:
        from ..checkpoint import related_path
        from ..plotting import write_png

        ui.info(f"Loss plot: {write_png([request.out], related_path(request.out, 'plot'))}")
    if talk and json_out and done is not None:
        ui.print_json(ui.train_json(done))
    if done is not None and getattr(done, "reason", None) == "interrupted":
        name = signal.Signals(done.signum).name if done.signum else "a signal"
        if talk:
            ui.info(f"Stopped by {name} after step {done.steps}; saved {done.checkpoint}.")
            ui.info(f"Resume with: {_resume_command(done.checkpoint)}")
        raise typer.Exit(130 if done.signum == signal.SIGINT else 143)


def _check_init_from(cli_values: dict, command_line: dict) -> None:
    """--init-from takes the model's shape and tokenizer from its checkpoint: options that
    would choose them are refused here (shape options: by the trainer, against the checkpoint)."""
    from ..errors import UsageError

    if "resume" in cli_values:
        raise UsageError("--init-from starts a new run from a checkpoint's weights and --resume "
                         "continues a run: give one of them")
    if cli_values.get("preset") == AUTO:
        raise UsageError("--preset auto chooses a model's shape, and --init-from's checkpoint "
                         "has one already: leave --preset auto out")
    for key, option in (("encoding", "--encoding"), ("vocab_mode", "--full-vocab")):
        if key in command_line:
            raise UsageError(f"{option}: the tokenizer comes from --init-from's checkpoint (its "
                             "vocabulary is what the model learned); leave it out")


def _auto_settings(cli_values: dict, command_line: dict, file_values: dict | None,
                   talk: bool, threads: int | str):
    """--preset auto: tokenize, probe, choose (`autosize`), say the choice and its reasons;
    every option given on the command line or in --config wins over the choice. Returns the
    merged settings and the token cache."""
    from .. import ui
    from ..autosize import fitted, plan_run
    from ..config import merge_settings
    from ..data import TokenizeSettings, prepare
    from ..errors import UsageError
    from ..runtime import Dist
    from ..train import check_writable

    if Dist.from_env().enabled:
        raise UsageError("--preset auto sizes a run for one process; under torchrun give the "
                         "model options", hint="run `tinygpt train --preset auto` alone to see "
                         "what it picks, then pass those options")
    check_writable(Path(cli_values["out"]))  # before any work
    base = merge_settings(file_values=file_values, command_line=command_line)
    with ui.byte_progress("Tokenizing", enabled=talk and sys.stderr.isatty()) as progress:
        cache = prepare(base.data, TokenizeSettings(**base.tokenize),
                        cache_root=cli_values.get("cache_dir"), progress=progress)
    if isinstance(threads, int):  # the probe measures on the threads the run will have
        import torch

        torch.set_num_threads(threads)
    with ui.status("Probing this machine's speed for --preset auto", enabled=talk):
        plan = plan_run(cache, base.train_config, base.train_config.max_time or None)
    given = {**(file_values or {}), **command_line}
    plan.options = fitted(plan.options, given)
    kept = [f"--{k.replace('_', '-')} {given[k]}" for k in plan.options
            if k in given and given[k] != plan.options[k]]
    if talk:
        for line in plan.reasons:
            ui.info(f"--preset auto: {line}")
        if kept:
            ui.info(f"--preset auto: yours instead of its choice: {', '.join(kept)}")
    settings = merge_settings(preset_values=plan.options, file_values=file_values,
                              command_line=command_line)
    return settings, cache


def _check_extras(cli_values: dict) -> None:
    """Fail before any work when an option needs an optional package that is not installed."""
    import importlib.util

    from ..errors import UsageError

    if cli_values["plot"]:
        from ..plotting import require_matplotlib

        require_matplotlib()
    for option, module, extra in (("wandb", "wandb", "wandb"),
                                  ("tensorboard", "tensorboard", "tensorboard")):
        if cli_values.get(option) not in (None, False) and importlib.util.find_spec(module) is None:
            raise UsageError(f"--{option} needs the {module} package: "
                             f"pip install 'tinygpt[{extra}]'")


def _add_trackers(trackers: list, cli_values: dict, trainer) -> None:
    """Start the experiment trackers asked for (each is closed at the end even if the next one
    fails to start); they are fed the same events as the display."""
    from ..tracking import TensorBoardTracker, WandbTracker, run_config

    if cli_values["wandb"]:
        trackers.append(WandbTracker(cli_values["wandb_project"],
                                     run_config(trainer.model_config, trainer.cfg),
                                     run_name=Path(cli_values["out"]).parent.name or None))
    if cli_values.get("tensorboard") is not None:
        trackers.append(TensorBoardTracker(cli_values["tensorboard"]))


def _resume_command(checkpoint: Path) -> str:
    """The command line that was run, with --resume pointing at the checkpoint just saved."""
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--resume":
            skip = True
            continue
        if arg.startswith("--resume="):
            continue
        args.append(arg)
    if not args or args[0] != "train":
        args = ["train", *[a for a in args if a != "train"]]
    return shlex.join(["tinygpt", *args, "--resume", str(checkpoint)])
