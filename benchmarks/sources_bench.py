"""Your own data at scale: `tinygpt tokenize` on a folder of 20,000 small text files (~200 MB)
and on one ~200 MB JSONL file, against tiktoken's own `encode_ordinary_batch` over the same
documents in the same run; its peak memory; and a second `tokenize` (a cache hit).

    python benchmarks/sources_bench.py                       # 20,000 files, 200 MB each kind
    python benchmarks/sources_bench.py --files 2000 --mb 20  # a quick look

Every figure is a whole process (`python -m tinygpt_cli tokenize ... --json`, and a process
that reads the same documents and calls `encode_ordinary_batch` on batches of 1,000 with its
default 8 threads, keeping no ids), median of --repeats, the two sides alternating. Peak memory
is the process's maximum resident set (wait4's ru_maxrss); a cache hit is timed three times
after each build. The text is English prose made from
--text (default: the benchmark corpus beside this repository, else words drawn at random).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"

BASELINE = r"""
import json, sys, tiktoken
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tinygpt_cli.tokenizer import get_encoding
enc = get_encoding("cl100k_base")
kind, where = sys.argv[1], Path(sys.argv[2])
def documents():
    if kind == "folder":
        for path in sorted(where.rglob("*.txt")):
            yield path.read_text(encoding="utf-8")
    else:
        with open(where, "rb") as f:
            for line in f:
                yield json.loads(line)["text"]
batch, tokens = [], 0
for doc in documents():
    batch.append(doc)
    if len(batch) == 1000:
        tokens += sum(map(len, enc.encode_ordinary_batch(batch)))
        batch = []
tokens += sum(map(len, enc.encode_ordinary_batch(batch)))
print(tokens)
"""


def make_text(source: Path | None, seed: int = 0):
    """An endless supply of English-like paragraphs."""
    rng = random.Random(seed)
    if source is not None and source.is_file():
        lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line]
        while True:
            start = rng.randrange(len(lines) - 40)
            yield "\n".join(lines[start:start + rng.randrange(8, 40)]) + "\n"
    words = ["the", "of", "and", "to", "in", "is", "was", "that", "for", "on", "with", "as",
             "by", "at", "from", "his", "her", "they", "this", "which", "river", "market",
             "evening", "letter", "garden", "morning", "quietly", "remember", "silver"]
    while True:
        yield " ".join(rng.choice(words) for _ in range(rng.randrange(60, 300))) + ".\n"


def make_folder(where: Path, files: int, mb: float, text) -> int:
    per_file = int(mb * 1e6 / files)
    total = 0
    for i in range(files):
        folder = where / f"part{i // 1000:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        body = ""
        while len(body.encode()) < per_file:
            body += next(text)
        (folder / f"note{i:05d}.txt").write_text(body, encoding="utf-8")
        total += len(body.encode())
    return total


def make_jsonl(path: Path, mb: float, text) -> int:
    total = 0
    with open(path, "w", encoding="utf-8") as f:
        while total < mb * 1e6:
            body = next(text) + next(text)
            f.write(json.dumps({"id": total, "text": body}) + "\n")
            total += len(body.encode())
    return total


def timed(args: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS in bytes and stdout of one whole process."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise SystemExit(f"{' '.join(args)} failed ({proc.returncode})")
        out.seek(0)
        return seconds, usage.ru_maxrss * 1024, out.read().decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--mb", type=float, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--text", type=Path, default=SHAKESPEARE)
    parser.add_argument("--work", type=Path, default=None, help="where to build (default: /tmp)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tinygpt-sources-", dir=args.work))
    python = sys.executable
    try:
        text = make_text(args.text)
        sources = {"folder": work / "notes", "jsonl": work / "export.jsonl"}
        sizes = {"folder": make_folder(sources["folder"], args.files, args.mb, text),
                 "jsonl": make_jsonl(sources["jsonl"], args.mb, text)}
        print(f"made {args.files:,} files ({sizes['folder'] / 1e6:.0f} MB of text) and a JSONL "
              f"file ({sizes['jsonl'] / 1e6:.0f} MB of text) in {work}")
        for kind, source in sources.items():
            raw, ours, rss, hits = [], [], [], []
            tokens = None
            for repeat in range(args.repeats):
                cache = work / f"cache-{kind}-{repeat}"
                sides = ["raw", "ours"] if repeat % 2 == 0 else ["ours", "raw"]
                for side in sides:
                    if side == "raw":
                        seconds, _, out = timed([python, "-c", BASELINE, kind, str(source),
                                                 str(ROOT)])
                        raw.append(seconds)
                        tokens = int(out)
                    else:
                        seconds, peak, out = timed([python, "-m", "tinygpt_cli", "tokenize",
                                                    str(source), "--cache-dir", str(cache),
                                                    "--json"])
                        ours.append(seconds)
                        rss.append(peak)
                        summary = json.loads(out)
                        for _ in range(3):  # a hit is short: three of them each time
                            hit, _, again = timed([python, "-m", "tinygpt_cli", "tokenize",
                                                   str(source), "--cache-dir", str(cache),
                                                   "--json"])
                            assert json.loads(again)["cache_hit"], "a second run was no hit"
                            hits.append(hit)
                shutil.rmtree(cache, ignore_errors=True)
            ratio = statistics.median(raw) / statistics.median(ours)
            print(f"{kind}: {summary['files']:,} files, {summary['documents']:,} documents, "
                  f"{summary['tokens']:,} tokens (tiktoken alone: {tokens:,} without "
                  f"separators)")
            print(f"  tokenize        {statistics.median(ours):6.2f} s "
                  f"({min(ours):.2f}-{max(ours):.2f}), "
                  f"{sizes[kind] / 1e6 / statistics.median(ours):.1f} MB/s")
            print(f"  encode_ordinary_batch {statistics.median(raw):6.2f} s "
                  f"({min(raw):.2f}-{max(raw):.2f})")
            print(f"  throughput ratio {ratio:.2f}x of raw (target >= 0.6x)")
            print(f"  peak RSS        {statistics.median(rss) / 2**20:.0f} MiB "
                  f"(max {max(rss) / 2**20:.0f}; target <= 500 MB)")
            print(f"  cache hit       {statistics.median(hits):.2f} s "
                  f"({min(hits):.2f}-{max(hits):.2f}; target < 1 s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
