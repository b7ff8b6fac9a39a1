"""`tinygpt tokenize` through Typer: JSON on stdout, one "error:" line per user mistake, no
traceback, nothing existing lost; plus the import-cost and `python -m` checks in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tinygpt_cli import data
from tinygpt_cli.cli import app
from tinygpt_cli.data import load_cache, verify_cache

SUMMARY_KEYS = {"characters", "tokens", "distinct_tokens", "vocab_size", "train_tokens",
                "valid_tokens", "tokens_per_character", "cache", "seconds", "cache_hit"}
DEFAULT_CORPUS = Path(__file__).resolve().parent.parent / "data" / "order_items.csv"


def invoke(*args: str | Path):
    # This Typer's CliRunner keeps stdout and stderr apart (result.output has both).
    return CliRunner().invoke(app, ["tokenize", *map(str, args)])


def run_json(*args: str | Path) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # stdout holds the JSON document and nothing else


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_user_error(result, exit_code: int, *fragments: str) -> str:
    """One "error:" line on stderr, the exit code, no traceback, nothing on stdout."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit)  # left through the funnel, not a crash
    assert "Traceback" not in result.output
    assert result.stdout == ""
    (line,) = error_lines(result)
    for fragment in fragments:
        assert fragment in line
    return line


@pytest.fixture
def built(corpus: Path, cache_root: Path) -> Path:
    """A valid cache built through the CLI before a failing command runs."""
    summary = run_json(corpus, "--cache-dir", cache_root)
    return Path(summary["cache"])


def assert_intact(folder: Path, tokens: int) -> None:
    assert verify_cache(folder) is None
    cache = load_cache(folder)
    assert len(cache.train) + len(cache.valid) == tokens


# --- the happy path ----------------------------------------------------------------------------

def test_json_summary_is_complete_and_consistent(corpus, cache_root, corpus_text):
    summary = run_json(corpus, "--cache-dir", cache_root)
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["cache_hit"] is False
    assert summary["characters"] == len(corpus_text)
    assert summary["train_tokens"] + summary["valid_tokens"] == summary["tokens"] > 0
    assert summary["train_tokens"] == int(summary["tokens"] * 0.9)
    assert summary["tokens_per_character"] == pytest.approx(
        summary["tokens"] / summary["characters"], abs=1e-4)
    assert 0 < summary["distinct_tokens"] <= summary["vocab_size"]
    cache = load_cache(Path(summary["cache"]))
    assert Path(summary["cache"]).parent == cache_root
    assert cache.vocab.size == summary["vocab_size"]
    assert len(cache.train) == summary["train_tokens"]
    assert summary["seconds"] >= 0


def test_second_run_is_a_cache_hit(corpus, cache_root):
    first = run_json(corpus, "--cache-dir", cache_root)
    second = run_json(corpus, "--cache-dir", cache_root)
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert second["tokens"] == first["tokens"] and second["cache"] == first["cache"]
    forced = run_json(corpus, "--cache-dir", cache_root, "--force")
    assert forced["cache_hit"] is False and forced["tokens"] == first["tokens"]


def test_options_reach_the_cache(corpus, cache_root):
    summary = run_json(corpus, "--cache-dir", cache_root, "--val-fraction", "0.5",
                       "--full-vocab", "--threads", "1")
    assert summary["vocab_mode"] == "full"
    assert summary["train_tokens"] == int(summary["tokens"] * 0.5)
    assert load_cache(Path(summary["cache"])).vocab.mode == "full"


def test_cache_dir_defaults_to_the_environment(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGPT_CACHE_DIR", str(tmp_path / "from-env"))
    summary = run_json(corpus)
    assert Path(summary["cache"]).parent == tmp_path / "from-env"


def test_table_goes_to_stderr_and_stdout_stays_empty(corpus, cache_root):
    result = invoke(corpus, "--cache-dir", cache_root)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "Tokenized" in result.stderr and "tokens" in result.stderr


def test_csv_column_through_the_cli(tmp_path, cache_root):
    path = tmp_path / "items.csv"
    path.write_text('title,price\n' + '"Socks, wool",3\nHat,4\n' * 20, encoding="utf-8")
    summary = run_json(path, "--column", "title", "--cache-dir", cache_root)
    cache = load_cache(Path(summary["cache"]))
    text = cache.vocab.decode([*cache.train, *cache.valid])
    assert text == "\n".join(["Socks, wool", "Hat"] * 20)


@pytest.mark.skipif(not DEFAULT_CORPUS.is_file(), reason="data/order_items.csv not generated yet")
def test_no_argument_uses_the_bundled_corpus(cache_root):
    result = CliRunner().invoke(app, ["tokenize", "--json", "--cache-dir", str(cache_root)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["source"] == str(DEFAULT_CORPUS)
    assert summary["tokens"] > 10_000


# --- user mistakes -----------------------------------------------------------------------------

def test_missing_path(tmp_path, cache_root):
    assert_user_error(invoke(tmp_path / "nope.txt", "--cache-dir", cache_root), 1,
                      "nope.txt", "no such file")


def test_directory(tmp_path, cache_root):
    assert_user_error(invoke(tmp_path, "--cache-dir", cache_root), 1, "holds no files to read")


@pytest.mark.parametrize("content", [b"", b" \n\n\t  \r\n"], ids=["empty", "whitespace"])
def test_no_text(tmp_path, cache_root, built, content):
    tokens = load_cache(built).meta["tokens"]
    path = tmp_path / "blank.txt"
    path.write_bytes(content)
    assert_user_error(invoke(path, "--cache-dir", cache_root), 1, "no text to train on")
    assert_intact(built, tokens)
    assert [p.name for p in cache_root.iterdir()] == [built.name]  # no temporary left


def test_binary_file(tmp_path, cache_root):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"header\x00\x01\x02\xff payload\n")
    assert_user_error(invoke(path, "--cache-dir", cache_root), 1, "NUL byte at offset 6")


def test_non_utf8_names_the_offset_then_replace_succeeds(tmp_path, cache_root):
    path = tmp_path / "latin1.txt"
    path.write_bytes("naïve café\n".encode("latin-1") * 20)
    assert_user_error(invoke(path, "--cache-dir", cache_root), 1,
                      "not UTF-8", "byte 0xef at offset 2")
    assert "--errors replace" in invoke(path, "--cache-dir", cache_root).stderr  # the hint
    summary = run_json(path, "--cache-dir", cache_root, "--errors", "replace")
    cache = load_cache(Path(summary["cache"]))
    assert "\ufffd" in cache.vocab.decode(cache.train)


def test_a_corpus_gone_bad_keeps_its_old_cache(corpus, cache_root, built):
    tokens = load_cache(built).meta["tokens"]
    corpus.write_bytes(b"caf\xe9\n" * 10)
    for extra in ([], ["--force"]):
        assert_user_error(invoke(corpus, "--cache-dir", cache_root, *extra), 1, "offset 3")
        assert_intact(built, tokens)
    assert [p.name for p in cache_root.iterdir()] == [built.name]


def test_csv_without_the_column(tmp_path, cache_root):
    path = tmp_path / "items.csv"
    path.write_text("title,price\nHat,4\n", encoding="utf-8")
    assert_user_error(invoke(path, "--column", "name", "--cache-dir", cache_root), 1,
                      "'name'", "'title', 'price'")


def test_unknown_encoding_is_a_usage_error(corpus, cache_root, built):
    tokens = load_cache(built).meta["tokens"]
    assert_user_error(invoke(corpus, "--encoding", "nope_base", "--cache-dir", cache_root), 2,
                      "nope_base", "cl100k_base")
    assert_intact(built, tokens)


def test_bad_option_values_are_usage_errors(corpus, cache_root):
    assert_user_error(invoke(corpus, "--val-fraction", "1.5", "--cache-dir", cache_root), 2,
                      "--val-fraction")
    assert_user_error(invoke(corpus, "--errors", "ignore", "--cache-dir", cache_root), 2,
                      "--errors")


def test_uncreatable_cache_dir(corpus, tmp_path):
    # We may run as root, which ignores permissions: a folder under a regular file can never be
    # created, whoever we are.
    blocker = tmp_path / "afile"
    blocker.write_text("a file, not a folder")
    assert_user_error(invoke(corpus, "--cache-dir", blocker / "cache"), 1,
                      "cannot write the token cache")
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root ignores directory permissions")
def test_read_only_cache_dir(corpus, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_user_error(invoke(corpus, "--cache-dir", locked), 1, "cannot write")
    finally:
        locked.chmod(0o700)


def test_interrupt_is_one_line_exit_130_and_leaves_nothing(corpus, cache_root, built,
                                                          monkeypatch):
    tokens = load_cache(built).meta["tokens"]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data, "_write_splits", interrupted)
    assert_user_error(invoke(corpus, "--cache-dir", cache_root, "--force"), 130, "interrupted")
    assert_intact(built, tokens)
    assert [p.name for p in cache_root.iterdir()] == [built.name]


def test_too_small_valid_split_warns_with_the_largest_context_that_fits(tmp_path, cache_root):
    path = tmp_path / "tiny.txt"
    path.write_text("a small corpus of a few dozen tokens, repeated a little. " * 4,
                    encoding="utf-8")
    result = invoke(path, "--cache-dir", cache_root, "--context-length", "64", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    fits = min(summary["train_tokens"], summary["valid_tokens"]) - 1
    assert 1 <= fits < 64
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert f"largest context length that fits is {fits}" in warnings[0]
    assert f"--context-length {fits}" in warnings[0]
    assert error_lines(result) == [] and "Traceback" not in result.output
    quiet = invoke(path, "--cache-dir", cache_root, "--context-length", str(fits), "--json")
    assert "warning:" not in quiet.stderr


# --- subprocesses ------------------------------------------------------------------------------

def _python(*args: str, cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_python_m_help(tmp_path):
    proc = _python("-m", "tinygpt_cli", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "tokenize" in proc.stdout and "Traceback" not in proc.stderr


def test_tokenize_never_imports_torch(corpus, tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from tinygpt_cli.cli import app\n"
        f"result = CliRunner().invoke(app, ['tokenize', {str(corpus)!r}])\n"
        "print(result.exit_code, 'torch' in sys.modules)\n"
    )
    proc = _python("-c", code, cwd=tmp_path, env={"TINYGPT_CACHE_DIR": str(tmp_path / "c")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "False"]  # the command ran, and without torch
