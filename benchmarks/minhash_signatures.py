"""MinHash signature throughput at RefinedWeb's shape (9000 hashes = 450 bands x 20 rows).

Compares, on the same texts and on one core each:

- refinery: ``refinery.minhash.MinHasher.signatures`` (numba kernel), batched;
- datatrove: ``MinhashDedupSignature.get_shingles`` + ``get_signature`` per document, with
  ``MinhashConfig(num_buckets=450, hashes_per_bucket=20, hash_config=HashConfig(precision=32))``
  (32-bit values like refinery's); "datatrove-64" is its default 64-bit precision. Words are split
  on whitespace (its English tokenizer needs nltk/spacy, not installed), and shingles are encoded
  to UTF-8 before xxhash (datatrove 0.10.1 passes str, which current xxhash rejects);
- rensa: ``RMinHash(9000, seed).update(shingles)`` + ``digest()`` per document, on the same word
  5-gram strings as refinery (``refinery.minhash.shingles``);
- rensa-batch: ``RMinHash.digest_matrix_from_token_sets`` over the whole batch (``RAYON_NUM_THREADS=1``);
- datasketch: ``MinHash(num_perm=9000).update_batch`` on a subset (it is slow).

Every figure counts the whole path from raw text to signature: normalisation, shingling, hashing,
permutations. Corpora:

- "web": the English documents that refinery extracts from ../shared/data/web/dev-0000*.warc.gz.
  ``--parquet DIR`` uses the ``documents/*.parquet`` of an existing run instead.
- "articles": ../shared/data/dedup/minhash-articles/articles_2500.train.

Usage:  python benchmarks/minhash_signatures.py [--parquet DIR] [--repeat 3] [--datasketch-docs 20]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

# single core for everyone; set before numba or rensa (rayon) start their pools
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from refinery.minhash import MinHasher, shingles  # noqa: E402

BANDS, ROWS = 450, 20
NUM_PERM = BANDS * ROWS


def web_texts(parquet: str | None) -> list[str]:
    import pyarrow.parquet as pq
    if parquet is None:
        from refinery.config import load_config, with_overrides
        from refinery.pipeline.run import execute
        from refinery.io import expand_inputs
        inputs = sorted(glob.glob(str(SHARED / "web" / "dev-0000*.warc.gz")))
        if not inputs:
            raise SystemExit(f"no web shards under {SHARED / 'web'}")
        cfg = with_overrides(load_config(ROOT / "configs" / "english.yaml"), inputs=inputs)
        out_dir = tempfile.mkdtemp(prefix="minhash-bench-")
        execute(cfg, expand_inputs(cfg.spec.input.paths), out_dir, scheduler="sync")
        parquet = os.path.join(out_dir, "documents")
    files = sorted(glob.glob(os.path.join(parquet, "*.parquet")))
    return [t for f in files for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]


def article_texts() -> list[str]:
    path = SHARED / "dedup" / "minhash-articles" / "articles_2500.train"
    return [line.partition(" ")[2] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _datatrove_signer(precision: int):
    from datatrove_compat import stub_tokenizers

    stub_tokenizers()
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig
    from datatrove_compat import split_tokenizer

    step = MinhashDedupSignature(output_folder=tempfile.mkdtemp(prefix="dt-minhash-"),
                                 config=MinhashConfig(num_buckets=BANDS, hashes_per_bucket=ROWS,
                                                      hash_config=HashConfig(precision=precision)),
                                 language=split_tokenizer())
    # datatrove 0.10.1 passes str to xxhash, which xxhash >= 3.5 rejects; encode first as a fix would
    raw = step._hash_func
    step._hash_func = lambda s: raw(s.encode("utf-8"))
    step.parameters  # draw the permutation parameters outside the timed region
    return step


def run_refinery(texts):
    mh = MinHasher(NUM_PERM, BANDS, ROWS)
    return lambda: mh.signatures(texts)


def run_datatrove(texts, precision=32):
    step = _datatrove_signer(precision)
    def go():
        for t in texts:
            sh = step.get_shingles(t)
            if sh.size:
                step.get_signature(sh)
    return go


def run_rensa(texts):
    import rensa
    def go():
        for t in texts:
            m = rensa.RMinHash(NUM_PERM, 42)
            m.update(shingles(t))
            m.digest()
    return go


def run_rensa_batch(texts):
    import rensa
    return lambda: rensa.RMinHash.digest_matrix_from_token_sets([shingles(t) for t in texts], NUM_PERM, 42)


def run_datasketch(texts):
    import datasketch
    proto = datasketch.MinHash(num_perm=NUM_PERM, seed=1)  # permutations drawn once, outside the timing
    def go():
        for t in texts:
            m = datasketch.MinHash(num_perm=NUM_PERM, seed=1, permutations=proto.permutations,
                                   scheme=proto.scheme)
            m.update_batch([s.encode("utf-8") for s in shingles(t)])
            m.digest()
    return go


def timeit(fn, repeat: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run)."""
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        w, c = time.perf_counter() - w, time.process_time() - c
        best = min(best, (w, c))
    return best


def bench(name: str, texts: list[str], repeat: int, ds_docs: int) -> list[tuple]:
    words = sum(len(s.split()) for s in texts[:200]) / max(1, min(200, len(texts)))
    print(f"\n[{name}] {len(texts)} docs, ~{words:.0f} words/doc (first 200)", flush=True)
    MinHasher(NUM_PERM, BANDS, ROWS).signatures(texts[:2])  # numba compile / cache load
    rows = []
    for engine, make, sub in (("refinery", run_refinery, texts), ("datatrove", run_datatrove, texts),
                              ("datatrove-64", lambda t: run_datatrove(t, 64), texts),
                              ("rensa", run_rensa, texts), ("rensa-batch", run_rensa_batch, texts),
                              ("datasketch", run_datasketch, texts[:ds_docs])):
        if not sub:
            continue
        try:
            fn = make(sub)
        except ImportError as err:
            print(f"  {engine}: skipped ({err})")
            continue
        wall, cpu = timeit(fn, repeat if engine in ("refinery", "rensa", "rensa-batch") else 1)
        rows.append((name, engine, len(sub), wall, cpu, len(sub) / wall, len(sub) / cpu))
        print(f"  {engine:12s} {len(sub):5d} docs  {wall:7.2f} s  cpu {cpu:7.2f} s  {len(sub) / wall:8.1f} docs/s"
              f"  {len(sub) / cpu:8.1f} docs/CPU-s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parquet", help="documents/ folder of an existing refinery run (skips the extraction)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed runs for refinery and rensa, the best kept (datatrove, datasketch: one run)")
    ap.add_argument("--datasketch-docs", type=int, default=20, help="subset size for datasketch (0: skip)")
    ap.add_argument("--skip-articles", action="store_true")
    args = ap.parse_args()
    rows = bench("web", web_texts(args.parquet), args.repeat, args.datasketch_docs)
    if not args.skip_articles:
        rows += bench("articles", article_texts(), args.repeat, args.datasketch_docs)
    print("\n| corpus | engine | docs | best wall s | CPU s | docs/s (wall) | docs/CPU-s "
          "| refinery speedup (wall) | refinery speedup (CPU) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for corpus, engine, n, wall, cpu, rate, crate in rows:
        ref = next(r for r in rows if r[0] == corpus and r[1] == "refinery")
        print(f"| {corpus} | {engine} | {n} | {wall:.2f} | {cpu:.2f} | {rate:.0f} | {crate:.0f} "
              f"| {ref[5] / rate:.1f}x | {ref[6] / crate:.1f}x |")


if __name__ == "__main__":
    main()
