"""The package's layout rules, read from the source: no two modules import each other (directly
or round a longer circle), the readable model imports nothing of tinygpt but its config, the core
never imports Typer or Rich, and ui.py never imports torch."""

from __future__ import annotations

import ast
from pathlib import Path

import tinygpt_cli

ROOT = Path(tinygpt_cli.__file__).parent


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(tinygpt modules, other top-level packages) that a module imports anywhere in it, lazy
    imports inside functions included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            others |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module.startswith("tinygpt_cli"):
                ours.add(node.module)
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:  # `from . import fast` names a module, `from .x import y` not
                sub = f"{target}.{alias.name}"
                ours.add(sub if sub in known else target)
    ours.discard(name)
    return ours, others


def test_no_module_imports_in_a_circle():
    known = modules()
    graph = {name: imports(name, path, known)[0] for name, path in known.items()}
    assert "tinygpt_cli.fast.decode" in graph["tinygpt_cli.sampling"]  # the reader reads lazily
    circles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        state[node] = "done"
        stack.pop()

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []


def test_each_module_imports_what_its_layer_may():
    known = modules()
    ours, others = imports("tinygpt_cli.model", known["tinygpt_cli.model"], known)
    assert ours == {"tinygpt_cli.config"} and others <= {"__future__", "math", "torch"}
    for name, path in known.items():
        ours, others = imports(name, path, known)
        if name == "tinygpt_cli.ui":
            assert "torch" not in others
        elif not (name.startswith("tinygpt_cli.commands") or name == "tinygpt_cli.cli"):
            assert not {"typer", "rich"} & others, name
        if name.startswith("tinygpt_cli.fast"):
            assert not any(m.startswith("tinygpt_cli.commands") for m in ours), name
