"""Exact-substring dedup across a whole shard group, for groups too big for one suffix array.

Three kinds of task, none holding more than one shard or one hash range:

1. ``windows`` (per shard): the 64-bit hash of every ``min_tokens``-window of each document the
   earlier dedup stages kept (:func:`refinery.stages.substring_dedup.window_hashes`). Only which
   hashes a shard has matters here, not where: each chunk of windows is written as its distinct
   hashes, sorted, in ``ranges`` sections by the hash's value, a hash repeated within the
   chunk twice. Parquet's delta bit-packing stores a sorted hash in about 5 bytes
   (``dedup/_work/substring/windows/<shard>.win``).
2. ``range`` (per hash range): that section of every shard of the group. A hash written two or
   more times in all is repeated; each shard gets its repeated hashes, each marked whether an
   earlier shard has it too (``.../repeats/group-G/range-R.npy``, sorted by shard, with offsets).
3. ``cut`` (per shard): hashes its own windows again, in order, and cuts each whose hash is
   repeated, except (``keep_first``) a hash's first occurrence in the group: no earlier shard has
   it and it is its first in this shard. The cuts become character ranges per document exactly as
   the suffix array path makes them (``dedup/cuts/<shard>.parquet``).

The work folder goes once every cut is written. A cut's fingerprint holds the identity (size and
mtime) of every shard of its group, so a change anywhere in the group cuts again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.config import PipelineConfig
from refinery.engine.task import Result
from refinery.io import InputShard, atomic_path
from refinery.pipeline.chain import shard_paths
from refinery.pipeline.keys import iter_keyed_documents
from refinery.pipeline.substring import (
    SPAN_SAMPLE_CHARS,
    SPANS_SCHEMA,
    SubstringResult,
    shard_drops,
    span_cut_stage,
    write_cuts,
)

REPEAT = np.dtype([("shard", "<u4"), ("hash", "<u8"), ("earlier", "u1")])
CHUNK_WINDOWS = 1 << 22  # windows a windows task holds before it writes them out (32 MiB)
_HASHES = pa.schema([("hash", pa.int64())])  # uint64 hashes, stored as their int64 bit pattern


MIN_RANGE_TEXT_BYTES = 8 << 20  # below this, more ranges cost more in tasks than they save


def range_count(text_bytes: int, max_part_bytes: int) -> int:
    """Hash ranges so that each covers about ``max_part_bytes`` of text, however big the group: a
    range task then needs about 5 bytes per byte of text it covers (a suffix array needs 12)."""
    return max(1, -(-text_bytes // max(max_part_bytes, MIN_RANGE_TEXT_BYTES)))


def section_of(hashes: np.ndarray, ranges: int) -> np.ndarray:
    """Which of ``ranges`` equal hash ranges each uint64 hash falls in (multiply-shift on its top
    32 bits): non-decreasing in the hash, so sorted hashes are sorted by section."""
    return (((hashes >> np.uint64(32)) * np.uint64(ranges)) >> np.uint64(32)).astype(np.int64)


def work_folder(out: Path) -> Path:
    return out / "dedup" / "_work" / "substring"


def window_file(out: Path, shard: InputShard) -> Path:
    return work_folder(out) / "windows" / f"{shard.shard_id}.win"


def range_files(out: Path, group: int, index: int) -> tuple[Path, Path]:
    folder = work_folder(out) / "repeats" / f"group-{group:05d}"
    return folder / f"range-{index:05d}.npy", folder / f"range-{index:05d}.offsets.npy"


# --- the windows file ---------------------------------------------------------------------------

class WindowWriter:
    """Writes window hashes to a Parquet file in chunks: each chunk's distinct hashes (twice if
    repeated within it), sorted, one row group per non-empty section (:func:`section_of`); the
    row groups' sections go into the file's metadata."""

    def __init__(self, path, ranges: int):
        self.ranges = ranges
        self.writer = pq.ParquetWriter(path, _HASHES, use_dictionary=False, compression="none",
                                       column_encoding={"hash": "DELTA_BINARY_PACKED"}, write_statistics=False)
        self.pending: list[np.ndarray] = []
        self.pending_windows = 0
        self.sections: list[int] = []

    def add(self, hashes: np.ndarray) -> None:
        self.pending.append(hashes)
        self.pending_windows += len(hashes)
        if self.pending_windows >= CHUNK_WINDOWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending_windows:
            return
        distinct, counts = np.unique(np.concatenate(self.pending), return_counts=True)
        self.pending, self.pending_windows = [], 0
        hashes = np.sort(np.concatenate([distinct, distinct[counts > 1]]))
        bounds = np.searchsorted(section_of(hashes, self.ranges), np.arange(1, self.ranges))
        for section, part in enumerate(np.split(hashes, bounds)):
            if len(part):
                self.writer.write_table(pa.table({"hash": part.view(np.int64)}, schema=_HASHES))
                self.sections.append(section)

    def close(self) -> None:
        self._flush()
        self.writer.add_key_value_metadata({"sections": json.dumps(self.sections)})
        self.writer.close()


def read_section(path: Path, section: int) -> np.ndarray:
    """Every hash of ``section`` in a windows file (uint64), chunk by chunk."""
    file = pq.ParquetFile(path)
    sections = json.loads(file.metadata.metadata[b"sections"])
    groups = [n for n, s in enumerate(sections) if s == section]
    if not groups:
        return np.empty(0, dtype=np.uint64)
    return file.read_row_groups(groups).column("hash").to_numpy().view(np.uint64)


# --- the three tasks ----------------------------------------------------------------------------

@dataclass
class WindowsResult(Result):
    shard_id: str
    documents: int = 0
    windows: int = 0
    seconds: float = 0.0


@dataclass
class RangeResult(Result):
    group: int
    index: int
    windows: int = 0
    repeats: int = 0
    seconds: float = 0.0


def write_windows(shard: InputShard, config: PipelineConfig, out_dir: str, ranges: int) -> WindowsResult:
    """Task 1: the window hashes of one shard's kept documents, in ``ranges`` sections."""
    from refinery.stages.substring_dedup import window_hashes

    out = Path(out_dir)
    cfg = span_cut_stage(config).config
    started = time.perf_counter()
    documents = windows = 0
    with atomic_path(window_file(out, shard)) as tmp:
        writer = WindowWriter(tmp, ranges)
        for _, doc in _kept_documents(out, shard):
            documents += 1
            hashes = window_hashes(doc.text, cfg.min_tokens)
            if len(hashes):
                writer.add(hashes)
                windows += len(hashes)
        writer.close()
    return WindowsResult(shard.shard_id, documents, windows, round(time.perf_counter() - started, 3))


def _kept_documents(out: Path, shard: InputShard):
    """(internal key, document) of each document of the shard that the earlier dedup stages kept."""
    dropped = shard_drops(out, shard.shard_id)
    path = shard_paths(out, shard, deduplicated=True)["documents"]
    for key, doc in iter_keyed_documents(path, shard.shard_id, 1024):
        if key not in dropped:
            yield key, doc


def find_repeated_windows(group: int, index: int, shards: list[InputShard], config: PipelineConfig,
                          out_dir: str) -> RangeResult:
    """Task 2: which hashes of one range occur more than once in the group, per shard, and
    whether an earlier shard has them."""
    out = Path(out_dir)
    started = time.perf_counter()
    sections = [read_section(window_file(out, shard), index) for shard in shards]
    hashes = np.concatenate(sections) if sections else np.empty(0, dtype=np.uint64)
    shard_of = np.repeat(np.arange(len(shards), dtype=np.uint32), [len(s) for s in sections])
    written = len(hashes)
    del sections
    order = np.argsort(hashes, kind="stable")  # equal hashes stay in shard order
    hashes, shard_of = hashes[order], shard_of[order]
    del order
    same = hashes[1:] == hashes[:-1]
    repeated = np.zeros(len(hashes), dtype=bool)
    repeated[1:] |= same
    repeated[:-1] |= same
    del same
    hashes, shard_of = hashes[repeated], shard_of[repeated]  # the few that matter from here on
    starts = np.ones(len(hashes), dtype=bool)
    starts[1:] = hashes[1:] != hashes[:-1]
    first_shard = shard_of[starts][np.cumsum(starts) - 1]
    repeats = np.empty(len(hashes), dtype=REPEAT)
    repeats["shard"], repeats["hash"], repeats["earlier"] = shard_of, hashes, first_shard < shard_of
    repeats = np.unique(repeats)  # by shard, then hash; a hash written twice by a shard once
    offsets = np.searchsorted(repeats["shard"], np.arange(len(shards) + 1, dtype=np.uint32))
    data, offsets_path = range_files(out, group, index)
    with atomic_path(data) as tmp, open(tmp, "wb") as file:
        np.save(file, repeats)
    with atomic_path(offsets_path) as tmp, open(tmp, "wb") as file:
        np.save(file, offsets.astype(np.int64))
    return RangeResult(group, index, written, len(repeats), round(time.perf_counter() - started, 3))


def _cut_positions(hashes: np.ndarray, repeated: np.ndarray, earlier: np.ndarray, seen: set, keep_first: bool) -> np.ndarray:
    """Positions of a document's windows to cut, given the shard's ``repeated`` hashes (sorted)
    and whether an ``earlier`` shard has each; ``seen`` holds (as indices into ``repeated``) those
    this shard has already kept once: it grows as the shard's documents go by in order."""
    if not len(repeated) or not len(hashes):
        return np.empty(0, dtype=np.int64)
    slot = np.minimum(np.searchsorted(repeated, hashes), len(repeated) - 1)
    hit = np.flatnonzero(repeated[slot] == hashes)
    if not keep_first:
        return hit.astype(np.int64)
    cut = []
    for position, s in zip(hit.tolist(), slot[hit].tolist()):
        if earlier[s] or s in seen:
            cut.append(position)
        else:
            seen.add(s)
    return np.asarray(cut, dtype=np.int64)


def cut_shard(group: int, position: int, shard: InputShard, ranges: int, config: PipelineConfig,
              out_dir: str, sample_spans: int) -> SubstringResult:
    """Task 3: one shard's repeated windows, found by hashing its windows again, as character
    ranges per document."""
    from refinery.stages.substring_dedup import cut_ranges, window_hashes

    out = Path(out_dir)
    cfg = span_cut_stage(config).config
    started = time.perf_counter()
    found = []
    for index in range(ranges):
        data, offsets_path = range_files(out, group, index)
        offsets = np.load(offsets_path)
        found.append(np.array(np.load(data, mmap_mode="r")[offsets[position]:offsets[position + 1]]))
    repeats = np.concatenate(found) if found else np.empty(0, dtype=REPEAT)
    repeats = repeats[np.argsort(repeats["hash"], kind="stable")]
    repeated, earlier = repeats["hash"], repeats["earlier"].astype(bool)
    seen: set[int] = set()
    totals = {"documents": 0, "text_bytes": 0, "cut_tokens": 0, "cut_bytes": 0, "documents_touched": 0}
    cuts: dict[str, list[tuple[int, int]]] = {}
    spans = []
    for key, doc in _kept_documents(out, shard):
        text = doc.text
        totals["documents"] += 1
        totals["text_bytes"] += len(text.encode("utf-8", "surrogatepass"))
        positions = _cut_positions(window_hashes(text, cfg.min_tokens), repeated, earlier, seen, cfg.keep_first)
        if not len(positions):
            continue
        ranges_cut, tokens = cut_ranges(text, positions, cfg.min_tokens)
        cuts[key] = ranges_cut
        totals["documents_touched"] += 1
        totals["cut_tokens"] += tokens
        totals["cut_bytes"] += sum(len(text[a:b].encode("utf-8", "surrogatepass")) for a, b in ranges_cut)
        for a, b in ranges_cut:
            if len(spans) < sample_spans:
                spans.append({"id": doc.id, "url": doc.url, "tokens": len(text[a:b].split()),
                              "text": text[a:b][:SPAN_SAMPLE_CHARS]})
    write_cuts(out, shard.shard_id, cuts)
    with atomic_path(spans_file(out, group, shard)) as tmp:
        pq.write_table(pa.Table.from_pylist(spans, schema=SPANS_SCHEMA), tmp)
    return SubstringResult(group=group, shards=[shard.shard_id], method="window_hash", ranges=ranges, **totals,
                           seconds=round(time.perf_counter() - started, 3))


def spans_file(out: Path, group: int, shard: InputShard) -> Path:
    return out / "dedup" / "substring_spans" / f"group-{group:05d}-{shard.shard_id}.parquet"


def group_identity(out: Path, shards: list[InputShard]) -> str:
    """Size and mtime of every shard's kept documents and drops: what a group's cuts depend on.
    Only stat()s, so a cut task does not read (or hash) the other shards to know they are unchanged."""
    state = []
    for shard in shards:
        files = [shard_paths(out, shard, deduplicated=True)["documents"],
                 *sorted((out / "dedup" / "drops" / f"shard={shard.shard_id}").glob("*"))]
        for path in files:
            try:
                stat = path.stat()
                state.append([str(path.relative_to(out)), stat.st_size, stat.st_mtime_ns])
            except OSError:
                state.append([str(path), None, None])
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]
