"""The `tinygpt` command: a Typer app whose commands are thin wrappers over the core."""

from __future__ import annotations

import inspect
from typing import Annotated

import typer

from . import __version__
from .commands import (
    eval_cmd,
    export_cmd,
    generate_cmd,
    info_cmd,
    plot_cmd,
    tokenize_cmd,
    train_cmd,
)
from .commands.help import suggest, use_plain_hints

use_plain_hints()

app = typer.Typer(
    name="tinygpt",
    help="Train a small GPT language model from scratch on your own text.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tinygpt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """Train a small GPT language model from scratch on your own text.

    Start with `tinygpt train` (the book's run on the bundled corpus), then
    `tinygpt generate`.
    """


def _paragraphs(doc: str | None) -> str | None:
    """A docstring as help: each paragraph's lines joined, so the terminal wraps them (Typer
    keeps a docstring's line breaks, which wrap again at 80 columns into ragged text)."""
    if doc is None:
        return None
    return "\n\n".join(" ".join(part.split("\n"))
                       for part in inspect.cleandoc(doc).split("\n\n"))


for name, command in (("tokenize", tokenize_cmd.tokenize), ("train", train_cmd.train),
                      ("eval", eval_cmd.eval_command),
                      ("generate", generate_cmd.generate_command), ("plot", plot_cmd.plot),
                      ("info", info_cmd.info), ("export", export_cmd.export_command)):
    app.command(name, help=_paragraphs(command.__doc__))(command)


def main() -> None:
    """The console script. Usage errors are printed as one line (the same funnel as ours) rather
    than Typer's boxed panel, so logs and scripts see `error: ...` whatever went wrong."""
    import sys

    from . import ui

    try:
        code = app(prog_name="tinygpt", standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except BrokenPipeError:  # `tinygpt ... | head`: the reader left; stop quietly, as SIGPIPE would
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except Exception as exc:
        # Click's usage errors (bad option values, unknown commands); Typer vendors Click, so the
        # class is recognised by its interface rather than imported from a private module
        if not (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None),
                                                              int)):
            raise
        message = exc.format_message()
        ctx = getattr(exc, "ctx", None)
        typed = getattr(exc, "option_name", None)
        if typed and ctx is not None and hasattr(exc, "possibilities"):  # an unknown option
            known = [o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts)]
            meant = suggest(typed, known)
            message = f"No such option: {typed}" + (f" (did you mean {', '.join(meant)}?)"
                                                     if meant else "")
        if message:  # empty when the help was shown for a bare `tinygpt`
            ui.error(message, f"see '{ctx.command_path} --help'" if ctx is not None else None)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
