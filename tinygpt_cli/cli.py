"""The `tinygpt` command: a Typer app whose commands are thin wrappers over the core."""

from __future__ import annotations

from typing import Annotated

import typer

from . import __version__
from .commands import tokenize_cmd, train_cmd

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


app.command("tokenize")(tokenize_cmd.tokenize)
app.command("train")(train_cmd.train)


def main() -> None:
    app(prog_name="tinygpt")
