"""How `--help` and a mistyped option read, for every command at once.

Typer (0.2x) prints each option's Python type as its value hint: `<bool>` after a flag that takes
no value, `<list[str]>`, `<path>`. And an option whose default is described in words prints it in
parentheses (`[default: (80)]`). A well-kept CLI shows flags as flags, a word for what a value is
(`TEXT`, `N`, `PATH`) and defaults one way everywhere; `use_plain_hints` makes Typer do that.
Click suggests a replacement for a mistyped option by spelling alone, so `--lr` got `--min-lr`;
`suggest` also knows abbreviations and initials (`--lr` is `--learning-rate`).
"""

from __future__ import annotations

import difflib

import typer.core

WORDS = {int: "N", float: "NUMBER", str: "TEXT"}


def value_hint(param) -> str | None:
    """The word after an option in --help: None for a flag, else what kind of value it takes."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return None
    if param.metavar is not None:
        return param.metavar
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(choice) for choice in desc.choices or ())
    if desc.is_path:
        return {"dir": "DIR", "file": "FILE"}.get(desc.path_type, "PATH")
    annotation = desc.annotation
    if desc.is_list:  # list[str]: a repeatable option, one value each time
        annotation = (getattr(annotation, "__args__", None) or (str,))[0]
    return WORDS.get(annotation, "TEXT")


def use_plain_hints() -> None:
    """Make Typer's help print `value_hint` and plain defaults (where this Typer has the hooks:
    the ones that print Python types; older ones print Click's own hints)."""
    option = typer.core.TyperOption
    for cls in (typer.core.TyperOption, typer.core.TyperArgument):
        if hasattr(cls, "display_type_rich"):
            cls.display_type_rich = _hint_or_typers(cls.display_type_rich)
    original = getattr(option, "_get_default_string", None)
    if original is not None and not getattr(original, "_plain", False):
        def plain_default(self, *, ctx, show_default_is_str, default_value):
            if show_default_is_str:  # a default described in words: shown as the others are
                return str(self.show_default)
            return original(self, ctx=ctx, show_default_is_str=show_default_is_str,
                            default_value=default_value)

        plain_default._plain = True
        option._get_default_string = plain_default


def _hint_or_typers(typers):
    def display_type_rich(self, ctx):
        if getattr(self, "type_descriptor", None) is None:  # a Typer we do not know
            return typers(self, ctx)
        return value_hint(self)

    return display_type_rich


def _initials(name: str) -> str:
    return "".join(word[0] for word in name.split("-") if word)


def suggest(typed: str, options: list[str], most: int = 3) -> list[str]:
    """The options a mistyped `typed` most likely meant: those it abbreviates (`--lr`:
    `--learning-rate`, `--max-it`: `--max-iters`) first, then the closest by spelling."""
    word = typed.lstrip("-").lower()
    longs = [o for o in options if o.startswith("--")]
    meant = [o for o in longs if word and (_initials(o[2:]) == word or o[2:].startswith(word))]
    close = difflib.get_close_matches(typed, longs, n=most, cutoff=0.7)
    return list(dict.fromkeys(meant + close))[:most]
