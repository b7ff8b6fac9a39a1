"""Shared fixtures: a private token-cache folder for the whole session and a tiny corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

# English, Chinese and emoji lines with blank lines, trailing spaces, tabs and CRLF endings:
# the shapes tokenization and chunking must get right. About 4 KB, 1-2k tokens.
_LINES = [
    "Cotton t-shirt, size {i}, blue",
    "力士LUX 护发素 {i}g*3块 男士",
    "",
    "Stainless steel bottle {i}00 ml  ",
    "  indented line {i}\twith a tab",
    "咖啡豆 {i}kg ☕ 🚀 café naïve",
    "Windows line {i}\r",
]


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Point TINYGPT_CACHE_DIR at a temporary folder so no test ever writes to ~/.cache.

    Session-scoped (hypothesis refuses function-scoped fixtures); tests that need a cache of
    their own pass `cache_root` explicitly.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TINYGPT_CACHE_DIR", str(tmp_path_factory.mktemp("tinygpt-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core box OpenMP threads
    spin against other processes (up to 100x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _back_to_one_thread():
    """A command run in this process with --threads auto leaves torch on what it chose."""
    yield
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """The tiny corpus's text (its file is exactly these characters, UTF-8, no BOM)."""
    return "".join("\n".join(line.format(i=i) for line in _LINES) + "\n" for i in range(20))


@pytest.fixture
def corpus(tmp_path: Path, corpus_text: str) -> Path:
    """The tiny corpus as a file of its own."""
    path = tmp_path / "corpus.txt"
    path.write_bytes(corpus_text.encode("utf-8"))
    return path


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    """A token-cache folder private to one test (not created yet)."""
    return tmp_path / "cache"


@pytest.fixture
def token_cache(corpus: Path, cache_root: Path):
    """The tiny corpus's token cache (default settings: compact cl100k_base, 10% valid)."""
    from tinygpt_cli.data import prepare

    return prepare(corpus, cache_root=cache_root)
