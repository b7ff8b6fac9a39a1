"""A write that fails part way (a full disk) is one line naming the path, exit code 1, and leaves
nothing partial behind: what was there before (a cache, a checkpoint, an image) is unchanged.

The commands run in their own process under a file-size limit (RLIMIT_FSIZE, with SIGXFSZ
ignored), so a write past the limit fails inside the kernel with EFBIG, exactly where a full disk
fails with ENOSPC: every layer between (Python's buffered files, torch.save's stream writer,
matplotlib) is the real one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import train_tiny

from tinygpt_cli.metrics import MetricsWriter

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX resource limits")


def run_limited(limit: int, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`tinygpt ARGS` where no file may grow past `limit` bytes."""
    def with_limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "tinygpt_cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=180, preexec_fn=with_limit,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def one_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture(scope="module")
def run(tmp_path_factory, corpus_text):
    root = tmp_path_factory.mktemp("diskfull")
    corpus = root / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    out = root / "run" / "model.ckpt"
    train_tiny(out, corpus, root / "cache", max_iters=2, eval_interval=1, eval_iters=1)
    return root, corpus, out


def test_a_full_disk_while_tokenizing_keeps_the_caches_there_were(run, tmp_path):
    root, corpus, _ = run
    cache = tmp_path / "cache"
    done = run_limited(1 << 30, tmp_path, "tokenize", str(corpus), "--cache-dir", str(cache))
    assert done.returncode == 0, done.stderr
    before = snapshot(cache)
    big = tmp_path / "big.txt"
    big.write_text("".join(f"line {i} of a corpus too big for the disk\n" for i in range(20_000)))
    proc = run_limited(50_000, tmp_path, "tokenize", str(big), "--cache-dir", str(cache))
    one_error(proc, "could not write the token cache", str(cache), "File too large")
    assert snapshot(cache) == before  # nothing new, nothing partial, the old cache intact


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_last_one(run, tmp_path):
    root, corpus, out = run
    earlier = tmp_path / "model.ckpt"
    earlier.write_bytes(out.read_bytes())
    before = snapshot(tmp_path)
    # the checkpoint is ~200 KB; the cache and metrics files are far below the limit
    proc = run_limited(100_000, tmp_path, "train", "--resume", str(earlier), "--out",
                       str(earlier), "--data", str(corpus), "--cache-dir", str(root / "cache"),
                       "--max-iters", "4")
    one_error(proc, "could not write the checkpoint", str(tmp_path), "File too large")
    after = snapshot(tmp_path)
    assert after["model.ckpt"] == before["model.ckpt"]
    assert not [name for name in after if ".tmp" in name]


def test_a_full_disk_while_writing_a_plot_keeps_the_earlier_image(run, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, out = run
    image = tmp_path / "loss.png"
    assert run_limited(1 << 30, tmp_path, "plot", str(out), "-o", str(image)).returncode == 0
    before = snapshot(tmp_path)
    proc = run_limited(4_000, tmp_path, "plot", str(out), "-o", str(image))
    one_error(proc, f"could not write {image}", "File too large")
    assert snapshot(tmp_path) == before


def test_a_full_disk_while_writing_metrics_warns_and_the_run_goes_on(run, tmp_path,
                                                                      monkeypatch):
    """In-process: the disk fills part way through the third metrics record (half of it is
    written, then the write fails). Metrics are a record of the run, not the run: it warns once
    naming the file, trains to the end, saves; the file keeps its whole records, none cut."""
    import json

    from typer.testing import CliRunner

    from tinygpt_cli import checkpoint as ckpt
    from tinygpt_cli.cli import app

    root, corpus, _ = run

    class FillingDisk:
        """The metrics file, on a disk that fills during the third record."""

        def __init__(self, file):
            self.file, self.records = file, 0

        def write(self, data):
            self.records += 1
            if self.records == 3:
                return self.file.write(data[: len(data) // 2])  # a short write...
            if self.records > 3:
                raise OSError(28, "No space left on device")  # ...then no room at all
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

    enter = MetricsWriter.__enter__

    def filling_enter(self):
        enter(self)
        if self._file is not None:
            self._file = FillingDisk(self._file)
        return self

    monkeypatch.setattr(MetricsWriter, "__enter__", filling_enter)
    out = tmp_path / "run" / "model.ckpt"
    result = CliRunner().invoke(app, [
        "train", "--data", str(corpus), "--out", str(out), "--cache-dir", str(root / "cache"),
        "--max-iters", "6", "--eval-interval", "1", "--eval-iters", "1", "--d-model", "16",
        "--num-blocks", "1", "--num-heads", "2", "--context-length", "16"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    metrics = out.with_name("model.metrics.jsonl")
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert f"could not write the metrics file {metrics}: No space left on device" in line
    assert ckpt.load(out)["step"] == 6  # trained to the end and saved
    records = [json.loads(x) for x in metrics.read_text().splitlines()]  # every line whole
    assert [r["step"] for r in records if r["type"] == "eval"] == [0, 1]
    assert not [p for p in out.parent.iterdir() if ".tmp" in p.name]
