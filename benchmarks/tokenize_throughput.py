#!/usr/bin/env python
"""Tokenisation throughput: refinery's shard writer against raw `tokenizers` and datatrove.

Texts: ../shared/data/curated/{books,speeches,technical,code}.jsonl.gz (about 34 MB). Tokenizer:
a tokenizer.json given with --tokenizer (default: one trained here on the same files with
`refinery tokenizer train`'s settings, vocab 65,024, outside the timed part).

Engines, each in a fresh process with the same number of threads (--threads, default all cores):

  raw        Tokenizer.encode_batch(texts) in batches of --batch-size: the target's reference.
  raw_fast   Tokenizer.encode_batch_fast (no character offsets), which refinery calls: the floor.
  refinery   refinery.tokens.encode_documents (encode_batch_fast, ids into uint16 arrays, EOS
             appended) plus refinery.tokens.TokenShardWriter writing both Megatron .bin/.idx and
             datatrove .ds files.
  datatrove  datatrove 0.10.1's DocumentTokenizer (EOS appended, .ds/.ds.index/.ds.metadata,
             no shuffling) on a LocalPipelineExecutor with one task, reading the same texts from
             a Parquet file.

Usage:  .venv/bin/python benchmarks/tokenize_throughput.py [--repeat 3] [--json benchmarks/results/tokenize.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CURATED = ROOT.parent / "shared" / "data" / "curated"
SOURCES = ("books", "speeches", "technical", "code")
ENGINES = ("raw", "raw_fast", "refinery", "datatrove")


def load_texts() -> list[str]:
    texts = []
    for name in SOURCES:
        with gzip.open(CURATED / f"{name}.jsonl.gz", "rt", encoding="utf-8") as lines:
            texts += [json.loads(line)["text"] for line in lines if line.strip()]
    return texts


def child(engine: str, tokenizer_path: str, batch_size: int, parquet: str) -> dict:
    from refinery import tokenizer as tk
    from refinery.tokens import TokenShardWriter, encode_documents, token_dtype

    texts = load_texts()
    tokenizer = tk.load(tokenizer_path)
    out = tempfile.mkdtemp(prefix=f"refinery-bench-tok-{engine}-")
    tokens = 0
    started = time.perf_counter()
    if engine in ("raw", "raw_fast"):
        encode = tokenizer.encode_batch if engine == "raw" else tokenizer.encode_batch_fast
        for start in range(0, len(texts), batch_size):
            tokens += sum(len(e.ids) for e in encode(texts[start:start + batch_size]))
    elif engine == "refinery":
        dtype = token_dtype(tokenizer.get_vocab_size())
        writer = TokenShardWriter(out, "part-00000", tokenizer.get_vocab_size(), tokenizer_name="bench")
        for start in range(0, len(texts), batch_size):
            for ids in encode_documents(tokenizer, texts[start:start + batch_size], tk.eos_id(tokenizer), dtype):
                writer.add(ids)
        writer.close()
        tokens = writer.tokens - len(texts)  # without the EOS tokens, to compare with raw
    else:
        from datatrove.executor import LocalPipelineExecutor
        from datatrove.pipeline.readers import ParquetReader
        from datatrove.pipeline.tokens import DocumentTokenizer

        executor = LocalPipelineExecutor(pipeline=[
            ParquetReader(str(Path(parquet).parent), glob_pattern=Path(parquet).name),
            DocumentTokenizer(out, tokenizer_name_or_path=str(Path(tokenizer_path) / "tokenizer.json"),
                              eos_token=tk.EOS_TOKEN, batch_size=batch_size, shuffle_documents=False),
        ], tasks=1, workers=1, logging_dir=os.path.join(out, "logs"), skip_completed=False)
        executor.run()
        ds = next(Path(out).rglob("*.ds"))
        tokens = ds.stat().st_size // 2 - len(texts)
    seconds = time.perf_counter() - started
    mb = sum(len(t.encode()) for t in texts) / 1e6
    return {"engine": engine, "seconds": seconds, "mb": mb, "mb_per_s": mb / seconds, "tokens": tokens,
            "documents": len(texts)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", help="folder with tokenizer.json (default: train one first)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, tokenizer_path, batch_size, parquet = args.child
        print(json.dumps(child(engine, tokenizer_path, int(batch_size), parquet)))
        return 0
    if not CURATED.is_dir():
        raise SystemExit(f"shared data not available: {CURATED}")
    work = Path(tempfile.mkdtemp(prefix="refinery-bench-tok-"))
    texts = load_texts()
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = work / "texts.parquet"
    pq.write_table(pa.table({"text": texts, "id": [str(n) for n in range(len(texts))]}), parquet)
    tokenizer_path = args.tokenizer
    if not tokenizer_path:
        from refinery import tokenizer as tk

        tokenizer_path = str(work / "tokenizer")
        tk.save(tk.train(texts), tokenizer_path)
    runs: dict[str, list[dict]] = {e: [] for e in ENGINES}
    for round_ in range(args.repeat):
        for engine in ENGINES[round_ % len(ENGINES):] + ENGINES[:round_ % len(ENGINES)]:
            cmd = [sys.executable, __file__, "--child", engine, tokenizer_path, str(args.batch_size), str(parquet)]
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            runs[engine].append(result)
            print(f"[{round_ + 1}/{args.repeat}] {engine:9s} {result['seconds']:6.2f} s {result['mb_per_s']:5.2f} MB/s "
                  f"{result['tokens']:,} tokens", file=sys.stderr, flush=True)
    raw = statistics.median(r["seconds"] for r in runs["raw"])
    print("| engine | seconds, median (min) | MB/s | tokens (without EOS) | throughput vs raw encode_batch |")
    print("|---|---:|---:|---:|---:|")
    summary = {}
    for engine, rs in runs.items():
        median = statistics.median(r["seconds"] for r in rs)
        summary[engine] = {"seconds_median": median, "seconds_min": min(r["seconds"] for r in rs),
                           "mb_per_s": rs[0]["mb"] / median, "tokens": rs[0]["tokens"], "vs_raw": raw / median}
        s = summary[engine]
        print(f"| {engine} | {median:.2f} ({s['seconds_min']:.2f}) | {s['mb_per_s']:.2f} | {s['tokens']:,} "
              f"| {100 * s['vs_raw']:.0f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "tokenizer": tokenizer_path, "batch_size": args.batch_size, "summary": summary, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
