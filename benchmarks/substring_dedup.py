#!/usr/bin/env python
"""Exact-substring dedup throughput (MB/s of text) and peak memory, on real text.

Corpus: every document of ../shared/data/curated/*.jsonl.gz (books, speeches, Python docs and
code, mailing-list emails, wikitext: about 56 MB), plus with --web DIR the documents of a run
(a folder of refinery Parquet, e.g. OUT/filtered). The sizes measured are fractions of it, taken
as whole documents in a fixed shuffled order, so each size is a sample of the same mix.

Engines, each in a fresh process per size (so peak RSS is its own):

  refinery  stages.substring_dedup.find_repeats: whitespace tokens -> int32 ids, pydivsufsort's
            suffix array and Kasai LCP, windows of 50 tokens, keep the first occurrence.
  naive     the obvious pure-Python method: a dict from the hash of every 50-token window to its
            first position; later windows with a known hash are cut. Same result up to hash
            collisions; shown as the peer to beat.

Peak memory is the process's ru_maxrss after the run minus its RSS before the texts were
tokenised (the texts themselves are loaded before that and not counted).

Usage:  .venv/bin/python benchmarks/substring_dedup.py [--sizes 0.25,0.5,1] [--naive-max 0.25]
                                                       [--json benchmarks/results/substring_dedup.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CURATED = ROOT.parent / "shared" / "data" / "curated"
MIN_TOKENS = 50


def load_corpus(web: str | None) -> list[tuple[str, str]]:
    """(source, text) for every document, in a fixed shuffled order."""
    docs = []
    for path in sorted(CURATED.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            docs += [(path.name.split(".")[0], json.loads(line)["text"]) for line in lines if line.strip()]
    if web:
        import pyarrow.dataset as ds

        docs += [("web", t) for t in ds.dataset(web).to_table(columns=["text"]).column("text").to_pylist()]
    random.Random(0).shuffle(docs)
    return docs


def take(docs: list[tuple[str, str]], fraction: float) -> list[tuple[str, str]]:
    total = sum(len(t.encode()) for _, t in docs)
    out, size = [], 0
    for doc in docs:
        if size >= fraction * total:
            break
        out.append(doc)
        size += len(doc[1].encode())
    return out


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def naive_cut_tokens(texts: list[str], min_tokens: int) -> list[int]:
    seen: dict[int, int] = {}
    cut = []
    for d, text in enumerate(texts):
        tokens = text.split()
        covered = [False] * len(tokens)
        for i in range(len(tokens) - min_tokens + 1):
            key = hash(tuple(tokens[i:i + min_tokens]))
            if key in seen:
                for k in range(i, i + min_tokens):
                    covered[k] = True
            else:
                seen[key] = d
        cut.append(sum(covered))
    return cut


def child(engine: str, fraction: float, web: str | None) -> dict:
    docs = take(load_corpus(web), fraction)
    texts = [t for _, t in docs]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    before = rss_mib()
    started = time.perf_counter()
    if engine == "refinery":
        from refinery.stages.substring_dedup import find_repeats

        cut_tokens = find_repeats(texts, MIN_TOKENS).cut_tokens
    else:
        cut_tokens = naive_cut_tokens(texts, MIN_TOKENS)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = sum(len(t.split()) for t in texts)
    by_source: dict[str, list[int]] = {}
    for (source, _), n, text in zip(docs, cut_tokens, texts):
        row = by_source.setdefault(source, [0, 0, 0])
        row[0] += 1
        row[1] += len(text.split())
        row[2] += n
    return {"engine": engine, "fraction": fraction, "documents": len(texts), "mb": mb, "tokens": tokens,
            "seconds": seconds, "mb_per_s": mb / seconds, "peak_rss_mib": peak,
            "peak_over_start_mib": peak - before, "bytes_per_token_peak": (peak - before) * 2**20 / tokens,
            "cut_tokens": sum(cut_tokens), "documents_touched": sum(1 for n in cut_tokens if n),
            "by_source": {s: {"documents": r[0], "tokens": r[1], "cut_tokens": r[2]} for s, r in sorted(by_source.items())}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="0.25,0.5,1")
    parser.add_argument("--naive-max", type=float, default=0.25, help="largest fraction the naive peer runs on")
    parser.add_argument("--web", default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], float(args.child[1]), args.web)))
        return 0
    if not CURATED.is_dir():
        raise SystemExit(f"shared data not available: {CURATED}")
    runs = []
    for fraction in (float(x) for x in args.sizes.split(",")):
        for engine in ("refinery", "naive"):
            if engine == "naive" and fraction > args.naive_max:
                continue
            cmd = [sys.executable, __file__, "--child", engine, str(fraction)] + (["--web", args.web] if args.web else [])
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            runs.append(result)
            print(f"{engine:8s} {result['mb']:6.1f} MB {result['seconds']:7.2f} s {result['mb_per_s']:6.2f} MB/s "
                  f"peak +{result['peak_over_start_mib']:.0f} MiB ({result['bytes_per_token_peak']:.0f} B/token) "
                  f"cut {result['cut_tokens']:,} of {result['tokens']:,} tokens", file=sys.stderr, flush=True)
    print("| engine | text MB | tokens | seconds | MB/s | peak RSS over start, MiB | bytes per token | tokens cut | documents touched |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['engine']} | {r['mb']:.1f} | {r['tokens']:,} | {r['seconds']:.2f} | {r['mb_per_s']:.2f} "
              f"| {r['peak_over_start_mib']:.0f} | {r['bytes_per_token_peak']:.0f} | {r['cut_tokens']:,} "
              f"| {r['documents_touched']:,} |")
    largest = max((r for r in runs if r["engine"] == "refinery"), key=lambda r: r["mb"])
    print("\nTokens cut per source at the largest size (refinery):")
    for source, row in largest["by_source"].items():
        print(f"- {source}: {row['cut_tokens']:,} of {row['tokens']:,} tokens ({row['cut_tokens'] / max(row['tokens'], 1):.1%}) "
              f"in {row['documents']} documents")
    if args.json:
        report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "min_tokens": MIN_TOKENS, "runs": runs}
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
