#!/usr/bin/env python
"""Corpus-wide dedup benchmark: total fuzzy-dedup wall time against datatrove, and Dask worker memory.

Two sub-benchmarks:

  speed   Total MinHash fuzzy-dedup wall time, refinery against datatrove 0.10.1's four MinHash
          stages, at RefinedWeb's shape (word 5-grams, 450 buckets x 20 hashes = 9000 hashes), on the
          same documents and the same number of worker processes.

          Documents: ../shared/data/dedup/minhash-articles/articles_2500.train (2500 news articles with
          20 planted near-duplicate pairs, listed in articles_2500.truth), plus with --web DIR the
          documents of an earlier run (any folder of refinery.pipeline.chain.DOCUMENT_SCHEMA Parquet files,
          e.g. a run's documents/). They are written once as --shards K zstd Parquet files of
          DOCUMENT_SCHEMA; both engines read these same files.

          refinery  the files are copied into OUT/filtered/ (untimed), then, timed:
                    distributed.LocalCluster(n_workers=2, threads_per_worker=1) + Client, then
                    refinery.pipeline.run.deduplicate() under dask.config.set(dataframe.shuffle.method=tasks),
                    then client/cluster close. The config has only `dedup: [{minhash_dedup: {}}]`
                    (defaults: 450 bands x 20 rows, 5-grams, verify off). Two variants:
                    "refinery" (jaccard_to_kept: true, the default, which computes each duplicate's
                    true Jaccard to its kept document for clusters.parquet) and "refinery-nojaccard"
                    (jaccard_to_kept: false). The total includes the worker start-up and shutdown,
                    because datatrove's total includes the start-up of its process pools.
          datatrove MinhashDedupSignature -> MinhashDedupBuckets -> MinhashDedupCluster ->
                    MinhashDedupFilter (+ ParquetWriter, as refinery rewrites documents/), each a
                    LocalPipelineExecutor with workers=2: signatures tasks=K, buckets tasks=450 (its API:
                    tasks must be a multiple of num_buckets), cluster tasks=1 (its API: world size 1,
                    so it runs in the driver process), filter tasks=K. Config:
                    MinhashConfig(n_grams=5, num_buckets=450, hashes_per_bucket=20) with its default
                    HashConfig (64-bit xxhash). Two adjustments, as in benchmarks/minhash_signatures.py:
                    a whitespace WordTokenizer (its English one needs nltk/spacy, not installed) and
                    shingles encoded to UTF-8 before xxhash (datatrove 0.10.1 passes str, which the
                    installed xxhash rejects); `tokenizers` is stubbed for the import.

          Each engine run is a fresh Python process (this script with --child); the total is timed
          inside it, after imports. Removed documents and clusters are read back after the timing:
          refinery's dedup/clusters.parquet, datatrove's .dups pairs (union-find) and .remove files.

  memory  Peak RSS of the Dask workers during dedup, at 1x and 4x input. The shared web shards
          (../shared/data/web/*.warc.gz) are copied 4 times into a temp dir with warcio: copy k
          rewrites every record's WARC-Target-URI host to `copy{k}.<host>` and its WARC-Record-ID
          (and any WARC-Concurrent-To / WARC-Refers-To / WARC-Warcinfo-ID) to uuid5(copy k, old id);
          gzip is kept. 1x = copy 0 (4 shards), 4x = copies 0-3 (16 shards). Each scale runs
          refinery.pipeline.run.execute() (what `refinery run` does) in a fresh process with
          configs/english.yaml, its extract stage switched to `extractor: resiliparse,
          isolation: inline`, 2 workers. A background thread samples the RSS of every descendant
          process (the LocalCluster worker processes; the nannies live in the driver) every 50 ms;
          refinery.pipeline.run.Progress(on_phase=...) marks the start of the dedup phase and splits the
          samples: "map" = map tasks and the per-shard keys tasks (which run with the map tasks),
          "dedup" = the corpus-wide resolution and the per-shard rewrite. The workers enter dedup
          holding what the map phase left (~1 GiB), so each run then also calls deduplicate() twice
          on fresh workers (a new LocalCluster, dedup markers removed) over the same filtered/
          documents: with english.yaml's dedup stages, and with minhash_dedup alone (the copies are
          exact duplicates, so in the full chain exact_dedup removes them before MinHash sees them).

Usage:
  .venv/bin/python benchmarks/dedup.py speed --repeat 2     # -> benchmarks/results/dedup_speed.json
  .venv/bin/python benchmarks/dedup.py memory               # -> benchmarks/results/dedup_memory.json
  .venv/bin/python benchmarks/dedup.py all
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
ARTICLES = SHARED / "dedup" / "minhash-articles" / "articles_2500.train"
TRUTH = SHARED / "dedup" / "minhash-articles" / "articles_2500.truth"
WEB_GLOB = str(SHARED / "web" / "*.warc.gz")
CONFIG = ROOT / "configs" / "english.yaml"
RESULTS = ROOT / "benchmarks" / "results"
THREAD_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
BANDS, ROWS, NGRAM = 450, 20, 5
SPEED_ENGINES = ("refinery", "refinery-nojaccard", "datatrove")
SCALES = (1, 4)

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


# At import, so that datatrove's forkserver pool processes (which import this module as
# __mp_main__ before unpickling a pipeline) get the stub too.
from datatrove_compat import stub_tokenizers  # noqa: E402
from map_phase import OFFLINE_ENV, ProcessTreeSampler, run_measured  # noqa: E402

stub_tokenizers()


# ---------------------------------------------------------------------------------------------
# RSS sampling
# ---------------------------------------------------------------------------------------------

class RssSampler(ProcessTreeSampler):
    """Samples, every `interval` seconds, the RSS of `pid` (the driver) and of each of its
    descendants (worker processes), in a daemon thread."""

    sample_at_edges = True

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(pid, interval)
        self.samples: list[tuple[float, int, dict[int, int]]] = []  # (perf_counter, driver rss, {pid: rss})
        self.kinds: dict[int, str] = {}

    def _kind(self, proc) -> str:
        try:
            cmd = " ".join(proc.cmdline())
        except self._psutil.Error:
            return "?"
        for marker, kind in (("resource_tracker", "resource_tracker"), ("forkserver", "forkserver/pool"),
                             ("spawn_main", "spawned worker")):
            if marker in cmd:
                return kind
        return cmd[-80:]

    def _sample(self) -> None:
        now = time.perf_counter()
        try:
            driver = self.root.memory_info().rss
            children = self.root.children(recursive=True)
        except self._psutil.Error:
            return
        per = {}
        for proc in children:
            try:
                per[proc.pid] = proc.memory_info().rss
            except self._psutil.Error:
                continue
            if proc.pid not in self.kinds:
                self.kinds[proc.pid] = self._kind(proc)
        self.samples.append((now, driver, per))

    def window(self, start: float = float("-inf"), end: float = float("inf")) -> dict:
        """Peaks over the samples taken in [start, end)."""
        rows = [s for s in self.samples if start <= s[0] < end]
        mib = 1 / 2**20
        if not rows:
            return {"samples": 0}
        per_pid: dict[int, int] = {}
        first: dict[int, int] = {}
        for _, _, per in rows:
            for pid, rss in per.items():
                per_pid[pid] = max(per_pid.get(pid, 0), rss)
                first.setdefault(pid, rss)
        return {
            "samples": len(rows),
            "seconds": round(rows[-1][0] - rows[0][0], 2),
            "peak_worker_rss_mib": round(max((max(p.values(), default=0) for _, _, p in rows)) * mib, 1),
            # each process's RSS at the start of the window, and its largest growth within the window
            "start_worker_rss_mib": round(max(first.values(), default=0) * mib, 1),
            "peak_increment_mib": round(max((per_pid[pid] - first[pid] for pid in per_pid), default=0) * mib, 1),
            "peak_workers_total_rss_mib": round(max(sum(p.values()) for _, _, p in rows) * mib, 1),
            "peak_driver_rss_mib": round(max(d for _, d, _ in rows) * mib, 1),
            "processes": {str(pid): {"kind": self.kinds.get(pid, "?"), "peak_rss_mib": round(rss * mib, 1)}
                          for pid, rss in sorted(per_pid.items())},
        }

    def timeline(self, origin: float, step: float = 1.0) -> list[dict]:
        """Per `step` seconds since `origin`: the largest single-worker RSS, summed worker RSS, driver RSS (MiB)."""
        buckets: dict[int, list] = {}
        for t, driver, per in self.samples:
            b = buckets.setdefault(int((t - origin) // step), [0, 0, 0])
            b[0] = max(b[0], max(per.values(), default=0))
            b[1] = max(b[1], sum(per.values()))
            b[2] = max(b[2], driver)
        return [{"t": k * step, "max_worker_mib": round(v[0] / 2**20, 1), "workers_total_mib": round(v[1] / 2**20, 1),
                 "driver_mib": round(v[2] / 2**20, 1)} for k, v in sorted(buckets.items())]


# ---------------------------------------------------------------------------------------------
# speed: input documents
# ---------------------------------------------------------------------------------------------

def article_rows() -> list[dict]:
    rows = []
    for line in ARTICLES.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        doc_id, _, text = line.partition(" ")
        rows.append({"id": doc_id, "url": f"https://articles.invalid/{doc_id}", "warc_date": "2024-01-01T00:00:00Z",
                     "source": "articles", "language": "en", "language_score": 1.0, "text": text})
    return rows


def web_rows(folder: str) -> list[dict]:
    import pyarrow.parquet as pq

    from refinery.pipeline.chain import DOCUMENT_SCHEMA

    files = sorted(glob.glob(os.path.join(folder, "*.parquet"))) if os.path.isdir(folder) else sorted(glob.glob(folder))
    if not files:
        raise SystemExit(f"--web {folder}: no Parquet files")
    return [row for f in files for row in pq.read_table(f).select(DOCUMENT_SCHEMA.names).cast(DOCUMENT_SCHEMA).to_pylist()]


def write_shards(rows: list[dict], folder: Path, k: int) -> list[Path]:
    """Contiguous slices of `rows` as k zstd Parquet files of DOCUMENT_SCHEMA."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.pipeline.chain import DOCUMENT_SCHEMA

    folder.mkdir(parents=True, exist_ok=True)
    bounds = [round(i * len(rows) / k) for i in range(k + 1)]
    paths = []
    for i in range(k):
        path = folder / f"shard-{i:02d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[bounds[i]:bounds[i + 1]], schema=DOCUMENT_SCHEMA), path,
                       compression="zstd")
        paths.append(path)
    return paths


def truth_pairs() -> list[tuple[str, str]]:
    return [tuple(line.split()[:2]) for line in TRUTH.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# speed: children
# ---------------------------------------------------------------------------------------------

def _child_refinery(data_dir: str, out: str, workers: int, jaccard_to_kept: bool) -> dict:
    import pyarrow.parquet as pq

    from refinery.config import parse_config
    from refinery.engine import Engine
    from refinery.io import InputShard
    from refinery.minhash import MinHasher
    from refinery.pipeline.run import Progress, deduplicate

    config = parse_config({
        "name": "dedup-bench",
        "stages": [{"language_id": {"languages": ["en"]}}],  # never run: the map phase is skipped
        "dedup": [{"minhash_dedup": {"jaccard_to_kept": jaccard_to_kept}}],
        "run": {"workers": workers, "dashboard": False},
    })
    spec = config.dedup[0].config
    assert (spec.bands, spec.rows, spec.ngram, spec.verify) == (BANDS, ROWS, NGRAM, False), spec
    files = sorted(Path(data_dir).glob("*.parquet"))
    filtered = Path(out) / "filtered"
    filtered.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, filtered / f.name)
    shards = [InputShard(path=str(f), shard_id=f.stem) for f in files]
    MinHasher(BANDS * ROWS, BANDS, ROWS).signatures(["warm the numba cache"])  # compile/cache outside the timing

    marks: dict[str, float] = {}
    progress = Progress(on_phase=lambda message: marks.setdefault("keys_done", time.perf_counter()))
    with RssSampler(os.getpid()) as rss:
        t0 = time.perf_counter()
        with Engine(workers=workers, shuffle="tasks") as engine:
            t1 = time.perf_counter()
            applied, summary = deduplicate(config, shards, out, engine, progress=progress)
            t2 = time.perf_counter()
        t3 = time.perf_counter()

    stage = summary["per_stage"]["minhash_dedup"]
    resolve_s = summary["timings"]["resolve_seconds"]
    keys_wall = marks["keys_done"] - t1
    clusters = pq.read_table(Path(out) / "dedup" / "clusters.parquet", columns=["id", "cluster_id", "kept"]).to_pylist()
    return {
        "wall_s": t3 - t0,
        "phases_s": {"cluster_start": t1 - t0, "keys": keys_wall, "resolve": resolve_s,
                     "apply": t2 - marks["keys_done"] - resolve_s, "cluster_close": t3 - t2},
        "dedup_only_s": t2 - t1,
        "task_seconds": summary["timings"],
        "docs_in": sum(r.funnel[0]["docs_in"] for r in applied),
        "docs_out": sum(r.documents for r in applied),
        "removed": stage["removed"],
        "clusters": stage["clusters"],
        "cluster_of": {r["id"]: r["cluster_id"] for r in clusters},
        "removed_ids": sorted(r["id"] for r in clusters if not r["kept"]),
        "rss": rss.window(t0, t3),
    }


def _xxh64_utf8(text: str) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(text.encode("utf-8"))


def _xxh32_utf8(text: str) -> int:
    import xxhash

    return xxhash.xxh32_intdigest(text.encode("utf-8"))


def _child_datatrove(data_dir: str, out: str, workers: int) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter
    from datatrove_compat import split_tokenizer

    files = sorted(Path(data_dir).glob("*.parquet"))
    k = len(files)
    config = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
    out_p = Path(out)
    folders = {name: str(out_p / name) for name in ("signatures", "buckets", "remove", "documents", "logs")}
    signature = MinhashDedupSignature(output_folder=folders["signatures"], config=config, language=split_tokenizer())
    # datatrove 0.10.1 hashes str shingles; the installed xxhash only takes bytes
    signature._hash_func = _xxh64_utf8 if config.hash_config.precision == 64 else _xxh32_utf8

    def reader():
        return ParquetReader(data_dir, glob_pattern="*.parquet")

    plan = [
        ("signatures", [reader(), signature], k, workers),
        ("buckets", [MinhashDedupBuckets(input_folder=folders["signatures"], output_folder=folders["buckets"],
                                         config=config)], BANDS, workers),
        ("cluster", [MinhashDedupCluster(input_folder=folders["buckets"], output_folder=folders["remove"],
                                         config=config)], 1, 1),
        ("filter", [reader(), MinhashDedupFilter(input_folder=folders["remove"]),
                    ParquetWriter(folders["documents"], compression="zstd")], k, workers),
    ]
    stage_s = {}
    with RssSampler(os.getpid()) as rss:
        t0 = time.perf_counter()
        for name, pipeline, tasks, n_workers in plan:
            started = time.perf_counter()
            LocalPipelineExecutor(pipeline, tasks=tasks, workers=n_workers, skip_completed=False,
                                  logging_dir=os.path.join(folders["logs"], name)).run()
            stage_s[name] = time.perf_counter() - started
        t1 = time.perf_counter()

    # --- read back, untimed: ids per (rank, doc index); rank r read files[r] (k tasks, k files)
    ids = [pq.read_table(f, columns=["id"]).column("id").to_pylist() for f in files]
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    pairs = 0
    for dups in Path(folders["buckets"]).glob("*.dups"):
        data = dups.read_bytes()
        for f1, d1, f2, d2 in struct.iter_unpack("<4I", data):
            pairs += 1
            ra, rb = find((f1, d1)), find((f2, d2))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    cluster_of = {ids[f][d]: "/".join(map(str, find((f, d)))) for f, d in list(parent)}
    removed_ids = []
    for rank in range(k):
        path = Path(folders["remove"]) / f"{rank:06d}.remove"
        if path.exists():
            removed_ids += [ids[rank][int(i)] for i in np.frombuffer(path.read_bytes(), dtype="<u4")]
    filter_stats = json.loads(Path(folders["logs"], "filter", "stats.json").read_text())
    counters = next(b["stats"] for b in filter_stats if "stage 4" in b["name"])

    def stat(key):
        value = counters.get(key, 0)
        return int(value["total"] if isinstance(value, dict) else value)

    return {
        "wall_s": t1 - t0,
        "phases_s": stage_s,
        "docs_in": stat("total"),
        "docs_out": stat("forwarded"),
        "removed": stat("dropped"),
        "clusters": len({c for c in cluster_of.values()}),
        "candidate_pairs_written": pairs,
        "cluster_of": cluster_of,
        "removed_ids": sorted(removed_ids),
        "rss": rss.window(t0, t1),
    }


# ---------------------------------------------------------------------------------------------
# memory: copies and the child
# ---------------------------------------------------------------------------------------------

def fast_gzip() -> None:
    """Makes warcio compress at level 1 instead of 9: enough for a temp copy, and much faster."""
    import zlib

    import warcio.warcwriter as ww

    class FastGzip(ww.GzippingWrapper):
        def __init__(self, out):
            super().__init__(out)
            self.compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS + 16)

    ww.GzippingWrapper = FastGzip


def renamed_record(record, block: bytes, k: int):
    """Copy `k` of a WARC record (read with no_record_parse, `block` its raw payload): its
    WARC-Target-URI host becomes `copy{k}.<host>` and its WARC-Record-ID (and any
    WARC-Concurrent-To / WARC-Refers-To / WARC-Warcinfo-ID) uuid5(copy k, old id)."""
    import io
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    from warcio.recordloader import ArcWarcRecord
    from warcio.statusandheaders import StatusAndHeaders

    def new_id(value: str) -> str:
        return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'copy{k}:{value.strip()}')}>"

    def new_url(url: str) -> str:
        parts = urlsplit(url)
        user, at, hostport = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user}{at}copy{k}.{hostport}")) if hostport else url

    headers = []
    for key, value in record.rec_headers.headers:
        low = key.lower()
        if low == "warc-target-uri":
            value = new_url(value)
        elif low in ("warc-record-id", "warc-concurrent-to", "warc-refers-to", "warc-warcinfo-id"):
            value = new_id(value)
        headers.append((key, value))
    rec_headers = StatusAndHeaders(record.rec_headers.statusline, headers, protocol=record.rec_headers.protocol)
    return ArcWarcRecord(record.format, record.rec_type, rec_headers, io.BytesIO(block), None, record.content_type,
                         record.length)


def _copy_shard(src: str, dest: str, copies: int) -> tuple[int, float]:
    """Writes `copies` renamed copies of one WARC file: copy{k}-<name>. Returns (records, seconds)."""
    import warcio.warcwriter as ww
    from warcio.archiveiterator import ArchiveIterator

    fast_gzip()
    started = time.perf_counter()
    name = os.path.basename(src)
    handles = [open(os.path.join(dest, f"copy{k}-{name}"), "wb") for k in range(copies)]
    writers = [ww.WARCWriter(h, gzip=True) for h in handles]
    records = 0
    try:
        with open(src, "rb") as handle:
            for record in ArchiveIterator(handle, no_record_parse=True):
                block = record.raw_stream.read()
                records += 1
                for k, writer in enumerate(writers):
                    writer.write_record(renamed_record(record, block, k))
    finally:
        for h in handles:
            h.close()
    return records, time.perf_counter() - started


def make_copies(dest: Path, copies: int, workers: int) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    sources = sorted(glob.glob(WEB_GLOB))
    if not sources:
        raise SystemExit(f"no WARC files match {WEB_GLOB}")
    dest.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(_copy_shard, sources, [str(dest)] * len(sources), [copies] * len(sources)))
    return {"sources": sources, "records_per_copy": sum(r for r, _ in done),
            "seconds": round(time.perf_counter() - started, 1)}


def memory_config(paths: list[str], out: str, workers: int, dedup_only: str | None = None,
                  extract: dict | None = None):
    """configs/english.yaml with extract switched to resiliparse, inline, or to the settings in
    `extract` (everything else as is); with `dedup_only`, its dedup list cut down to that one stage."""
    import yaml

    from refinery.config import parse_config, with_overrides

    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    for entry in raw["stages"]:
        if "extract" in entry:
            entry["extract"] = {**(entry["extract"] or {}), **(extract or {"extractor": "resiliparse", "isolation": "inline"})}
    if dedup_only:
        raw["dedup"] = [entry for entry in raw["dedup"] if next(iter(entry)) == dedup_only]
    config = parse_config(raw, str(CONFIG))
    return with_overrides(config, inputs=paths, output=out, workers=workers, dashboard=False)


def _dedup_fresh(config, shards, out: str, workers: int) -> dict:
    """deduplicate() alone, on fresh workers, over the filtered/ documents an execute() run left in
    `out` (its dedup markers removed first, so keys, resolution and rewrite all run again)."""
    from refinery.engine import Engine
    from refinery.pipeline.run import deduplicate

    for folder in ("_markers/keys", "_markers/apply"):
        shutil.rmtree(Path(out) / folder, ignore_errors=True)
    (Path(out) / "_markers" / "dedup.done").unlink(missing_ok=True)
    with RssSampler(os.getpid()) as rss:
        with Engine(workers=workers, shuffle=config.spec.run.shuffle) as engine:
            t1 = time.perf_counter()
            applied, summary = deduplicate(config, shards, out, engine)
            t2 = time.perf_counter()
    return {
        "stages": [s.name for s in config.dedup],
        "docs_in": sum(r.funnel[0]["docs_in"] for r in applied),
        "docs_out": sum(r.documents for r in applied),
        "removed": {name: st["removed"] for name, st in summary["per_stage"].items()},
        "timings": summary["timings"],
        "wall_s": t2 - t1,
        "rss": rss.window(t1, t2),
    }


def _child_memory(paths: list[str], out: str, workers: int) -> dict:
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    from refinery.engine.output import claim_output
    from refinery.io import expand_inputs
    from refinery.pipeline.run import Progress, execute

    config = memory_config(paths, out, workers)
    shards = expand_inputs(config.spec.input.paths)
    marks: dict = {}

    def on_phase(message: str) -> None:
        marks.setdefault("dedup_start", time.perf_counter())
        marks["message"] = message

    with claim_output(out, force=True), RssSampler(os.getpid()) as rss:
        t0 = time.perf_counter()
        stats = execute(config, shards, out, progress=Progress(on_phase=on_phase))
        t1 = time.perf_counter()
    split = marks["dedup_start"]
    funnel = {s["stage"]: s for s in stats["funnel"]}
    dedup_names = [next(iter(e)) for e in (config.spec.dedup or [])]

    def rows_and_bytes(folder: str) -> dict:
        files = sorted((Path(out) / "dedup" / folder).glob("*.parquet"))
        return {"files": len(files), "rows": sum(pq.ParquetFile(f).metadata.num_rows for f in files),
                "bytes": sum(f.stat().st_size for f in files),
                "read_parquet_npartitions": dd.read_parquet([str(f) for f in files]).npartitions if files else 0}

    inputs = {"keys": rows_and_bytes("keys"), "bands": rows_and_bytes("bands")}
    fresh = {"english": _dedup_fresh(config, shards, out, workers),
             "minhash_only": _dedup_fresh(memory_config(paths, out, workers, "minhash_dedup"), shards, out, workers)}
    return {
        "shards": len(shards),
        "records": stats["input"]["records"],
        "docs_into_dedup": funnel[dedup_names[0]]["docs_in"],
        "docs_out": stats["output"]["documents"],
        "dedup_funnel": [{k: funnel[n][k] for k in ("stage", "docs_in", "docs_out")} for n in dedup_names],
        "dedup_timings": stats["dedup"].get("timings"),
        "wall_s": t1 - t0,
        "map_phase_s": split - t0,
        "dedup_phase_s": t1 - split,
        "phase_message": marks["message"],
        "rss_map": rss.window(t0, split),
        "rss_dedup": rss.window(split, t1 + 1),
        "timeline": rss.timeline(t0),
        "dedup_inputs": inputs,
        "fresh": fresh,
    }


# ---------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------

def run_child(kind: str, args: list[str]) -> tuple[dict, str]:

    tmp = tempfile.mkdtemp(prefix=f"refinery-dedup-bench-{kind}-")
    result_path = os.path.join(tmp, "_result.json")
    log_path = os.path.join(tmp, "child.log")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--result", result_path,
           "--out", os.path.join(tmp, "run"), *args]
    env = {**os.environ, **OFFLINE_ENV, **THREAD_ENV, "PYTHONWARNINGS": "ignore"}
    result = run_measured(cmd, env, log_path, result_path, kind)
    return result, tmp


def _clusters(cluster_of: dict[str, str]) -> set[frozenset]:
    groups: dict[str, set] = {}
    for doc, cluster in cluster_of.items():
        groups.setdefault(cluster, set()).add(doc)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def run_speed(args) -> dict:
    rows = article_rows()[:args.articles]
    web_docs = 0
    if args.web:
        extra = web_rows(args.web)
        web_docs = len(extra)
        rows += extra
    data_root = Path(tempfile.mkdtemp(prefix="refinery-dedup-bench-data-"))
    files = write_shards(rows, data_root / "filtered", args.shards)
    import pyarrow.parquet as pq

    shard_of = {doc_id: i for i, f in enumerate(files)
                for doc_id in pq.read_table(f, columns=["id"]).column("id").to_pylist()}
    truth = [(a, b) for a, b in truth_pairs() if a in shard_of and b in shard_of]
    print(f"speed: {len(rows)} documents ({len(rows) - web_docs} articles, {web_docs} web) in {len(files)} shards "
          f"under {data_root}; {len(truth)} planted pairs, "
          f"{sum(shard_of[a] != shard_of[b] for a, b in truth)} across shards", file=sys.stderr, flush=True)
    engines = [e for e in args.engines.split(",") if e]
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for round_ in range(args.repeat):
        for engine in engines[round_ % len(engines):] + engines[:round_ % len(engines)]:
            print(f"[{round_ + 1}/{args.repeat}] {engine} ...", file=sys.stderr, flush=True)
            child_args = ["--data", str(data_root / "filtered"), "--workers", str(args.workers)]
            result, tmp = run_child(engine, child_args)
            if not args.keep_tmp:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                result["tmp"] = tmp
            print(f"    {result['wall_s']:.1f} s, removed {result['removed']}, load before "
                  f"{result['loadavg_1m_before']:.2f}, CPU ours/machine {result['tree_cpu_s']:.0f}/"
                  f"{result['machine_busy_cpu_s']:.0f} s", file=sys.stderr, flush=True)
            runs[engine].append(result)
    if not args.keep_tmp:
        shutil.rmtree(data_root, ignore_errors=True)

    summary = {}
    for engine, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        best = rs[walls.index(min(walls))]
        clusters = _clusters(best["cluster_of"])
        summary[engine] = {
            "runs": len(rs), "wall_s_median": statistics.median(walls), "wall_s_min": min(walls),
            "walls": walls,
            "phases_s_median": {p: statistics.median(r["phases_s"][p] for r in rs) for p in best["phases_s"]},
            "dedup_only_s_median": statistics.median(r["dedup_only_s"] for r in rs) if "dedup_only_s" in best else None,
            "tree_cpu_s_median": statistics.median(r["tree_cpu_s"] for r in rs),
            "machine_busy_cpu_s_median": statistics.median(r["machine_busy_cpu_s"] for r in rs),
            "docs_in": best["docs_in"], "docs_out": best["docs_out"], "removed": best["removed"],
            "clusters": len(clusters), "docs_in_clusters": sum(len(c) for c in clusters),
            "truth_pairs_found": sum(1 for a, b in truth
                                     if a in best["cluster_of"] and best["cluster_of"][a] == best["cluster_of"].get(b)),
            "truth_pairs_one_removed": sum(1 for a, b in truth
                                           if (a in best["removed_ids"]) != (b in best["removed_ids"])),
            "peak_worker_rss_mib": max(r["rss"]["peak_worker_rss_mib"] for r in rs),
            "peak_workers_total_rss_mib": max(r["rss"]["peak_workers_total_rss_mib"] for r in rs),
            "peak_driver_rss_mib": max(r["rss"]["peak_driver_rss_mib"] for r in rs),
        }
        summary[engine]["_clusters"] = clusters
    comparison = {}
    if "datatrove" in summary:
        dt = summary["datatrove"]
        for engine in [e for e in summary if e != "datatrove"]:
            s = summary[engine]
            comparison[engine] = {
                "speedup_vs_datatrove_median": dt["wall_s_median"] / s["wall_s_median"],
                "speedup_vs_datatrove_min": dt["wall_s_min"] / s["wall_s_min"],
                "speedup_dedup_only_vs_datatrove_median": (dt["wall_s_median"] / s["dedup_only_s_median"]
                                                           if s["dedup_only_s_median"] else None),
                "cpu_ratio_datatrove_over_engine": dt["tree_cpu_s_median"] / s["tree_cpu_s_median"],
                "identical_clusters": s["_clusters"] == dt["_clusters"],
                "clusters_only_in_engine": len(s["_clusters"] - dt["_clusters"]),
                "clusters_only_in_datatrove": len(dt["_clusters"] - s["_clusters"]),
            }
    for s in summary.values():
        s.pop("_clusters")
    for rs in runs.values():
        for r in rs:
            r.pop("cluster_of", None)
            r.pop("removed_ids", None)
    table = speed_markdown(summary, comparison, args.workers)
    print(table)
    return {"benchmark": "dedup_speed", "documents": len(rows), "articles": len(rows) - web_docs, "web_docs": web_docs,
            "shards": args.shards, "workers": args.workers, "truth_pairs": len(truth),
            "truth_pairs_across_shards": sum(shard_of[a] != shard_of[b] for a, b in truth),
            "shape": {"ngram": NGRAM, "bands": BANDS, "rows": ROWS, "hashes": BANDS * ROWS},
            "summary": summary, "comparison": comparison, "runs": runs, "table_markdown": table}


def speed_markdown(summary: dict, comparison: dict, workers: int) -> str:
    lines = ["| engine | total wall s, median (min) | vs datatrove (median) | phases, median s | CPU s ours / machine "
             "| docs in | removed | docs in clusters | planted pairs found | peak worker RSS MiB |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for engine, s in summary.items():
        ratio = comparison.get(engine, {}).get("speedup_vs_datatrove_median")
        phases = ", ".join(f"{k} {v:.1f}" for k, v in s["phases_s_median"].items())
        lines.append(f"| {engine} | {s['wall_s_median']:.1f} ({s['wall_s_min']:.1f}) "
                     f"| {f'{ratio:.2f}x' if ratio else '1.00x'} | {phases} "
                     f"| {s['tree_cpu_s_median']:.0f} / {s['machine_busy_cpu_s_median']:.0f} | {s['docs_in']} "
                     f"| {s['removed']} | {s['docs_in_clusters']} | {s['truth_pairs_found']} "
                     f"| {s['peak_worker_rss_mib']:.0f} |")
    for engine, c in comparison.items():
        lines.append("")
        lines.append(f"{engine} vs datatrove: identical clusters {c['identical_clusters']} "
                     f"(only in {engine}: {c['clusters_only_in_engine']}, only in datatrove: "
                     f"{c['clusters_only_in_datatrove']}); dedup-only speedup (cluster start/stop excluded) "
                     f"{c['speedup_dedup_only_vs_datatrove_median']:.2f}x")
    return "\n".join(lines)


def run_memory(args) -> dict:
    copies_dir = Path(tempfile.mkdtemp(prefix="refinery-dedup-bench-warc-"))
    print(f"memory: writing {max(SCALES)} renamed copies of {WEB_GLOB} into {copies_dir} ...", file=sys.stderr, flush=True)
    copies = make_copies(copies_dir, max(SCALES), args.workers)
    print(f"    {copies['records_per_copy']} records per copy, {copies['seconds']} s", file=sys.stderr, flush=True)
    runs: dict[str, list[dict]] = {}
    for round_ in range(args.repeat):
        for scale in SCALES:
            paths = sorted(str(p) for k in range(scale) for p in copies_dir.glob(f"copy{k}-*.warc.gz"))
            print(f"[{round_ + 1}/{args.repeat}] {scale}x: {len(paths)} shards ...", file=sys.stderr, flush=True)
            result, tmp = run_child("memory", ["--workers", str(args.workers), "--input", *paths])
            if args.keep_tmp:
                result["tmp"] = tmp
            else:
                shutil.rmtree(tmp, ignore_errors=True)
            print(f"    {result['wall_s']:.1f} s (map {result['map_phase_s']:.1f}, dedup {result['dedup_phase_s']:.1f}), "
                  f"{result['docs_into_dedup']} docs into dedup, peak worker RSS map "
                  f"{result['rss_map']['peak_worker_rss_mib']:.0f} MiB, dedup "
                  f"{result['rss_dedup']['peak_worker_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
            runs.setdefault(f"{scale}x", []).append(result)
    if not args.keep_tmp:
        shutil.rmtree(copies_dir, ignore_errors=True)
    summary = {}
    for key, rs in runs.items():
        summary[key] = {
            "runs": len(rs), "shards": rs[0]["shards"], "records": rs[0]["records"],
            "docs_into_dedup": rs[0]["docs_into_dedup"], "docs_out": rs[0]["docs_out"],
            "dedup_funnel": rs[0]["dedup_funnel"],
            "wall_s_median": statistics.median(r["wall_s"] for r in rs),
            "map_phase_s_median": statistics.median(r["map_phase_s"] for r in rs),
            "dedup_phase_s_median": statistics.median(r["dedup_phase_s"] for r in rs),
            "peak_worker_rss_dedup_mib": max(r["rss_dedup"]["peak_worker_rss_mib"] for r in rs),
            "peak_workers_total_rss_dedup_mib": max(r["rss_dedup"]["peak_workers_total_rss_mib"] for r in rs),
            "peak_driver_rss_dedup_mib": max(r["rss_dedup"]["peak_driver_rss_mib"] for r in rs),
            "peak_worker_rss_map_mib": max(r["rss_map"]["peak_worker_rss_mib"] for r in rs),
            "peak_driver_rss_map_mib": max(r["rss_map"]["peak_driver_rss_mib"] for r in rs),
            "tree_cpu_s_median": statistics.median(r["tree_cpu_s"] for r in rs),
            "machine_busy_cpu_s_median": statistics.median(r["machine_busy_cpu_s"] for r in rs),
            "dedup_inputs": rs[0]["dedup_inputs"],
            "start_worker_rss_dedup_mib": max(r["rss_dedup"]["start_worker_rss_mib"] for r in rs),
            "peak_increment_dedup_mib": max(r["rss_dedup"]["peak_increment_mib"] for r in rs),
            "fresh": {variant: {
                "stages": rs[0]["fresh"][variant]["stages"],
                "docs_in": rs[0]["fresh"][variant]["docs_in"],
                "removed": rs[0]["fresh"][variant]["removed"],
                "wall_s_median": statistics.median(r["fresh"][variant]["wall_s"] for r in rs),
                "peak_worker_rss_mib": max(r["fresh"][variant]["rss"]["peak_worker_rss_mib"] for r in rs),
                "start_worker_rss_mib": max(r["fresh"][variant]["rss"]["start_worker_rss_mib"] for r in rs),
                "peak_increment_mib": max(r["fresh"][variant]["rss"]["peak_increment_mib"] for r in rs),
                "peak_workers_total_rss_mib": max(r["fresh"][variant]["rss"]["peak_workers_total_rss_mib"] for r in rs),
                "peak_driver_rss_mib": max(r["fresh"][variant]["rss"]["peak_driver_rss_mib"] for r in rs),
            } for variant in rs[0]["fresh"]},
        }
    lo, hi = summary[f"{SCALES[0]}x"], summary[f"{SCALES[-1]}x"]
    ratios = {k: hi[k] / lo[k] for k in ("docs_into_dedup", "peak_worker_rss_dedup_mib", "peak_workers_total_rss_dedup_mib",
                                         "peak_driver_rss_dedup_mib", "peak_worker_rss_map_mib", "dedup_phase_s_median",
                                         "peak_increment_dedup_mib")}
    for variant in lo["fresh"]:
        for k in ("peak_worker_rss_mib", "peak_increment_mib", "peak_driver_rss_mib", "wall_s_median"):
            ratios[f"fresh_{variant}_{k}"] = hi["fresh"][variant][k] / lo["fresh"][variant][k]
    table = memory_markdown(summary, ratios)
    print(table)
    return {"benchmark": "dedup_memory", "workers": args.workers, "copies": copies, "scales": list(SCALES),
            "summary": summary, "ratios_4x_over_1x": ratios, "runs": runs, "table_markdown": table}


def memory_markdown(summary: dict, ratios: dict) -> str:
    lines = ["| input | shards | records | docs into dedup | wall s (map / dedup) | peak worker RSS, dedup MiB "
             "| peak RSS of both workers, dedup MiB | peak driver RSS, dedup MiB | peak worker RSS, map MiB |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for key, s in summary.items():
        lines.append(f"| {key} | {s['shards']} | {s['records']} | {s['docs_into_dedup']} "
                     f"| {s['wall_s_median']:.1f} ({s['map_phase_s_median']:.1f} / {s['dedup_phase_s_median']:.1f}) "
                     f"| {s['peak_worker_rss_dedup_mib']:.0f} | {s['peak_workers_total_rss_dedup_mib']:.0f} "
                     f"| {s['peak_driver_rss_dedup_mib']:.0f} | {s['peak_worker_rss_map_mib']:.0f} |")
    lines.append(f"| 4x / 1x | | | {ratios['docs_into_dedup']:.2f} | dedup {ratios['dedup_phase_s_median']:.2f} "
                 f"| **{ratios['peak_worker_rss_dedup_mib']:.2f}** | {ratios['peak_workers_total_rss_dedup_mib']:.2f} "
                 f"| {ratios['peak_driver_rss_dedup_mib']:.2f} | {ratios['peak_worker_rss_map_mib']:.2f} |")
    lines += ["", "Within the dedup phase of that run, each worker's RSS at the phase start and its largest growth "
              "during the phase:", "",
              "| input | worker RSS at dedup start MiB | largest growth during dedup MiB |", "|---|---:|---:|"]
    for key, s in summary.items():
        lines.append(f"| {key} | {s['start_worker_rss_dedup_mib']:.0f} | {s['peak_increment_dedup_mib']:.0f} |")
    lines += ["", "deduplicate() alone on fresh workers (a new LocalCluster, markers removed), over the same "
              "filtered/ documents:", "",
              "| dedup stages | input | docs in | removed | wall s | peak worker RSS MiB | worker RSS at start MiB "
              "| largest growth MiB | peak driver RSS MiB |", "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for variant in next(iter(summary.values()))["fresh"]:
        for key, s in summary.items():
            f = s["fresh"][variant]
            removed = ", ".join(f"{k} {v}" for k, v in f["removed"].items())
            lines.append(f"| {' -> '.join(f['stages'])} | {key} | {f['docs_in']} | {removed} | {f['wall_s_median']:.1f} "
                         f"| {f['peak_worker_rss_mib']:.0f} | {f['start_worker_rss_mib']:.0f} "
                         f"| {f['peak_increment_mib']:.0f} | {f['peak_driver_rss_mib']:.0f} |")
        lines.append(f"| | 4x / 1x | | | {ratios[f'fresh_{variant}_wall_s_median']:.2f} "
                     f"| **{ratios[f'fresh_{variant}_peak_worker_rss_mib']:.2f}** | "
                     f"| {ratios[f'fresh_{variant}_peak_increment_mib']:.2f} "
                     f"| {ratios[f'fresh_{variant}_peak_driver_rss_mib']:.2f} |")
    return "\n".join(lines)


def _report_header(args) -> dict:
    import dask
    import distributed
    from map_phase import _git_state

    from refinery import __version__

    return {
        "command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_after": os.getloadavg()},
        "versions": {"refinery": __version__, "datatrove": "0.10.1", "dask": dask.__version__,
                     "distributed": distributed.__version__},
        "git": _git_state(),
        "repeat": args.repeat,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", choices=("speed", "memory", "all"), default="all")
    parser.add_argument("--json", metavar="PATH", help="where to write the JSON (one sub-benchmark only); default "
                        "benchmarks/results/dedup_speed.json / dedup_memory.json")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine (speed) or per scale (memory)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for every engine (default 2)")
    parser.add_argument("--shards", type=int, default=4, help="speed: number of input Parquet shards (default 4)")
    parser.add_argument("--articles", type=int, help="speed: only the first N articles (smoke runs)")
    parser.add_argument("--web", metavar="DIR", help="speed: also dedup the DOCUMENT_SCHEMA Parquet files in DIR")
    parser.add_argument("--engines", default=",".join(SPEED_ENGINES), help="speed: comma list of "
                        + ", ".join(SPEED_ENGINES))
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp folders")
    parser.add_argument("--child", choices=(*SPEED_ENGINES, "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--input", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        os.environ.update(OFFLINE_ENV)
        if args.child == "datatrove":
            result = _child_datatrove(args.data, args.out, args.workers)
        elif args.child == "memory":
            result = _child_memory(args.input, args.out, args.workers)
        else:
            result = _child_refinery(args.data, args.out, args.workers, args.child == "refinery")
        Path(args.result).write_text(json.dumps(result))
        return 0

    if args.json and args.which == "all":
        parser.error("--json needs one sub-benchmark (speed or memory)")
    os.environ.update(OFFLINE_ENV)
    for which, run in (("speed", run_speed), ("memory", run_memory)):
        if args.which not in (which, "all"):
            continue
        body = run(args)
        report = {**_report_header(args), **body}
        path = Path(args.json) if args.json else RESULTS / f"dedup_{which}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
