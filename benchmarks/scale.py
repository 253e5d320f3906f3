#!/usr/bin/env python
"""Scale harness for corpus-wide dedup (issue 20): time, memory, disk and recall of `deduplicate()`
at 10^4 .. 10^6 documents, on generated documents with planted duplicates of known kinds.

Subcommands:

  run         For each --docs N: generate (or reuse) N documents in --shards K Parquet shards under
              OUT/n<N>/, run refinery.pipeline.run.deduplicate() on them in a fresh child process,
              then check the output against the planted ground truth. One JSON record per (N,
              settings) is appended to benchmarks/results/scale.json and a markdown table printed.
  generate    Only the generator, into OUT directly (OUT/filtered/, OUT/truth.parquet).
  map-shards  Many tiny WARC shards (the shared web shards split record-wise) through
              refinery.pipeline.run.execute(): the driver's peak RSS and the scheduling overhead.
  datatrove   On the same generated documents (OUT/n<N>/), one after the other, each in a fresh
              child process on --workers processes: refinery's deduplicate() with minhash_dedup
              alone (english.yaml's settings: 450 x 20, 5-grams), jaccard_to_kept true and false,
              and datatrove 0.10.1's four MinHash stages as `benchmarks/dedup.py speed` runs them.
  cluster     The same dedup chain on an existing Dask scheduler (a `dask scheduler` and --workers
              `dask worker` processes started here, run through `run --scheduler`) and on a
              LocalCluster, each into its own copy of OUT/n<N>/filtered/ (hard links); the sha256
              of every file under documents/ and dedup/clusters.parquet/ and the per-stage stats
              must be identical.

Generator (its own process, so its memory is not counted; 2 forked processes write shards in
parallel). Base documents are built from ../shared/data/curated/*.jsonl.gz (books, speeches,
Python docs, mailing-list bodies, wikitext; not code): the texts are cut into sentence pieces of
at most PIECE_TOKENS whitespace tokens (about 300,000 distinct pieces, 36 MB), and each document
is a sequence of pieces drawn independently with a counter-based hash of (seed, slot, position),
joined by a space or, one time in four, a paragraph break. Lengths are lognormal with a mean of
about MEAN_CHARS characters, so 10^6 documents are about 2.5 GB of text. Because pieces are
drawn independently and are shorter than substring_dedup's 50-token window, two base documents
share almost no word 5-grams and (almost) never a 50-token span: whatever dedup removes or cuts
outside the planted pairs is a false positive (counted). Planted, at fixed rates of N:

  exact  5%  a copy of an original (half byte-identical, half with only whitespace changed,
             which exact_dedup's normalisation ignores), another URL
  near   5%  a copy with word-5-gram Jaccard ~0.8 to its original: one word in ~45 replaced by a
             vocabulary word, replacements at least 6 words apart, so each kills 5 shingles and
             J = (S - 5k) / (S + 5k) for S shingles and k replacements (measured, and redone
             with another k when off by more than 0.02); originals of 8+ pieces; another URL
  url    3%  a re-crawl: the original's URL (half the same string, half a variant that
             url_dedup's normalisation maps to it: http, no www., utm_source), a later
             warc_date, a text of its own; keep: newest means the re-crawl survives
  span   2%  a document of its own with a 60-120-token span of an original inserted as a
             paragraph; the original lies in an EARLIER shard (shard ids sort in order), so with
             keep_first the copy's occurrence is the one to cut

Every original is a distinct base document used once. Slots are spread at random over the
shards (span copies only in shards >= 1). Ids are seeded uuid-like WARC-Record-IDs, URLs are
unique per document (except re-crawls) on N/50 synthetic domains. Output: OUT/filtered/scale-
<k>.parquet (zstd, DOCUMENT_SCHEMA, row groups of 2048 as the chain writes them), OUT/truth.parquet
(kind, copy and original id and shard, variant, for near copies the true Jaccard, for spans the
character range in the copy) and OUT/generator.json. A later `run` with the same N, K and seed
reuses them.

Runner (a fresh child process): dedup_only_config with configs/english.yaml's dedup stages chosen
by --dedup (MinHash 450 x 20, 5-grams, jaccard_to_kept; substring min_tokens 50), deduplicate()
on an Engine (LocalCluster, --workers processes, 1 thread each) under
dask.config.set(dataframe.shuffle.method=--shuffle). Measured over deduplicate() alone (the
cluster's start and close are timed apart): wall time; CPU time of the driver and of the worker
processes (psutil, difference over the window; a worker restarted mid-run counts with its last
sample); peak RSS, sampled every 100 ms, of the driver (this process: the client, the scheduler
and the nannies run in it, and resolve builds its graphs here) and of each worker process; each
phase's wall time (an Engine subclass times each task list: keys, resolve, substring, apply) next
to the summary's `timings` (task seconds summed over workers) and resolve's own per-stage seconds;
the size of OUT/dedup/, OUT/documents/ and the workers' Dask scratch folders (p2p shuffles write
there), walked every second.

run --scheduler ADDRESS: the child connects to that scheduler instead of starting a LocalCluster
(its workers must import refinery: PYTHONPATH=<checkout>). The workers are not its descendants, so
they are found by name: the local `dask worker` / `dask-worker` processes whose command line names
the scheduler's port (by name alone, only those that are parents of a worker the scheduler
reports), sampled with their descendants (the nanny's worker process); the nannies and, when one
`dask scheduler` process names that port, the scheduler are reported apart (with a LocalCluster both
live in the driver).

datatrove: per engine, the total wall time (refinery: cluster start + deduplicate() + cluster close,
as dedup.py counts it, since datatrove's includes its process pools' start-up; datatrove: its four
stages) and per phase (refinery: start, keys, resolve, apply, close; datatrove: signatures,
buckets, cluster, filter), the process tree's CPU seconds, peak RSS of the workers and of the
driver, the peak disk of the work and output folders together (refinery: dedup/, documents/ and the
workers' scratch; datatrove: signatures, buckets, remove, documents, logs), the documents removed
and the recall of the planted exact and near pairs from the removed ids alone (refinery: those
missing from documents/; datatrove: its .remove files, mapped to ids as dedup.py does), with
everything removed outside those pairs as false positives.

cluster: the scheduler listens on 127.0.0.1 (a free port, no dashboard); each worker is
`dask worker ADDRESS --nworkers 1 --nthreads 1 --no-dashboard --local-directory
OUT/n<N>/cluster-processes/worker-<i>` (their logs there too), started with THREAD_ENV and
PYTHONPATH=<checkout>; both are stopped (SIGTERM, then SIGKILL to their process groups) before the
LocalCluster run, also on failure. Outputs: OUT/n<N>/cluster-scheduler/ and cluster-local/.

map-shards: --map-shards WARC files of --records-per-shard response records, cut in order from
../shared/data/web/*.warc.gz (past its 1,778 records they repeat, copy k renamed by
dedup.renamed_record: new WARC-Record-IDs and copy<k>. hosts), then execute() in a child process
as `refinery run configs/english.yaml --workers 2` runs it (its logs and progress files included),
with the extract stage switched to resiliparse, isolation inline (dedup.memory_config; the
cheapest extractor; dedup stages as in english.yaml), or with --extractor fast to `fast` in the
process sandbox (pages sent to it in batches). Recorded: the driver's and the workers' peak
RSS in the map phase and over the run, and the scheduling overhead (wall - task seconds /
workers) / wall, with task seconds both as the run records them (the funnel's per-shard stage
seconds in stats/shards/, the keys tasks' seconds in their markers) and as Dask's task stream
saw them (compute time per task, which includes each task's stage setup).

Check (the parent, after the run): per planted kind, from truth.parquet and OUT/documents/:
  exact, near, url  a pair is resolved when exactly one of its two documents survives (recall);
                    for url also whether the newest survived
  span              cut when at least 90% of the span's characters are gone from the copy (the
                    rewritten text is the copy with ranges cut: its tokens are aligned with the
                    copy's), or the copy was dropped (too short after the cut); also whether the
                    source kept its span, and which spans were findable at all: source and copy
                    in one substring group, and with `method: suffix_array` in one part of
                    max_part_bytes of its text (simulated from the surviving documents' sizes)
  false positives   removed documents outside the exact/near/url pairs, and documents outside the
                    span and near pairs whose text was cut

Usage:
  .venv/bin/python benchmarks/scale.py run --docs 10000 100000 1000000 --shards 16 --out /data/scale
  .venv/bin/python benchmarks/scale.py run --docs 10000 --shards 4 --out /tmp/scale --dedup exact,minhash,url,substring --shuffle tasks
  .venv/bin/python benchmarks/scale.py generate --docs 2000 --shards 4 --out /tmp/scale-gen
  .venv/bin/python benchmarks/scale.py map-shards --map-shards 512 --records-per-shard 4 --out /tmp/scale-map
  .venv/bin/python benchmarks/scale.py map-shards --map-shards 200 --records-per-shard 500 --extractor fast --out /data/scale-map
  .venv/bin/python benchmarks/scale.py datatrove --docs 100000 --shards 16 --out /data/scale [--repeat 1]
  .venv/bin/python benchmarks/scale.py cluster --docs 100000 --shards 16 --out /data/scale
  .venv/bin/python benchmarks/scale.py run --docs 100000 --shards 16 --out /data/scale --scheduler tcp://127.0.0.1:8786
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
CURATED = SHARED / "curated"
WEB_GLOB = str(SHARED / "web" / "*.warc.gz")
CONFIG = ROOT / "configs" / "english.yaml"
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_FILE = RESULTS / "scale.json"

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

# benchmarks/dedup.py and map_phase.py (RSS and CPU sampling, child runs, WARC renaming) are
# imported where used, so that importing this module for its generator (tests) stays light.

GENERATOR_VERSION = 2  # bump when the same (N, K, seed) would generate other documents
SOURCES = ("books", "speeches", "technical", "conversations", "wikipedia")  # prose; code is left out
PIECE_TOKENS = 32  # below substring_dedup's 50-token window, so a window always spans 2+ random pieces
MEAN_CHARS, SIGMA, MIN_CHARS, MAX_CHARS = 2500, 0.6, 500, 40_000
PARAGRAPH_BREAK = 4  # one piece boundary in 4 is a paragraph break
RATES = {"exact": 0.05, "near": 0.05, "url": 0.03, "span": 0.02}
KINDS = ("base", "exact", "near", "url", "span")
BASE, EXACT, NEAR, URL, SPAN = range(5)
NEAR_JACCARD = 0.8
NEAR_TOLERANCE = 0.02  # a near copy is redone with another number of replacements when further off
NEAR_MIN_PIECES = 8  # a shorter original cannot get to 0.8: one replacement kills 5 shingles
SPAN_TOKENS = (60, 120)
SPAN_SOURCE_MIN_PIECES = 15  # long enough for a 120-token span
SPAN_CUT_SHARE = 0.9  # a span counts as cut when this share of its characters is gone
BATCH = 2048  # rows per Parquet row group, as the chain writes them
SHARD_PREFIX = "scale"
SECTIONS = ("news", "blog", "docs", "forum", "wiki", "shop", "events", "about")
DEDUP_STAGES = {"exact": "exact_dedup", "minhash": "minhash_dedup", "url": "url_dedup", "substring": "substring_dedup"}
RUN_OUTPUTS = ("dedup", "documents", "_markers", "stats", "dropped", "_progress", "logs")
TOKEN = re.compile(r"\S+")
WORD_CHAR = re.compile(r"[^\W_]")  # a token that normalises to a non-empty word
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
STREAM_PIECE, STREAM_ID, STREAM_URL, STREAM_DATE, STREAM_NEAR, STREAM_SPAN, STREAM_VARIANT = range(1, 8)


# ---------------------------------------------------------------------------------------------
# generator: counter-based hashing, so any process can rebuild any document from its slot
# ---------------------------------------------------------------------------------------------

def _mix(x) -> np.ndarray:
    """splitmix64's finaliser, elementwise (uint64 arithmetic wraps)."""
    x = np.asarray(x, dtype=np.uint64) + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _hash(seed: int, stream: int, *parts) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = _mix(np.uint64(seed) * np.uint64(1_000_003) + np.uint64(stream))
        for part in parts:
            x = _mix(x ^ np.asarray(part, dtype=np.uint64))
    return x


@dataclass
class Pool:
    pieces: list[str]  # distinct sentence pieces, in first-seen order
    vocab: list[str]  # distinct lowercase words, sorted: replacements for near copies
    mean_chars: float  # per piece, separator included
    sources: dict[str, int]


def build_pool() -> Pool:
    seen: dict[str, None] = {}
    sources = {}
    for name in SOURCES:
        before = len(seen)
        with gzip.open(CURATED / f"{name}.jsonl.gz", "rt", encoding="utf-8") as lines:
            for line in lines:
                text = json.loads(line)["text"]
                if name == "conversations":  # the body, not the mail headers
                    text = text.split("\n\n", 1)[-1]
                for paragraph in re.split(r"\n\s*\n", text):
                    for sentence in SENTENCE_END.split(paragraph):
                        words = sentence.split()
                        for i in range(0, len(words), PIECE_TOKENS):
                            if len(words[i:i + PIECE_TOKENS]) >= 3:
                                seen.setdefault(" ".join(words[i:i + PIECE_TOKENS]), None)
        sources[name] = len(seen) - before
    pieces = list(seen)
    vocab = sorted({w for p in pieces for w in p.lower().split() if w.isascii() and w.isalpha() and 4 <= len(w) <= 12})
    return Pool(pieces, vocab, sum(map(len, pieces)) / len(pieces) + 1, sources)


@dataclass
class Plan:
    """What each slot (global document position) holds. Shard s holds slots starts[s]..starts[s+1]."""

    n: int
    k: int
    seed: int
    kind: np.ndarray  # int8, KINDS index
    origin: np.ndarray  # int64: the original's slot for copies, else -1
    pieces: np.ndarray  # int32: pieces of the slot's own base text
    starts: list[int]

    def shard_of(self, slots) -> np.ndarray:
        return np.searchsorted(np.asarray(self.starts), slots, side="right") - 1


def shard_id(s: int) -> str:
    return f"{SHARD_PREFIX}-{s:05d}"


def make_plan(n: int, k: int, seed: int, mean_piece_chars: float) -> Plan:
    rng = np.random.default_rng([seed, 0])
    mu = np.log(MEAN_CHARS) - SIGMA**2 / 2  # lognormal with mean MEAN_CHARS before clipping
    target = np.clip(rng.lognormal(mu, SIGMA, n), MIN_CHARS, MAX_CHARS)
    pieces = np.maximum(2, np.rint(target / mean_piece_chars)).astype(np.int32)
    starts = [s * n // k for s in range(k + 1)]
    counts = {kind: round(rate * n) for kind, rate in RATES.items()}
    if k < 2:
        counts["span"] = 0  # nothing to cross
    kind = np.zeros(n, dtype=np.int8)
    origin = np.full(n, -1, dtype=np.int64)
    span_slots = np.sort(rng.choice(np.arange(starts[1], n) if k > 1 else np.arange(0), counts["span"], replace=False))
    rest = rng.permutation(np.setdiff1d(np.arange(n), span_slots))
    bounds = np.cumsum([0, counts["exact"], counts["near"], counts["url"]])
    copies = {EXACT: rest[bounds[0]:bounds[1]], NEAR: rest[bounds[1]:bounds[2]], URL: rest[bounds[2]:bounds[3]]}
    base = np.sort(rest[bounds[3]:])
    for code, slots in copies.items():
        kind[slots] = code
    kind[span_slots] = SPAN
    used = np.zeros(n, dtype=bool)
    # span sources: long base documents in an earlier shard than their copy
    long_base = base[pieces[base] >= SPAN_SOURCE_MIN_PIECES]
    for c in span_slots:
        limit = int(np.searchsorted(long_base, starts[int(np.searchsorted(starts, c, side="right")) - 1]))
        for _ in range(1000):
            o = int(long_base[rng.integers(limit)]) if limit else -1
            if o >= 0 and not used[o]:
                break
        else:
            raise ValueError(f"no free span source before slot {c}; use more documents per shard")
        used[o], origin[c] = True, o
    free = base[~used[base]]
    long_free = free[pieces[free] >= NEAR_MIN_PIECES]
    if len(long_free) < len(copies[NEAR]):
        raise ValueError("too few long base documents for the near copies")
    origin[copies[NEAR]] = rng.choice(long_free, len(copies[NEAR]), replace=False)
    used[origin[copies[NEAR]]] = True
    free = base[~used[base]]
    others = np.concatenate([copies[EXACT], copies[URL]])
    if len(free) < len(others):
        raise ValueError("too few base documents for the planted copies")
    origin[others] = rng.choice(free, len(others), replace=False)
    return Plan(n, k, seed, kind, origin, pieces, starts)


class Generator:
    """Builds any slot's document from (pool, plan, seed); forked workers share it."""

    def __init__(self, pool: Pool, plan: Plan, folder: Path):
        self.pool, self.plan, self.seed, self.folder = pool, plan, plan.seed, folder
        # a piece followed by its separator: index i (space) or i + P (paragraph break)
        self.joined = [p + " " for p in pool.pieces] + [p + "\n\n" for p in pool.pieces]
        self.domains = max(8, plan.n // 50)

    # --- the parts of a document -------------------------------------------------------------

    def base_texts(self, slots: np.ndarray) -> list[str]:
        counts = self.plan.pieces[slots]
        owner = np.repeat(slots.astype(np.uint64), counts)
        position = np.arange(len(owner)) - np.repeat(np.cumsum(counts) - counts, counts)
        h = _hash(self.seed, STREAM_PIECE, owner, position)
        n_pieces = np.uint64(len(self.pool.pieces))
        index = (h % n_pieces) + n_pieces * ((h >> np.uint64(59)) % np.uint64(PARAGRAPH_BREAK) == 0)
        chosen = [self.joined[i] for i in index.tolist()]
        texts, at = [], 0
        for count in counts.tolist():
            texts.append("".join(chosen[at:at + count]).rstrip())
            at += count
        return texts

    def ids(self, slots: np.ndarray) -> list[str]:
        a, b = _hash(self.seed, STREAM_ID, slots, 1).tolist(), _hash(self.seed, STREAM_ID, slots, 2).tolist()
        return [f"<urn:uuid:{x >> 32:08x}-{(x >> 16) & 0xFFFF:04x}-4{x & 0xFFF:03x}-{8 | (y >> 62):x}"
                f"{(y >> 48) & 0xFFF:03x}-{y & 0xFFFFFFFFFFFF:012x}>" for x, y in zip(a, b)]

    def urls(self, slots: np.ndarray) -> list[str]:
        h = _hash(self.seed, STREAM_URL, slots).tolist()
        return [f"https://www.site{x % self.domains:05d}.example.org/{SECTIONS[(x >> 20) % len(SECTIONS)]}/"
                f"{x >> 40:06x}-{slot}.html" for x, slot in zip(h, slots.tolist())]

    def dates(self, slots: np.ndarray, later_than: np.ndarray | None = None) -> list[str]:
        """Within 180 days of 2024-01-01; with ``later_than`` (those slots' dates), 1-90 days after them."""
        h = _hash(self.seed, STREAM_DATE, slots)
        if later_than is None:
            seconds = (h % np.uint64(180 * 86400)).astype(np.int64)
        else:
            seconds = ((_hash(self.seed, STREAM_DATE, later_than) % np.uint64(180 * 86400)).astype(np.int64)
                       + 86400 * (1 + (h % np.uint64(90)).astype(np.int64)) + (h >> np.uint64(40)).astype(np.int64) % 86400)
        stamps = np.datetime64("2024-01-01T00:00:00", "s") + seconds.astype("timedelta64[s]")
        return [f"{s}Z" for s in np.datetime_as_string(stamps, unit="s")]

    def variant(self, slot: int) -> int:
        return int(_hash(self.seed, STREAM_VARIANT, slot)) & 1

    # --- the planted copies ------------------------------------------------------------------

    @staticmethod
    def exact_text(text: str, whitespace: bool) -> str:
        if not whitespace:
            return text
        return text.replace("\n\n", "\n").replace(". ", ".  ") + "\n"

    def near_text(self, text: str, slot: int) -> tuple[str, float]:
        """``text`` with k words replaced, spaced so that J = (S - 5k) / (S + 5k) ~ NEAR_JACCARD for S
        distinct shingles; when repeated shingles make J miss by more than NEAR_TOLERANCE, k is
        solved again from the J measured (a few tries; the closest wins). Returns (text, J)."""
        from refinery.minhash import jaccard

        tokens = list(TOKEN.finditer(text))
        words = [i for i, m in enumerate(tokens) if WORD_CHAR.search(m.group())]
        shingles = max(len(words) - 4, 1)
        k = max(1, round(shingles * (1 - NEAR_JACCARD) / (5 * (1 + NEAR_JACCARD))))
        best = None
        for attempt in range(4):
            new = self._replace_words(text, tokens, words, k, slot, attempt)
            score = float(jaccard(text, new))
            if best is None or abs(score - NEAR_JACCARD) < abs(best[1] - NEAR_JACCARD):
                best = (new, score)
            if abs(score - NEAR_JACCARD) <= NEAR_TOLERANCE or score >= 1:
                break
            effective = 5 * k * (1 + score) / (1 - score)  # the S that this k and J imply
            k = max(1, min(len(words) // 7, round(effective * (1 - NEAR_JACCARD) / (5 * (1 + NEAR_JACCARD)))))
        return best

    def _replace_words(self, text: str, tokens: list, words: list[int], k: int, slot: int, attempt: int) -> str:
        rng = np.random.default_rng([self.seed, STREAM_NEAR, slot, attempt])
        width = len(words) / k
        out, last = [], 0
        for b in range(k):
            lo, hi = int(b * width) + 3, int((b + 1) * width) - 3  # >= 6 words between replacements
            m = tokens[words[int(rng.integers(lo, hi)) if hi > lo else int(b * width + width / 2)]]
            old = m.group().lower()
            new = self.pool.vocab[int(rng.integers(len(self.pool.vocab)))]
            while new in old:
                new = self.pool.vocab[int(rng.integers(len(self.pool.vocab)))]
            out += [text[last:m.start()], new]
            last = m.end()
        out.append(text[last:])
        return "".join(out)

    def span_insert(self, text: str, source: str, slot: int) -> tuple[str, int, int, int]:
        """``text`` with a span of ``source`` inserted as a paragraph near its middle; returns the
        new text, the span's [start, end) in it and its tokens."""
        rng = np.random.default_rng([self.seed, STREAM_SPAN, slot])
        tokens = list(TOKEN.finditer(source))
        length = min(int(rng.integers(SPAN_TOKENS[0], SPAN_TOKENS[1] + 1)), len(tokens))
        first = int(rng.integers(0, len(tokens) - length + 1))
        span = source[tokens[first].start():tokens[first + length - 1].end()]
        at = text.find(" ", len(text) // 2)
        if at < 0:
            at = len(text)
        new = text[:at] + "\n\n" + span + "\n\n" + text[at + 1:]
        return new, at + 2, at + 2 + len(span), length

    # --- a shard -----------------------------------------------------------------------------

    def write_shard(self, s: int) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from refinery.pipeline.chain import DOCUMENT_SCHEMA

        plan = self.plan
        path = self.folder / "filtered" / f"{shard_id(s)}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        truth, docs, chars, text_bytes = [], 0, 0, 0
        with pq.ParquetWriter(tmp, DOCUMENT_SCHEMA, compression="zstd") as writer:
            for lo in range(plan.starts[s], plan.starts[s + 1], BATCH):
                slots = np.arange(lo, min(lo + BATCH, plan.starts[s + 1]))
                kinds, origins = plan.kind[slots], plan.origin[slots]
                texts, ids, urls, dates = self.base_texts(slots), self.ids(slots), self.urls(slots), self.dates(slots)
                copied = origins[origins >= 0]
                source = dict(zip(copied.tolist(), self.base_texts(copied))) if len(copied) else {}
                source_ids = dict(zip(copied.tolist(), self.ids(copied))) if len(copied) else {}
                for i, (slot, kind, o) in enumerate(zip(slots.tolist(), kinds.tolist(), origins.tolist())):
                    if kind == BASE:
                        continue
                    row = {"kind": KINDS[kind], "copy_id": ids[i], "original_id": source_ids[o],
                           "copy_shard": shard_id(s), "original_shard": shard_id(int(plan.shard_of(o))),
                           "variant": None, "jaccard": None, "span_start": None, "span_end": None, "span_tokens": None}
                    if kind == EXACT:
                        whitespace = bool(self.variant(slot))
                        texts[i] = self.exact_text(source[o], whitespace)
                        row["variant"] = "whitespace" if whitespace else "identical"
                    elif kind == NEAR:
                        texts[i], score = self.near_text(source[o], slot)
                        row["jaccard"] = round(score, 4)
                    elif kind == URL:
                        url = self.urls(np.array([o]))[0]
                        if self.variant(slot):
                            url = url.replace("https://www.", "http://", 1) + "?utm_source=newsletter"
                            row["variant"] = "normalised"
                        else:
                            row["variant"] = "same"
                        urls[i] = url
                        dates[i] = self.dates(np.array([slot]), later_than=np.array([o]))[0]
                    elif kind == SPAN:
                        texts[i], row["span_start"], row["span_end"], row["span_tokens"] = \
                            self.span_insert(texts[i], source[o], slot)
                    truth.append(row)
                writer.write_table(pa.table({
                    "id": ids, "url": urls, "warc_date": dates, "source": ["scale"] * len(slots),
                    "language": ["en"] * len(slots), "language_score": [1.0] * len(slots), "text": texts,
                }, schema=DOCUMENT_SCHEMA))
                docs += len(slots)
                chars += sum(map(len, texts))
                text_bytes += sum(len(t.encode("utf-8")) for t in texts)
        os.replace(tmp, path)
        return {"shard": shard_id(s), "documents": docs, "text_chars": chars, "text_bytes": text_bytes,
                "parquet_bytes": path.stat().st_size, "truth": truth}


_GENERATOR: Generator | None = None  # set before forking the shard writers


def _write_shard(s: int) -> dict:
    return _GENERATOR.write_shard(s)


TRUTH_COLUMNS = {"kind": "string", "copy_id": "string", "original_id": "string", "copy_shard": "string",
                 "original_shard": "string", "variant": "string", "jaccard": "float64", "span_start": "int64",
                 "span_end": "int64", "span_tokens": "int64"}


def generate(folder: Path, n: int, k: int, seed: int = 0, processes: int = 1) -> dict:
    """N documents in K shards under ``folder``: filtered/, truth.parquet, generator.json."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    global _GENERATOR
    folder = Path(folder)
    started = time.perf_counter()
    pool = build_pool()
    plan = make_plan(n, k, seed, pool.mean_chars)
    shutil.rmtree(folder / "filtered", ignore_errors=True)
    (folder / "filtered").mkdir(parents=True)
    _GENERATOR = Generator(pool, plan, folder)
    pool_s = time.perf_counter() - started
    try:
        if processes > 1 and k > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(min(processes, k)) as workers:
                shards = list(workers.imap(_write_shard, range(k)))
        else:
            shards = [_write_shard(s) for s in range(k)]
    finally:
        _GENERATOR = None
    truth = [row for shard in shards for row in shard.pop("truth")]
    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in TRUTH_COLUMNS.items()])
    pq.write_table(pa.Table.from_pylist(truth, schema=schema), folder / "truth.parquet", compression="zstd")
    docs = sum(s["documents"] for s in shards)
    manifest = {
        "generator_version": GENERATOR_VERSION, "documents": docs, "shards": k, "seed": seed,
        "planted": {kind: sum(1 for r in truth if r["kind"] == kind) for kind in RATES},
        "text_chars": sum(s["text_chars"] for s in shards), "text_bytes": sum(s["text_bytes"] for s in shards),
        "mean_chars": round(sum(s["text_chars"] for s in shards) / max(docs, 1), 1),
        "parquet_bytes": sum(s["parquet_bytes"] for s in shards),
        "pool": {"pieces": len(pool.pieces), "vocab": len(pool.vocab), "mean_piece_chars": round(pool.mean_chars, 1),
                 "piece_tokens_max": PIECE_TOKENS, "sources": pool.sources},
        "rates": RATES, "near_jaccard_target": NEAR_JACCARD, "span_tokens": list(SPAN_TOKENS),
        "processes": processes, "pool_seconds": round(pool_s, 2),
        "seconds": round(time.perf_counter() - started, 2), "per_shard": shards,
    }
    (folder / "generator.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def ensure_data(folder: Path, n: int, k: int, seed: int, processes: int, regenerate: bool) -> dict:
    """The generated documents in ``folder``, made in a child process unless they are there already."""
    from map_phase import OFFLINE_ENV, run_measured

    manifest_path = folder / "generator.json"
    if manifest_path.exists() and not regenerate:
        manifest = json.loads(manifest_path.read_text())
        if (manifest.get("generator_version"), manifest["documents"], manifest["shards"], manifest["seed"]) == \
                (GENERATOR_VERSION, n, k, seed) and len(list((folder / "filtered").glob("*.parquet"))) == k:
            manifest["reused"] = True
            return manifest
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)
    result = folder / "_generator_result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "generate", "--data", str(folder), "--n", str(n),
           "--shards", str(k), "--seed", str(seed), "--processes", str(processes), "--result", str(result)]
    print(f"generating {n:,} documents in {k} shards into {folder} ...", file=sys.stderr, flush=True)
    measured = run_measured(cmd, {**os.environ, **OFFLINE_ENV, "PYTHONWARNINGS": "ignore"},
                            str(folder / "_generator.log"), str(result), "generator")
    result.unlink(missing_ok=True)
    manifest = json.loads(manifest_path.read_text())
    manifest.update(reused=False, process_wall_s=round(measured["process_wall_s"], 2),
                    tree_cpu_s=round(measured["tree_cpu_s"], 1))
    print(f"    {manifest['text_bytes'] / 1e6:,.0f} MB of text, mean {manifest['mean_chars']:,.0f} chars, "
          f"{manifest['seconds']:.0f} s", file=sys.stderr, flush=True)
    return manifest


# ---------------------------------------------------------------------------------------------
# runner child
# ---------------------------------------------------------------------------------------------

def folder_bytes(path: Path | str) -> int:
    total, stack = 0, [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:  # removed while we walk
                        continue
        except OSError:
            continue
    return total


class DiskSampler:
    """Every `interval` seconds, in a daemon thread: the size of each named folder; keeps peaks."""

    def __init__(self, folders: dict[str, Path], interval: float = 1.0):
        self.folders = dict(folders)
        self.interval = interval
        self.peak: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="DiskSampler")

    def add(self, name: str, paths: list[str]) -> None:
        self.folders = {**self.folders, **{f"{name}{i}": Path(p) for i, p in enumerate(paths)}}

    def _sample(self) -> None:
        total = 0
        for name, folder in self.folders.items():
            size = folder_bytes(folder)
            self.peak[name] = max(self.peak.get(name, 0), size)
            total += size
        self.peak_total = max(getattr(self, "peak_total", 0), total)  # all folders at one time
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def peaks(self) -> dict[str, int]:
        """Peak bytes per folder; numbered folders (scratch0, scratch1) also summed per name."""
        out = dict(self.peak)
        for name in {re.sub(r"\d+$", "", k) for k in self.peak if re.search(r"\d$", k)}:
            out[f"{name}_total"] = sum(v for k, v in self.peak.items() if re.fullmatch(rf"{name}\d+", k))
        return out


def timed_engine_class():
    """An Engine that times each task list it runs (a phase) and keeps resolve's own per-stage
    seconds, which deduplicate() folds into its timings."""
    from refinery.engine import Engine

    class TimedEngine(Engine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.phases: list[dict] = []
            self.resolve_summary: dict = {}

        def _timed(self, name: str, tasks: int, call):
            began = time.perf_counter()
            result = call()
            self.phases.append({"phase": name, "tasks": tasks, "start": began, "seconds": time.perf_counter() - began})
            return result

        def run(self, tasks, on_result=None, report=None):
            name = tasks[0].key.split("-")[0] if tasks else "empty"
            return self._timed(name, len(tasks), lambda: super(TimedEngine, self).run(tasks, on_result, report))

        def run_here(self, task):
            result = self._timed(task.key.split("-")[0], 1, lambda: super(TimedEngine, self).run_here(task))
            if isinstance(result, dict):
                self.resolve_summary = {k: result[k] for k in ("seconds", "stage_seconds") if k in result}
            return result

        def phase_seconds(self) -> dict[str, float]:
            out: dict[str, float] = {}
            for p in self.phases:
                out[p["phase"]] = round(out.get(p["phase"], 0.0) + p["seconds"], 3)
            return out

    return TimedEngine


def dedup_entries(stages: list[str], overrides: dict | None = None) -> list[dict]:
    """configs/english.yaml's dedup entries for ``stages`` (refinery stage names), in its order;
    ``overrides`` ({stage: {key: value}}) replaces settings of a stage."""
    import yaml

    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    entries = [entry for entry in raw["dedup"] if next(iter(entry)) in stages]
    missing = set(stages) - {next(iter(e)) for e in entries}
    if missing:
        raise SystemExit(f"{CONFIG} has no dedup stage {sorted(missing)}")
    for entry in entries:
        name = next(iter(entry))
        if (overrides or {}).get(name):
            entry[name] = {**(entry[name] or {}), **overrides[name]}
    return entries


def clean_outputs(folder: Path) -> None:
    for name in RUN_OUTPUTS:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
    for name in ("stats.json",):
        (folder / name).unlink(missing_ok=True)


def scale_sampler(pid: int, interval: float = 0.1, external: list[int] | None = None):
    """dedup.RssSampler (RSS of `pid` and of each descendant) that also keeps each process's
    latest CPU seconds, so that a worker restarted mid-run (killed for memory) still counts.
    `external` (pids, with their descendants) are sampled as well: the `dask worker` processes of
    an existing scheduler, which are not our descendants."""
    from dedup import RssSampler

    class ScaleSampler(RssSampler):
        def __init__(self, pid: int, interval: float, external: list[int]):
            super().__init__(pid, interval)
            self.cpu: dict[int, float] = {}
            self._procs: dict = {}
            self.external = [self._psutil.Process(p) for p in external if self._psutil.pid_exists(p)]
            for proc in self.external:
                self.kinds[proc.pid] = "nanny (dask worker)"

        def _sample(self) -> None:
            super()._sample()
            if not self.samples:
                return
            per = self.samples[-1][2]
            for root in self.external:  # a nanny restarts its worker as a new child: walk each time
                try:
                    procs = [root, *root.children(recursive=True)]
                except self._psutil.Error:
                    continue
                for proc in procs:
                    try:
                        per[proc.pid] = proc.memory_info().rss
                    except self._psutil.Error:
                        continue
                    if proc.pid not in self.kinds:
                        self.kinds[proc.pid] = self._kind(proc)
            for child in per:
                try:
                    proc = self._procs.setdefault(child, self._psutil.Process(child))
                    t = proc.cpu_times()
                    self.cpu[child] = max(self.cpu.get(child, 0.0), t.user + t.system)
                except self._psutil.Error:
                    continue

        def workers(self, start: float, end: float, known: list[int]) -> list[int]:
            """Worker processes alive in [start, end]: `known` and any later spawned one."""
            seen = {p for t, _, per in self.samples if start <= t <= end for p in per}
            return sorted(set(known) | {p for p in seen if self.kinds.get(p) == "spawned worker"})

    return ScaleSampler(pid, interval, external or [])


def dask_processes(role: str, address: str | None = None) -> tuple[list[int], str]:
    """Local `dask <role>` processes (role: worker or scheduler), found by their command line;
    those naming ``address``'s port when any do (another cluster may run here), else all.
    Returns (pids, how they were matched)."""
    import psutil

    port = address.rsplit(":", 1)[-1] if address else None
    named, with_port = [], []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["pid"] == os.getpid() or not re.search(rf"\bdask[ -]{role}\b", cmd):
            continue
        named.append(proc.info["pid"])
        if port and re.search(rf"(:|--port[ =]){port}\b", cmd):
            with_port.append(proc.info["pid"])
    return (with_port, "name and port") if with_port else (named, "name only")


def _cpu_s(pids: list[int]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            continue
    return out


def _external_workers(client, address: str) -> tuple[list[int], str]:
    """The `dask worker` processes behind the scheduler at ``address`` that run on this machine
    (found by name; by name alone only those that are parents of a worker the scheduler reports)."""
    import socket

    import psutil

    here = socket.gethostname()
    reported = [pid for (_, pid), (_, host) in zip(sorted(client.run(os.getpid).items()),
                                                     sorted(client.run(socket.gethostname).items())) if host == here]
    roots, how = dask_processes("worker", address)
    if how == "name only":
        parents = set()
        for pid in reported:
            try:
                parents.update(p.pid for p in psutil.Process(pid).parents())
            except psutil.Error:
                continue
        roots = [r for r in roots if r in parents]
    if not roots:  # no nanny (--no-nanny) or not found: the worker processes themselves
        roots, how = reported, "reported by the scheduler"
    return roots, how


def _task_name(key) -> str:
    """A Dask key's kind: ``('shuffle-transfer-<token>', 4)`` -> ``shuffle-transfer``, ``range-0-4`` -> ``range``."""
    name = key[0] if isinstance(key, tuple) else str(key)
    name = name.split("-scale-")[0]  # refinery's per-shard tasks: apply-scale-00013 -> apply
    parts = name.split("-")
    while len(parts) > 1 and (parts[-1].isdigit() or (len(parts[-1]) >= 8 and all(c in "0123456789abcdef" for c in parts[-1]))):
        parts.pop()
    return "-".join(parts)


def _peak_by_task(stream: list[dict], addresses: dict[str, int], rows: list, offset: float,
                  worker_pids: list[int]) -> dict[str, float]:
    """The highest RSS (MiB) a worker reached while it computed a task of each kind (key prefix):
    which step of the resolution needs the memory. The ten highest kinds."""
    mib = 1 / 2**20
    peaks: dict[str, float] = {}
    for task in stream:
        pid = addresses.get(task.get("worker"))
        if pid not in worker_pids:
            continue
        for span in task.get("startstops", ()):
            if span.get("action") != "compute":
                continue
            start, stop = span["start"] - offset, span["stop"] - offset + 0.2  # RSS is sampled every 0.1 s
            top = max((per.get(pid, 0) for t, _, per in rows if start <= t <= stop), default=0) * mib
            name = _task_name(task["key"])
            peaks[name] = max(peaks.get(name, 0.0), round(top, 1))
    return dict(sorted(peaks.items(), key=lambda item: -item[1])[:10])


def _child_run(data: str, stages: list[str], shuffle: str, workers: int, scheduler: str | None = None,
               overrides: dict | None = None) -> dict:
    import dask

    from refinery.config import RunConfig, dedup_only_config
    from refinery.io import InputShard
    from refinery.pipeline.run import deduplicate

    folder = Path(data)
    config = dedup_only_config("scale", dedup_entries(stages, overrides),
                               RunConfig(workers=workers, threads_per_worker=1, dashboard=False, shuffle=shuffle))
    clean_outputs(folder)
    files = sorted((folder / "filtered").glob("*.parquet"))
    shards = [InputShard(path=str(f), shard_id=f.stem) for f in files]
    if "minhash_dedup" in stages:
        from refinery.minhash import MinHasher

        spec = next(s.config for s in config.dedup if s.name == "minhash_dedup")
        MinHasher(spec.bands * spec.rows, spec.bands, spec.rows).signatures(["warm the numba cache"])

    engine_class = timed_engine_class()
    disk = DiskSampler({"dedup": folder / "dedup", "documents": folder / "documents"})
    external, matched, scheduler_pids = [], None, []
    if scheduler:  # its workers are not our descendants: sample the `dask worker` processes by name
        from distributed import Client

        with Client(scheduler, timeout=10) as probe:
            external, matched = _external_workers(probe, scheduler)
        scheduler_pids, how = dask_processes("scheduler", scheduler)
        scheduler_pids = scheduler_pids if how == "name and port" and len(scheduler_pids) == 1 else []
    with scale_sampler(os.getpid(), external=external + scheduler_pids) as rss, disk:
        t0 = time.perf_counter()
        with engine_class(workers=workers, threads_per_worker=1, shuffle=shuffle, scheduler=scheduler) as engine:
            t1 = time.perf_counter()
            started_pids = sorted(engine.client.run(os.getpid).values())
            disk.add("scratch", sorted(engine.client.run(lambda dask_worker: dask_worker.local_directory).values()))
            cpu0 = _cpu_s([os.getpid(), *started_pids])
            from distributed import get_task_stream

            addresses = engine.client.run(os.getpid)
            with dask.config.set({"dataframe.shuffle.method": shuffle}), \
                    get_task_stream(client=engine.client) as stream:
                applied, summary = deduplicate(config, shards, str(folder), engine)
            offset = time.time() - time.perf_counter()  # task stream times are wall-clock
            cpu1 = _cpu_s([os.getpid(), *rss.workers(t1, time.perf_counter(), started_pids)])
            t2 = time.perf_counter()
        t3 = time.perf_counter()

    mib = 1 / 2**20
    worker_pids = rss.workers(t1, t2, started_pids)
    rows = [s for s in rss.samples if t1 <= s[0] <= t2]
    driver_peak = max((d for _, d, _ in rows), default=0)
    per_worker = {pid: max((per.get(pid, 0) for _, _, per in rows), default=0) for pid in worker_pids}
    others: dict[int, int] = {}  # resource tracker, nannies of external workers and the like
    for _, _, per in rows:
        for pid, value in per.items():
            if pid not in per_worker and pid not in scheduler_pids:
                others[pid] = max(others.get(pid, 0), value)
    scheduler_peak = max((per.get(pid, 0) for _, _, per in rows for pid in scheduler_pids), default=None)
    workers_total = max((sum(per.get(pid, 0) for pid in worker_pids) for _, _, per in rows), default=0)
    # a worker gone before the end (restarted) counts with the last CPU time sampled
    cpu = {pid: cpu1.get(pid, rss.cpu.get(pid, 0.0)) - cpu0.get(pid, 0.0) for pid in worker_pids}
    driver_cpu = cpu1.get(os.getpid(), 0.0) - cpu0.get(os.getpid(), 0.0)
    return {
        "stages": stages, "shuffle": shuffle, "workers": workers, "shards": len(shards),
        "dedup_settings": {s.name: (s.config.model_dump() if hasattr(s.config, "model_dump") else str(s.config))
                           for s in config.dedup},
        # LocalCluster: the scheduler and nannies live in the driver; an existing scheduler: neither does
        "cluster": {"scheduler": scheduler, "workers_matched_by": matched, "external_roots": external,
                    "scheduler_pid": scheduler_pids[0] if scheduler_pids else None} if scheduler else "LocalCluster",
        "worker_processes_seen": len(worker_pids),  # more than `workers`: a worker was restarted
        "cluster_start_s": round(t1 - t0, 3), "dedup_wall_s": round(t2 - t1, 3), "cluster_close_s": round(t3 - t2, 3),
        "phases_wall_s": engine.phase_seconds(), "phases": [{**p, "start": round(p["start"] - t1, 3),
                                                              "seconds": round(p["seconds"], 3)} for p in engine.phases],
        "timings": summary.get("timings", {}), "resolve_stage_seconds": engine.resolve_summary.get("stage_seconds", {}),
        "per_stage": summary.get("per_stage", {}),
        "docs_in": sum(r.funnel[0]["docs_in"] for r in applied) if applied and applied[0].funnel else None,
        "docs_out": sum(r.documents for r in applied),
        "cpu_s": {"driver": round(driver_cpu, 2), "workers": round(sum(cpu.values()), 2),
                  "total": round(driver_cpu + sum(cpu.values()), 2)},
        "rss_mib": {"peak_driver": round(driver_peak * mib, 1),
                    "peak_worker": round(max(per_worker.values(), default=0) * mib, 1),
                    "peak_workers_total": round(workers_total * mib, 1),
                    "per_worker": {str(pid): round(v * mib, 1) for pid, v in per_worker.items()},
                    "other_descendants": {f"{pid} {rss.kinds.get(pid, '?')}": round(v * mib, 1) for pid, v in others.items()},
                    "scheduler_process": round(scheduler_peak * mib, 1) if scheduler_peak is not None else None,
                    # the peak of one worker within each phase: which step needs the memory
                    "peak_worker_by_phase": {
                        p["phase"]: round(max((per.get(pid, 0) for t, _, per in rows
                                               if p["start"] <= t <= p["start"] + p["seconds"] for pid in worker_pids),
                                              default=0) * mib, 1) for p in engine.phases},
                    "peak_worker_by_task": _peak_by_task(stream.data, addresses, rows, offset, worker_pids),
                    "samples": len(rows)},
        "disk_bytes": {**{f"peak_{k}": v for k, v in disk.peaks().items()}, "peak_all_at_once": disk.peak_total,
                       "final_dedup": folder_bytes(folder / "dedup"), "final_documents": folder_bytes(folder / "documents"),
                       "filtered": folder_bytes(folder / "filtered"), "samples": disk.samples},
    }


# ---------------------------------------------------------------------------------------------
# check against the ground truth
# ---------------------------------------------------------------------------------------------

def surviving_share(copy_text: str, out_text: str, start: int, end: int) -> float:
    """The share of [start, end)'s token characters of ``copy_text`` still in ``out_text``, which is
    ``copy_text`` with whole-token ranges cut (whitespace tidied): its tokens, aligned greedily
    in order with the copy's, mark the survivors."""
    out = out_text.split()
    j, kept, total = 0, 0, 0
    for m in TOKEN.finditer(copy_text):
        inside = m.start() >= start and m.end() <= end
        survives = j < len(out) and out[j] == m.group()
        if survives:
            j += 1
        if inside:
            total += len(m.group())
            kept += len(m.group()) if survives else 0
    return kept / total if total else 0.0


def check(folder: Path, stages: list[str]) -> dict:
    import pyarrow.parquet as pq

    truth = pq.read_table(folder / "truth.parquet").to_pylist()
    files = sorted((folder / "filtered").glob("*.parquet"))
    alive: set[str] = set()
    for f in files:
        out = folder / "documents" / f.name
        if out.exists():
            alive.update(pq.read_table(out, columns=["id"]).column("id").to_pylist())
    docs_in = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    config = {next(iter(e)): next(iter(e.values())) or {} for e in dedup_entries(stages)}

    pairs = [r for r in truth if r["kind"] in ("exact", "near", "url")]
    in_pairs = {x for r in pairs for x in (r["copy_id"], r["original_id"])}
    report: dict = {"docs_in": docs_in, "docs_out": len(alive), "removed": docs_in - len(alive)}
    for kind in ("exact", "near", "url"):
        rows = [r for r in truth if r["kind"] == kind]
        states = [(r["copy_id"] in alive, r["original_id"] in alive) for r in rows]
        resolved = sum(a != b for a, b in states)
        entry = {"planted": len(rows), "resolved": resolved, "recall": round(resolved / len(rows), 4) if rows else None,
                 "both_kept": sum(a and b for a, b in states), "both_removed": sum(not a and not b for a, b in states)}
        if kind == "url":
            entry["newest_kept"] = sum(a and not b for a, b in states)
        if kind == "near" and rows:
            js = [r["jaccard"] for r in rows]
            entry["jaccard"] = {"min": min(js), "mean": round(statistics.mean(js), 4), "max": max(js)}
            missed = [r["jaccard"] for r, (a, b) in zip(rows, states) if a and b]
            entry["missed_jaccards"] = sorted(missed)[:20]
            if "minhash_dedup" in config:  # what LSH finds on average at these J: 1 - (1 - J^rows)^bands
                bands, rows_ = config["minhash_dedup"].get("bands", 450), config["minhash_dedup"].get("rows", 20)
                entry["expected_recall_lsh"] = round(statistics.mean(1 - (1 - j**rows_) ** bands for j in js), 4)
        report[kind] = entry

    spans = {r["copy_id"]: r for r in truth if r["kind"] == "span"}
    sources = {r["original_id"]: r for r in spans.values()}
    near_members = {x for r in truth if r["kind"] == "near" for x in (r["copy_id"], r["original_id"])}
    cutter = config.get("substring_dedup")
    # suffix arrays find repeats only within a part of max_part_bytes of a group's text; window
    # hashes (method window_hash, or auto on a bigger group) across the whole group
    by_parts = cutter is not None and cutter.get("method", "suffix_array") == "suffix_array"
    group_size = (cutter or {}).get("shards_per_group") or max(len(files), 1)
    max_part = (cutter or {}).get("max_part_bytes") or 100_000_000
    part_of: dict[str, tuple[int, int]] = {}
    part, part_bytes, group = -1, 0, -1
    source_out: dict[str, str | None] = {}
    span_rows: list[dict] = []
    fp_removed = {"unplanted": 0, "span_source": 0}
    collateral_docs, collateral_chars = 0, 0
    for index, f in enumerate(files):
        if index // group_size != group:  # a new substring group starts its parts afresh
            group, part, part_bytes = index // group_size, part + 1, 0
        src = pq.read_table(f, columns=["id", "text"])
        out_path = folder / "documents" / f.name
        out = dict(zip(*(pq.read_table(out_path, columns=["id", "text"]).column(c).to_pylist() for c in ("id", "text")))) \
            if out_path.exists() else {}
        for doc_id, text in zip(src.column("id").to_pylist(), src.column("text").to_pylist()):
            if doc_id in out and by_parts:  # the part boundaries as find_cuts draws them, over the documents kept
                size = len(text.encode("utf-8", "surrogatepass"))
                if part_bytes and part_bytes + size > max_part:
                    part, part_bytes = part + 1, 0
                part_bytes += size
            if doc_id in sources or doc_id in spans:
                part_of[doc_id] = (group, part)
            if doc_id in sources:
                source_out[doc_id] = out.get(doc_id)
            if doc_id in spans:
                r = spans[doc_id]
                span = text[r["span_start"]:r["span_end"]]
                if doc_id in out:
                    share = surviving_share(text, out[doc_id], r["span_start"], r["span_end"])
                    span_rows.append({"row": r, "share": share, "removed": False, "absent": span not in out[doc_id],
                                      "span": span})
                else:  # dropped: too short after the cut (or a false positive of a whole-document stage)
                    span_rows.append({"row": r, "share": 0.0, "removed": True, "absent": True, "span": span})
                continue
            if doc_id not in out:
                if doc_id not in in_pairs:
                    fp_removed["span_source" if doc_id in sources else "unplanted"] += 1
            elif out[doc_id] != text and doc_id not in near_members:
                collateral_docs += 1
                collateral_chars += len(text) - len(out[doc_id])

    def cut(s: dict) -> bool:
        return s["share"] <= 1 - SPAN_CUT_SHARE

    findable = [s for s in span_rows if part_of.get(s["row"]["copy_id"]) == part_of.get(s["row"]["original_id"])]
    report["span"] = {
        "planted": len(spans), "cut": sum(map(cut, span_rows)),
        "recall": round(sum(map(cut, span_rows)) / len(spans), 4) if spans else None,
        "copy_dropped": sum(s["removed"] for s in span_rows), "text_absent": sum(s["absent"] for s in span_rows),
        "sources_intact": sum(1 for s in span_rows if source_out.get(s["row"]["original_id"]) is not None
                              and s["span"] in source_out[s["row"]["original_id"]]),
        "findable": len(findable) if cutter is not None else None,
        "findable_by": ("the same part of max_part_bytes (suffix_array)" if by_parts else "the same group")
        if cutter is not None else None,
        "recall_of_findable": (round(sum(map(cut, findable)) / len(findable), 4)
                               if cutter is not None and findable else None),
        "parts_simulated": part + 1 if by_parts else None,
    }
    outside = docs_in - len(in_pairs) - len(spans)
    report["false_positives"] = {
        # span copies dropped as too short after their cut are not counted here (span.copy_dropped)
        "removed_outside_pairs": sum(fp_removed.values()), "by_role": fp_removed,
        "rate": round(sum(fp_removed.values()) / outside, 6) if outside else None,
        "cut_docs_outside_span_and_near_pairs": collateral_docs, "cut_chars_outside": collateral_chars,
    }
    return report


# ---------------------------------------------------------------------------------------------
# parent: run
# ---------------------------------------------------------------------------------------------

def _child_cmd(kind: str, result: str, *args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--result", result, *args]


def run_one(folder: Path, stages: list[str], shuffle: str, workers: int, scheduler: str | None = None,
            overrides: dict | None = None) -> dict:
    from dedup import THREAD_ENV
    from map_phase import OFFLINE_ENV, run_measured

    log_dir = Path(tempfile.mkdtemp(prefix="refinery-scale-"))
    result_path = str(log_dir / "_result.json")
    cmd = _child_cmd("run", result_path, "--data", str(folder), "--stages", ",".join(stages), "--shuffle", shuffle,
                     "--workers", str(workers))
    if scheduler:
        cmd += ["--scheduler", scheduler]
    if overrides:
        cmd += ["--overrides", json.dumps(overrides)]
    env = {**os.environ, **OFFLINE_ENV, **THREAD_ENV, "PYTHONWARNINGS": "ignore"}
    result = run_measured(cmd, env, str(log_dir / "child.log"), result_path, "scale run")
    shutil.rmtree(log_dir, ignore_errors=True)
    return result


def _pct(entry: dict | None, ran: bool) -> str:
    if not ran or not entry or entry.get("recall") is None:
        return "-"
    return f"{100 * entry['recall']:.1f}%"


def markdown(records: list[dict]) -> str:
    lines = [("| documents | shards | text MB | dedup | shuffle | wall s | CPU s (driver + workers) "
              "| keys / resolve / substring / apply, wall s | peak worker RSS MiB | peak driver RSS MiB "
              "| dedup/ peak MB | exact | near | url | span | removed outside pairs |"),
             "|---:|---:|---:|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        gen = r["generator"]
        if "failed" in r:
            lines.append(f"| {gen['documents']:,} | {gen['shards']} | {gen['text_bytes'] / 1e6:,.0f} "
                         f"| {','.join(k for k, v in DEDUP_STAGES.items() if v in r['settings']['stages'])} "
                         f"| {r['settings']['shuffle']} | failed | | | | | | | | | | |")
            continue
        run, check_ = r["run"], r["check"]
        ph = run["phases_wall_s"]
        phases = " / ".join(f"{ph[p]:.1f}" if p in ph else "-" for p in ("keys", "resolve", "substring", "apply"))
        ran = {kind: DEDUP_STAGES[kind] in run["stages"] for kind in DEDUP_STAGES}
        lines.append(
            f"| {gen['documents']:,} | {gen['shards']} | {gen['text_bytes'] / 1e6:,.0f} "
            f"| {','.join(k for k in DEDUP_STAGES if ran[k])} "
            f"| {run['shuffle']}{', scheduler' if run.get('cluster', 'LocalCluster') != 'LocalCluster' else ''} "
            f"| {run['dedup_wall_s']:.1f} "
            f"| {run['cpu_s']['total']:.0f} ({run['cpu_s']['driver']:.0f} + {run['cpu_s']['workers']:.0f}) | {phases} "
            f"| {run['rss_mib']['peak_worker']:,.0f} | {run['rss_mib']['peak_driver']:,.0f} "
            f"| {run['disk_bytes']['peak_dedup'] / 1e6:,.0f} | {_pct(check_['exact'], ran['exact'])} "
            f"| {_pct(check_['near'], ran['minhash'])} | {_pct(check_['url'], ran['url'])} "
            f"| {_pct(check_['span'], ran['substring'])} | {check_['false_positives']['removed_outside_pairs']} |")
    return "\n".join(lines)


def append_records(path: Path, records: list[dict]) -> None:
    existing = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else []
    if not isinstance(existing, list):
        existing = [existing]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(existing + records, indent=2) + "\n")


def parse_stages(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in DEDUP_STAGES]
    if unknown or not names:
        raise SystemExit(f"--dedup: unknown {unknown}; choose from {','.join(DEDUP_STAGES)}")
    return [DEDUP_STAGES[k] for k in DEDUP_STAGES if k in names]  # english.yaml's order


def command_run(args) -> int:
    from dedup import _report_header

    stages = parse_stages(args.dedup)
    out = Path(args.out).resolve()
    records = []
    for n in args.docs:
        folder = out / f"n{n}"
        manifest = ensure_data(folder, n, args.shards, args.seed, args.processes, args.regenerate)
        manifest = {k: v for k, v in manifest.items() if k != "per_shard"}
        for repeat in range(args.repeat):
            print(f"[{n:,} docs, {repeat + 1}/{args.repeat}] deduplicate: {' -> '.join(stages)}, "
                  f"shuffle {args.shuffle} ...", file=sys.stderr, flush=True)
            record = {**_report_header(args), "benchmark": "scale", "documents": n, "shards": args.shards,
                      "seed": args.seed, "data": str(folder), "generator": manifest,
                      "settings": {"stages": stages, "shuffle": args.shuffle, "workers": args.workers,
                                   "scheduler": args.scheduler}}
            try:
                run = run_one(folder, stages, args.shuffle, args.workers, args.scheduler)
            except SystemExit as err:  # a failed size (memory, disk) is a result too; go on with the next
                record["failed"] = str(err)[-4000:]
                append_records(Path(args.json), [record])
                records.append(record)
                print(f"    failed: {str(err)[:2000]}", file=sys.stderr, flush=True)
                break
            started = time.perf_counter()
            result = check(folder, stages)
            result["seconds"] = round(time.perf_counter() - started, 1)
            record.update(run=run, check=result)
            record["table_markdown"] = markdown([record])
            append_records(Path(args.json), [record])
            records.append(record)
            print(f"    wall {run['dedup_wall_s']:.1f} s, peak worker {run['rss_mib']['peak_worker']:,.0f} MiB, "
                  f"recall exact {_pct(result['exact'], True)} near {_pct(result['near'], True)} "
                  f"url {_pct(result['url'], True)} span {_pct(result['span'], True)}", file=sys.stderr, flush=True)
        if args.clean:
            clean_outputs(folder)
    print(markdown(records))
    print(f"appended {len(records)} record(s) to {args.json}", file=sys.stderr)
    return 0


def command_generate(args) -> int:
    if len(args.docs) != 1:
        raise SystemExit("generate takes one --docs N")
    manifest = generate(Path(args.out), args.docs[0], args.shards, args.seed, args.processes)
    print(json.dumps({k: v for k, v in manifest.items() if k != "per_shard"}, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------
# datatrove: refinery's MinHash against datatrove's, on the same generated documents
# ---------------------------------------------------------------------------------------------

DATATROVE_ENGINES = {  # name: jaccard_to_kept for refinery's minhash_dedup, None for datatrove
    "refinery": True, "refinery-nojaccard": False, "datatrove": None}
DATATROVE_PHASES = ("signatures", "buckets", "cluster", "filter")


def removal_check(truth: list[dict], ids: list[str], removed: set[str]) -> dict:
    """Recall of a whole-document dedup from the ids it removed: a planted exact or near pair is
    resolved when exactly one of its two documents is gone. Anything removed outside those pairs
    (URL re-crawls and span pairs have texts of their own) is a false positive."""
    report: dict = {"docs_in": len(ids), "removed": len(removed), "removed_unknown_ids": len(removed - set(ids))}
    in_pairs: set[str] = set()
    for kind in ("exact", "near"):
        rows = [r for r in truth if r["kind"] == kind]
        states = [(r["copy_id"] in removed, r["original_id"] in removed) for r in rows]
        resolved = sum(a != b for a, b in states)
        report[kind] = {"planted": len(rows), "resolved": resolved,
                        "recall": round(resolved / len(rows), 4) if rows else None,
                        "both_removed": sum(a and b for a, b in states),
                        "neither_removed": sum(not a and not b for a, b in states)}
        if kind == "near":
            report[kind]["missed_jaccards"] = sorted(r["jaccard"] for r, (a, b) in zip(rows, states) if not a and not b)[:20]
        in_pairs.update(x for r in rows for x in (r["copy_id"], r["original_id"]))
    role = {}
    for r in truth:
        if r["kind"] in ("url", "span"):
            role[r["copy_id"]], role[r["original_id"]] = f"{r['kind']}_copy", f"{r['kind']}_original"
    outside = removed - in_pairs
    by_role: dict[str, int] = {}
    for x in outside:
        by_role[role.get(x, "unplanted")] = by_role.get(role.get(x, "unplanted"), 0) + 1
    report["false_positives"] = {"removed_outside_pairs": len(outside), "by_role": by_role,
                                 "rate": round(len(outside) / max(len(ids) - len(in_pairs), 1), 6)}
    return report


def _ids(files: list[Path]) -> list[str]:
    import pyarrow.parquet as pq

    return [x for f in files for x in pq.read_table(f, columns=["id"]).column("id").to_pylist()]


def run_refinery_minhash(folder: Path, workers: int, jaccard_to_kept: bool, truth: list[dict], ids: list[str]) -> dict:
    """deduplicate() with minhash_dedup alone (english.yaml's settings), in a fresh child process."""
    run = run_one(folder, ["minhash_dedup"], "tasks", workers,
                  overrides={"minhash_dedup": {"jaccard_to_kept": jaccard_to_kept}})
    alive = set(_ids(sorted((folder / "documents").glob("*.parquet"))))
    removed = set(ids) - alive
    check_ = removal_check(truth, ids, removed)
    check_["removed_by_summary"] = run["per_stage"].get("minhash_dedup", {}).get("removed")
    return {
        "total_wall_s": round(run["cluster_start_s"] + run["dedup_wall_s"] + run["cluster_close_s"], 3),
        "phases_s": {"cluster_start": run["cluster_start_s"], **run["phases_wall_s"], "cluster_close": run["cluster_close_s"]},
        "dedup_only_s": run["dedup_wall_s"], "process_wall_s": round(run["process_wall_s"], 2),
        "tree_cpu_s": round(run["tree_cpu_s"], 1),
        "peak_worker_rss_mib": run["rss_mib"]["peak_worker"], "peak_driver_rss_mib": run["rss_mib"]["peak_driver"],
        "peak_disk_bytes": run["disk_bytes"]["peak_all_at_once"], "removed": len(removed), "check": check_, "run": run,
    }


def run_datatrove_minhash(folder: Path, workers: int, work: Path, truth: list[dict], ids: list[str]) -> dict:
    """datatrove 0.10.1's four MinHash stages exactly as `benchmarks/dedup.py speed` runs them (its
    child, reading folder/filtered/ in place), in a fresh child process; its work folder (signatures,
    buckets, remove, documents, logs) is walked every second from here."""
    from dedup import THREAD_ENV
    from map_phase import OFFLINE_ENV, run_measured

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    result_path = str(work / "_result.json")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "dedup.py"), "--child", "datatrove", "--result", result_path,
           "--out", str(work / "run"), "--data", str(folder / "filtered"), "--workers", str(workers)]
    env = {**os.environ, **OFFLINE_ENV, **THREAD_ENV, "PYTHONWARNINGS": "ignore"}
    with DiskSampler({"run": work / "run"}) as disk:
        result = run_measured(cmd, env, str(work / "child.log"), result_path, "datatrove")
    removed = set(result.pop("removed_ids"))
    result.pop("cluster_of", None)
    check_ = removal_check(truth, ids, removed)
    check_["removed_by_filter_stats"] = result["removed"]
    rss = result.pop("rss")
    rss.pop("processes", None)
    return {
        "total_wall_s": round(result["wall_s"], 3), "phases_s": {k: round(v, 3) for k, v in result["phases_s"].items()},
        "process_wall_s": round(result["process_wall_s"], 2), "tree_cpu_s": round(result["tree_cpu_s"], 1),
        "peak_worker_rss_mib": rss["peak_worker_rss_mib"], "peak_driver_rss_mib": rss["peak_driver_rss_mib"],
        "peak_disk_bytes": disk.peak_total,
        "final_disk_bytes": {sub: folder_bytes(work / "run" / sub) for sub in ("signatures", "buckets", "remove", "documents")},
        "removed": len(removed), "check": check_, "rss": rss,
        "run": {k: v for k, v in result.items() if k not in ("phases_s",)},
    }


def datatrove_markdown(records: list[dict]) -> str:
    lines = [("| documents | engine | total wall s | phases s | CPU s (process tree) | peak worker RSS MiB "
              "| peak driver RSS MiB | disk peak MB | removed | exact recall | near recall | removed outside pairs |"),
             "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        for engine, e in r["engines"].items():
            if "failed" in e:
                lines.append(f"| {r['documents']:,} | {engine} | failed | | | | | | | | | |")
                continue
            phases = " / ".join(f"{k.replace('cluster_', '')} {v:.1f}" for k, v in e["phases_s"].items())
            c = e["check"]
            lines.append(f"| {r['documents']:,} | {engine} | {e['total_wall_s']:.1f} | {phases} | {e['tree_cpu_s']:.0f} "
                         f"| {e['peak_worker_rss_mib']:,.0f} | {e['peak_driver_rss_mib']:,.0f} "
                         f"| {e['peak_disk_bytes'] / 1e6:,.0f} | {e['removed']:,} | {_pct(c['exact'], True)} "
                         f"| {_pct(c['near'], True)} | {c['false_positives']['removed_outside_pairs']} |")
    return "\n".join(lines)


def command_datatrove(args) -> int:
    import pyarrow.parquet as pq
    from dedup import _report_header

    out = Path(args.out).resolve()
    engines = list(DATATROVE_ENGINES)
    records = []
    for n in args.docs:
        folder = out / f"n{n}"
        manifest = ensure_data(folder, n, args.shards, args.seed, args.processes, args.regenerate)
        manifest = {k: v for k, v in manifest.items() if k != "per_shard"}
        truth = pq.read_table(folder / "truth.parquet").to_pylist()
        ids = _ids(sorted((folder / "filtered").glob("*.parquet")))
        for round_ in range(args.repeat):
            record = {**_report_header(args), "benchmark": "scale_datatrove", "documents": n, "shards": args.shards,
                      "seed": args.seed, "data": str(folder), "generator": manifest, "workers": args.workers,
                      "shape": {"ngram": 5, "bands": 450, "rows": 20}, "round": round_ + 1, "engines": {}}
            for engine in engines[round_ % 3:] + engines[:round_ % 3]:  # a different one goes first each round
                print(f"[{n:,} docs, {round_ + 1}/{args.repeat}] {engine} ...", file=sys.stderr, flush=True)
                try:
                    if DATATROVE_ENGINES[engine] is None:
                        result = run_datatrove_minhash(folder, args.workers, folder / "datatrove-work", truth, ids)
                        if not args.keep:
                            shutil.rmtree(folder / "datatrove-work", ignore_errors=True)
                    else:
                        result = run_refinery_minhash(folder, args.workers, DATATROVE_ENGINES[engine], truth, ids)
                except SystemExit as err:  # recorded; the other engines still run
                    result = {"failed": str(err)[-4000:]}
                    print(f"    failed: {str(err)[:2000]}", file=sys.stderr, flush=True)
                else:
                    print(f"    {result['total_wall_s']:.1f} s, removed {result['removed']}, near recall "
                          f"{_pct(result['check']['near'], True)}", file=sys.stderr, flush=True)
                record["engines"][engine] = result
            record["engines"] = {e: record["engines"][e] for e in engines}  # table order
            record["table_markdown"] = datatrove_markdown([record])
            append_records(Path(args.json), [record])
            records.append(record)
        if args.clean:
            clean_outputs(folder)
    print(datatrove_markdown(records))
    print(f"appended {len(records)} record(s) to {args.json}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# cluster: the same dedup chain on an existing Dask scheduler and on a LocalCluster
# ---------------------------------------------------------------------------------------------

class DaskProcesses:
    """`dask scheduler` on 127.0.0.1 (a free port) and `workers` `dask worker` processes (one
    process, one thread each, a nanny each, own --local-directory), started here; on leaving (also
    on failure) each is sent SIGTERM, and after 30 s its process group SIGKILL."""

    def __init__(self, folder: Path, workers: int, env: dict):
        self.folder, self.workers, self.env = folder, workers, env
        self.procs: list = []
        self.address = None

    def __enter__(self):
        import socket

        from distributed import Client

        with socket.socket() as sock:  # a free port, released for the scheduler
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        dask_cli = str(Path(sys.executable).with_name("dask"))
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "logs").mkdir(parents=True)
        started = time.perf_counter()
        try:
            self._start([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], "scheduler")
            for i in range(self.workers):
                self._start([dask_cli, "worker", self.address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard",
                             "--local-directory", str(self.folder / f"worker-{i}"), "--name", f"scale-worker-{i}"],
                            f"worker-{i}")
            with Client(self.address, timeout=60) as client:
                deadline = time.perf_counter() + 120
                while len(client.scheduler_info()["workers"]) < self.workers:
                    dead = [name for proc, _, name in self.procs if proc.poll() is not None]
                    if dead or time.perf_counter() > deadline:
                        raise SystemExit(f"dask {', '.join(dead) or 'workers'} did not come up; logs in "
                                         f"{self.folder / 'logs'}:\n{self._tails()}")
                    time.sleep(0.2)
        except BaseException as err:
            self.stop()
            if isinstance(err, SystemExit):
                raise
            raise SystemExit(f"starting the Dask processes failed: {err!r}\n{self._tails()}") from err
        self.start_s = round(time.perf_counter() - started, 2)
        return self

    def _start(self, cmd: list[str], name: str) -> None:
        import subprocess

        log = open(self.folder / "logs" / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop())
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: its children go with it
        self.procs.append((proc, log, name))

    def _tails(self) -> str:
        return "\n".join(f"--- {name}:\n" + (self.folder / "logs" / f"{name}.log").read_text(errors="replace")[-1500:]
                         for _, _, name in self.procs)

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for proc, _, name in self.procs}

    def stop(self) -> None:
        import signal
        import subprocess

        started = time.perf_counter()
        for proc, _, _ in reversed(self.procs):  # workers first, then the scheduler
            if proc.poll() is None:
                proc.terminate()
        for proc, log, _ in self.procs:
            try:
                proc.wait(timeout=max(0.1, 30 - (time.perf_counter() - started)))
            except subprocess.TimeoutExpired:
                pass
            try:  # whatever is left of the group we started (a worker its nanny left behind)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            log.close()
        self.stop_s = round(time.perf_counter() - started, 2)
        self.procs_stopped = {name: proc.returncode for proc, _, name in self.procs}
        self.procs = []

    def __exit__(self, *exc) -> None:
        if self.procs:
            self.stop()


def link_data(folder: Path, dest: Path) -> None:
    """dest/filtered/ (hard links to folder/filtered/: refinery only reads them) and truth.parquet."""
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "filtered").mkdir(parents=True)
    for f in sorted((folder / "filtered").glob("*.parquet")):
        os.link(f, dest / "filtered" / f.name)
    os.link(folder / "truth.parquet", dest / "truth.parquet")


def output_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under documents/ and dedup/clusters.parquet/, by relative path."""
    import hashlib

    out = {}
    for sub in ("documents", "dedup/clusters.parquet"):
        root = folder / sub
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if path.is_file():
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
                out[f"{sub}/{path.relative_to(root)}"] = digest.hexdigest()
    return out


def compare_runs(a: Path, b: Path, run_a: dict, run_b: dict) -> dict:
    ha, hb = output_hashes(a), output_hashes(b)
    differ = sorted(k for k in set(ha) & set(hb) if ha[k] != hb[k])
    only_a, only_b = sorted(set(ha) - set(hb)), sorted(set(hb) - set(ha))
    per_stage = run_a.get("per_stage") == run_b.get("per_stage")
    return {
        "identical": bool(ha) and not differ and not only_a and not only_b and per_stage,
        "files_compared": len(set(ha) | set(hb)),
        "documents_files": sum(k.startswith("documents/") for k in ha),
        "clusters_files": sum(k.startswith("dedup/clusters.parquet/") for k in ha),
        "differ": differ, "only_in_scheduler_run": only_a, "only_in_local_run": only_b,
        "per_stage_identical": per_stage,
        "per_stage": {"scheduler": run_a.get("per_stage"), "local": run_b.get("per_stage")} if not per_stage else None,
        "sha256": ha,
    }


def cluster_markdown(records: list[dict]) -> str:
    lines = [("| documents | dedup | cluster | start s | dedup wall s | close s | CPU s (driver + workers) "
              "| peak worker RSS MiB | peak driver RSS MiB | scheduler process RSS MiB | outputs identical |"),
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        same = r.get("comparison", {}).get("identical")
        for name, run in r["runs"].items():
            if "failed" in run:
                lines.append(f"| {r['documents']:,} | | {name} | failed | | | | | | | |")
                continue
            start = r["dask_processes"]["start_s"] if name == "scheduler" else run["cluster_start_s"]
            sched = run["rss_mib"].get("scheduler_process")
            lines.append(
                f"| {r['documents']:,} | {','.join(k for k, v in DEDUP_STAGES.items() if v in run['stages'])} "
                f"| {'existing scheduler, 2 `dask worker`' if name == 'scheduler' else 'LocalCluster'} "
                f"| {start:.1f} | {run['dedup_wall_s']:.1f} | {run['cluster_close_s']:.1f} "
                f"| {run['cpu_s']['total']:.0f} ({run['cpu_s']['driver']:.0f} + {run['cpu_s']['workers']:.0f}) "
                f"| {run['rss_mib']['peak_worker']:,.0f} | {run['rss_mib']['peak_driver']:,.0f} "
                f"| {f'{sched:,.0f}' if sched is not None else 'in the driver'} "
                f"| {'-' if same is None else ('yes' if same else 'NO')} |")
    return "\n".join(lines)


def command_cluster(args) -> int:
    from dedup import THREAD_ENV, _report_header
    from map_phase import OFFLINE_ENV

    stages = parse_stages(args.dedup)
    out = Path(args.out).resolve()
    env = {**os.environ, **OFFLINE_ENV, **THREAD_ENV, "PYTHONWARNINGS": "ignore",
           # workers unpickle refinery's tasks; the checkout is not installed
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    records, failed = [], False
    for n in args.docs:
        folder = out / f"n{n}"
        manifest = ensure_data(folder, n, args.shards, args.seed, args.processes, args.regenerate)
        manifest = {k: v for k, v in manifest.items() if k != "per_shard"}
        copies = {"scheduler": folder / "cluster-scheduler", "local": folder / "cluster-local"}
        for dest in copies.values():
            link_data(folder, dest)
        record = {**_report_header(args), "benchmark": "scale_cluster", "documents": n, "shards": args.shards,
                  "seed": args.seed, "data": str(folder), "generator": manifest,
                  "settings": {"stages": stages, "shuffle": args.shuffle, "workers": args.workers},
                  "outputs": {k: str(v) for k, v in copies.items()}, "runs": {}}
        try:
            print(f"[{n:,} docs] starting a Dask scheduler and {args.workers} workers ...", file=sys.stderr, flush=True)
            cluster = DaskProcesses(folder / "cluster-processes", args.workers, env)
            with cluster:
                record["dask_processes"] = {"address": cluster.address, "pids": cluster.pids(),
                                            "start_s": cluster.start_s}
                print(f"    {cluster.address} up in {cluster.start_s:.1f} s; deduplicate: {' -> '.join(stages)} ...",
                      file=sys.stderr, flush=True)
                record["runs"]["scheduler"] = run_one(copies["scheduler"], stages, args.shuffle, args.workers,
                                                      cluster.address)
            # stopped before the local run, so that it runs on an otherwise idle machine
            record["dask_processes"].update(stop_s=cluster.stop_s, exit_codes=cluster.procs_stopped)
            print(f"    wall {record['runs']['scheduler']['dedup_wall_s']:.1f} s; the same on a LocalCluster ...",
                  file=sys.stderr, flush=True)
            record["runs"]["local"] = run_one(copies["local"], stages, args.shuffle, args.workers)
        except SystemExit as err:
            record["failed"] = str(err)[-4000:]
            failed = True
            print(f"    failed: {str(err)[:2000]}", file=sys.stderr, flush=True)
        else:
            record["comparison"] = compare_runs(copies["scheduler"], copies["local"], record["runs"]["scheduler"],
                                                record["runs"]["local"])
            c = record["comparison"]
            print(f"    identical: {c['identical']} ({c['files_compared']} files; differ {c['differ'][:5]}, only in "
                  f"one {(c['only_in_scheduler_run'] + c['only_in_local_run'])[:5]}, per_stage identical "
                  f"{c['per_stage_identical']})", file=sys.stderr, flush=True)
            record["table_markdown"] = cluster_markdown([record])
        append_records(Path(args.json), [record])
        records.append(record)
        if args.clean:
            for dest in (*copies.values(), folder / "cluster-processes"):
                shutil.rmtree(dest, ignore_errors=True)
        if failed:
            break
    print(cluster_markdown([r for r in records if "failed" not in r]))
    print(f"appended {len(records)} record(s) to {args.json}", file=sys.stderr)
    return 1 if failed or not all(r["comparison"]["identical"] for r in records) else 0


# ---------------------------------------------------------------------------------------------
# map-shards: many tiny WARC shards through the whole run
# ---------------------------------------------------------------------------------------------

MAP_EXTRACT = {"resiliparse": {"extractor": "resiliparse", "isolation": "inline"},
               "fast": {"extractor": "fast", "isolation": "process"}}


def split_web(dest: Path, shards: int, per_shard: int) -> dict:
    """`shards` WARC files of `per_shard` response records each, cut from the shared web shards
    in order; past their 1,778 records the records repeat, each later copy k with its
    WARC-Record-ID (and URL host) renamed (dedup.renamed_record), so ids stay unique."""
    import io

    import warcio.warcwriter as ww
    from dedup import fast_gzip, renamed_record
    from warcio.archiveiterator import ArchiveIterator
    from warcio.recordloader import ArcWarcRecord

    fast_gzip()
    started = time.perf_counter()
    sources = sorted(glob.glob(WEB_GLOB))
    if not sources:
        raise SystemExit(f"no WARC files match {WEB_GLOB}")
    records = []
    for src in sources:
        with open(src, "rb") as handle:
            records += [(r, r.raw_stream.read()) for r in ArchiveIterator(handle, no_record_parse=True)]
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = dest / f"web-{s:05d}.warc.gz"
        with open(path, "wb") as handle:
            writer = ww.WARCWriter(handle, gzip=True)
            for i in range(s * per_shard, (s + 1) * per_shard):
                record, block = records[i % len(records)]
                copy = i // len(records)
                writer.write_record(renamed_record(record, block, copy) if copy else
                                    ArcWarcRecord(record.format, record.rec_type, record.rec_headers,
                                                  io.BytesIO(block), None, record.content_type, record.length))
        paths.append(str(path))
    return {"paths": paths, "records": shards * per_shard, "distinct_records": len(records),
            "bytes": sum(os.path.getsize(p) for p in paths), "seconds": round(time.perf_counter() - started, 1)}


def _child_map(paths: list[str], out: str, workers: int, extractor: str) -> dict:
    import dask
    from dedup import memory_config
    from distributed import get_task_stream

    from refinery.engine.output import claim_output
    from refinery.io import expand_inputs
    from refinery.logs import command_logs
    from refinery.pipeline.run import Progress, execute

    # the scheduler's task stream keeps its last 100,000 tasks by default; resolve alone can run more
    dask.config.set({"distributed.scheduler.dashboard.tasks.task-stream-length": 10_000_000})
    # english.yaml, extract: resiliparse inline, or `fast` in its process sandbox (english.yaml's isolation)
    config = memory_config(paths, out, workers, extract=MAP_EXTRACT[extractor])
    shards = expand_inputs(config.spec.input.paths)
    engine_class = timed_engine_class()
    marks: dict[str, float] = {}
    with claim_output(out, force=True), command_logs(out, {"shards": len(shards)}, stream=sys.stderr) as logs, \
            scale_sampler(os.getpid()) as rss:
        shown = logs.progress()

        def on_phase(message: str) -> None:
            marks.setdefault("dedup_start", time.perf_counter())
            shown.on_phase(message)

        t0 = time.perf_counter()
        with engine_class(workers=workers, threads_per_worker=1, shuffle=config.spec.run.shuffle) as engine:
            t1 = time.perf_counter()
            started_pids = sorted(engine.client.run(os.getpid).values())
            with get_task_stream(client=engine.client) as stream:
                stats = execute(config, shards, out, progress=Progress(on_start=shown.on_start, on_phase=on_phase),
                                engine=engine)
            t2 = time.perf_counter()
        t3 = time.perf_counter()

    outp = Path(out)
    worker_pids = rss.workers(t1, t2, started_pids)
    sandbox_pids = [pid for pid, kind in rss.kinds.items() if "refinery.sandbox" in kind]  # the extractor's children
    # per-task seconds as the run records them
    map_s = sum(sum(stage["seconds"] for stage in json.loads(p.read_text())["funnel"])
                for p in (outp / "stats" / "shards").glob("*.json"))
    keys_s = sum(json.loads(p.read_text())["result"].get("seconds", 0.0) for p in (outp / "_markers" / "keys").glob("*.done"))
    timings = stats.get("dedup", {}).get("timings", {})
    # per-task seconds as Dask saw them (compute time, by key prefix)
    compute: dict[str, float] = {}
    tasks: dict[str, int] = {}
    for t in stream.data:
        key = t["key"] if isinstance(t["key"], str) else str(t["key"][0] if isinstance(t["key"], tuple) else t["key"])
        key = key.removeprefix("bundle-")  # several small tasks run as one Dask task (Engine's plan_units)
        prefix = key.split("-")[0] if key.split("-")[0] in ("map", "keys", "apply", "substring") else "dataframe"
        seconds = sum(s["stop"] - s["start"] for s in t["startstops"] if s["action"] == "compute")
        compute[prefix] = compute.get(prefix, 0.0) + seconds
        tasks[prefix] = tasks.get(prefix, 0) + 1
    phases = engine.phase_seconds()
    map_wall = next(p["seconds"] for p in engine.phases if p["phase"] == "map")
    resolve_wall = phases.get("resolve", 0.0)
    wall = t2 - t1
    recorded = map_s + keys_s + timings.get("apply_seconds", 0.0) + timings.get("substring_seconds", 0.0)
    mib = 1 / 2**20
    map_end = t1 + map_wall

    def peaks(lo: float, hi: float) -> dict:
        rows = [s for s in rss.samples if lo <= s[0] <= hi]
        return {"driver_mib": round(max((d for _, d, _ in rows), default=0) * mib, 1),
                "worker_mib": round(max((per.get(p, 0) for _, _, per in rows for p in worker_pids), default=0) * mib, 1),
                "sandbox_mib": round(max((per.get(p, 0) for _, _, per in rows for p in sandbox_pids), default=0) * mib, 1)}

    return {
        "shards": len(shards), "records": stats["input"]["records"], "docs_out": stats["output"]["documents"],
        "worker_processes_seen": len(worker_pids), "sandbox_processes_seen": len(sandbox_pids),
        "extractor": f"{extractor}, isolation {MAP_EXTRACT[extractor]['isolation']} "
                     "(configs/english.yaml otherwise as is, dedup included)",
        "cluster_start_s": round(t1 - t0, 2), "wall_s": round(wall, 2), "cluster_close_s": round(t3 - t2, 2),
        "map_phase_wall_s": round(map_wall, 2), "phases_wall_s": phases,
        "recorded_task_s": {"map": round(map_s, 2), "keys": round(keys_s, 2),
                            "resolve_driver": timings.get("resolve_seconds"), "substring": timings.get("substring_seconds"),
                            "apply": timings.get("apply_seconds")},
        "dask_compute_s": {k: round(v, 2) for k, v in compute.items()}, "dask_tasks": tasks,
        "task_stream_complete": len(stream.data) == sum(tasks.values()) and "map" in tasks,
        "scheduling_overhead": {
            # (wall - task seconds / workers) / wall, over the map phase (map + keys tasks)
            "map_phase_recorded": round((map_wall - (map_s + keys_s) / workers) / map_wall, 4),
            "map_phase_dask_compute": round((map_wall - (compute.get("map", 0) + compute.get("keys", 0)) / workers)
                                            / map_wall, 4),
            # resolve: its Dask dataframe tasks against its wall time on the driver
            "resolve_phase_dask_compute": round((resolve_wall - compute.get("dataframe", 0) / workers) / resolve_wall, 4)
            if resolve_wall else None,
            # the whole run; resolve's driver time counts as serial work
            "run_recorded": round((wall - recorded / workers - (timings.get("resolve_seconds") or 0)) / wall, 4),
            "run_worker_idle_share": round(1 - sum(compute.values()) / (workers * wall), 4),
        },
        "rss_map": peaks(t1, map_end), "rss_run": peaks(t1, t2),
    }


def command_map_shards(args) -> int:
    from dedup import THREAD_ENV, _report_header
    from map_phase import OFFLINE_ENV, run_measured

    out = Path(args.out).resolve()
    warcs = out / "warcs"
    shutil.rmtree(warcs, ignore_errors=True)
    print(f"map-shards: splitting {WEB_GLOB} into {args.map_shards} shards of {args.records_per_shard} records ...",
          file=sys.stderr, flush=True)
    split = split_web(warcs, args.map_shards, args.records_per_shard)
    paths = split.pop("paths")
    result_path = str(out / "_result.json")
    run_dir = out / "run"
    cmd = _child_cmd("map", result_path, "--data", str(run_dir), "--workers", str(args.workers),
                     "--extractor", args.extractor, "--input", *paths)
    env = {**os.environ, **OFFLINE_ENV, **THREAD_ENV, "PYTHONWARNINGS": "ignore"}
    print(f"    {split['records']} records, {split['bytes'] / 1e6:.0f} MB, {split['seconds']} s; running ...",
          file=sys.stderr, flush=True)
    result = run_measured(cmd, env, str(out / "child.log"), result_path, "map-shards")
    record = {**_report_header(args), "benchmark": "scale_map_shards", "workers": args.workers,
              "extractor": args.extractor, "split": split,
              "run": result}
    o = result["scheduling_overhead"]
    resolve = result["phases_wall_s"].get("resolve", 0.0)
    table = ("| shards | records | wall s | map phase s | resolve s (Dask tasks) | peak driver RSS MiB (map / run) "
             "| peak worker RSS MiB (map / run) | peak sandbox RSS MiB, map | map overhead, recorded / Dask compute "
             "| resolve overhead | worker idle share, run |\n"
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
             f"| {result['shards']} | {result['records']} | {result['wall_s']:.1f} | {result['map_phase_wall_s']:.1f} "
             f"| {resolve:.1f} ({result['dask_tasks'].get('dataframe', 0):,}) "
             f"| {result['rss_map']['driver_mib']:.0f} / {result['rss_run']['driver_mib']:.0f} "
             f"| {result['rss_map']['worker_mib']:.0f} / {result['rss_run']['worker_mib']:.0f} "
             f"| {result['rss_map']['sandbox_mib']:.0f} "
             f"| {o['map_phase_recorded']:.1%} / {o['map_phase_dask_compute']:.1%} "
             f"| {o['resolve_phase_dask_compute'] or 0:.1%} | {o['run_worker_idle_share']:.1%} |")
    record["table_markdown"] = table
    append_records(Path(args.json), [record])
    print(table)
    if not args.keep:
        shutil.rmtree(warcs, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="?", choices=("run", "generate", "map-shards", "datatrove", "cluster"))
    parser.add_argument("--docs", type=int, nargs="+", default=[10_000], help="document counts (run: one record each)")
    parser.add_argument("--shards", type=int, default=8, help="Parquet shards per size (default 8)")
    parser.add_argument("--out", help="data folder: run writes OUT/n<N>/, generate writes OUT/, map-shards OUT/warcs")
    parser.add_argument("--dedup", default="exact,minhash,url,substring", help="comma list of " + ",".join(DEDUP_STAGES))
    parser.add_argument("--shuffle", choices=("tasks", "p2p"), default="p2p", help="dask dataframe.shuffle.method")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (1 thread each)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="run: use the Dask scheduler at ADDRESS (its workers "
                        "found by name on this machine) instead of a LocalCluster")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2, help="generator processes (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size")
    parser.add_argument("--regenerate", action="store_true", help="generate even where OUT/n<N> holds the same data")
    parser.add_argument("--clean", action="store_true", help="remove each size's run outputs after its check")
    parser.add_argument("--json", default=str(RESULTS_FILE), help="records are appended here")
    parser.add_argument("--map-shards", type=int, default=512, help="map-shards: WARC shards to cut")
    parser.add_argument("--records-per-shard", type=int, default=4, help="map-shards: response records per shard")
    parser.add_argument("--keep", action="store_true", help="map-shards: keep the WARCs and the run's output; "
                        "datatrove: keep datatrove's work folder (OUT/n<N>/datatrove-work)")
    parser.add_argument("--extractor", choices=sorted(MAP_EXTRACT), default="resiliparse",
                        help="map-shards: resiliparse inline (the cheapest), or fast in the process sandbox")
    parser.add_argument("--child", choices=("generate", "run", "map"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stages", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    parser.add_argument("--input", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from map_phase import OFFLINE_ENV

    if args.child:
        os.environ.update(OFFLINE_ENV)
        if args.child == "generate":
            result = {k: v for k, v in generate(Path(args.data), args.n, args.shards, args.seed, args.processes).items()
                      if k != "per_shard"}
        elif args.child == "run":
            result = _child_run(args.data, args.stages.split(","), args.shuffle, args.workers, args.scheduler,
                                json.loads(args.overrides) if args.overrides else None)
        else:
            result = _child_map(args.input, args.data, args.workers, args.extractor)
        Path(args.result).write_text(json.dumps(result))
        return 0
    if args.which is None:
        parser.error("choose run, generate, map-shards, datatrove or cluster")
    if not args.out:
        parser.error("--out is required")
    os.environ.update(OFFLINE_ENV)
    if args.scheduler and args.which != "run":
        parser.error("--scheduler is for run")
    return {"run": command_run, "generate": command_generate, "map-shards": command_map_shards,
            "datatrove": command_datatrove, "cluster": command_cluster}[args.which](args)


if __name__ == "__main__":
    sys.exit(main())
