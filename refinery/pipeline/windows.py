"""Exact-substring dedup across a whole shard group, for groups too big for one suffix array.

Three kinds of task, none holding more than one shard or one hash range:

1. ``windows`` (per shard): the 64-bit hash of every ``min_tokens``-window of each document the
   earlier dedup stages kept (:func:`refinery.stages.substring_dedup.window_hashes`), as
   (hash, row, position) records in ``ranges`` sections by the hash's top bits
   (``dedup/_work/substring/windows/<shard>.win``).
2. ``range`` (per hash range): that section of every shard of the group, sorted; every window whose
   hash occurred earlier in the group (shard order, then row, then position) is a repeat. The
   repeats are written sorted by shard, with each shard's offset (``.../repeats/group-G/range-R.npy``).
3. ``cut`` (per shard): its repeats from every range become character ranges per document, exactly
   as the suffix array path makes them (``dedup/cuts/<shard>.parquet``).

The work folder goes once every cut is written. A cut's fingerprint holds the identity (size and
mtime) of every shard of its group, so a change anywhere in the group cuts again.
"""

from __future__ import annotations

import hashlib
import json
import struct
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

RECORD = np.dtype([("hash", "<u8"), ("row", "<u4"), ("pos", "<u4")])
REPEAT = np.dtype([("shard", "<u4"), ("row", "<u4"), ("pos", "<u4")])
CHUNK_RECORDS = 1 << 21  # records a windows task holds before it writes them out (32 MiB)
MAGIC = b"RFWIN001"
_FOOTER = struct.Struct("<8sIIQ")  # magic, ranges, chunks, index offset
BYTES_PER_RANGE_TEXT_BYTE = 12  # a range task's peak, per byte of text it covers (measured)


MIN_RANGE_TEXT_BYTES = 8 << 20  # below this, more ranges cost more in tasks than they save


def range_count(text_bytes: int, max_part_bytes: int) -> int:
    """Hash ranges (a power of two) so that each covers at most ``max_part_bytes`` of text: the
    memory a range task needs is then about what a suffix array of ``max_part_bytes`` needs."""
    needed = max(1, -(-text_bytes // max(max_part_bytes, MIN_RANGE_TEXT_BYTES)))
    return 1 << (needed - 1).bit_length()


def work_folder(out: Path) -> Path:
    return out / "dedup" / "_work" / "substring"


def window_file(out: Path, shard: InputShard) -> Path:
    return work_folder(out) / "windows" / f"{shard.shard_id}.win"


def range_files(out: Path, group: int, index: int) -> tuple[Path, Path]:
    folder = work_folder(out) / "repeats" / f"group-{group:05d}"
    return folder / f"range-{index:05d}.npy", folder / f"range-{index:05d}.offsets.npy"


# --- the windows file ---------------------------------------------------------------------------

class WindowWriter:
    """Writes (hash, row, pos) records to ``file`` in chunks, each chunk sorted into ``ranges``
    sections by the hash's top bits; ``close`` writes the chunk index and the footer."""

    def __init__(self, file, ranges: int):
        self.file, self.ranges = file, ranges
        self.shift = np.uint64(64 - (ranges.bit_length() - 1))
        self.pending: list[np.ndarray] = []
        self.pending_records = 0
        self.index: list[np.ndarray] = []
        self.written = 0

    def add(self, records: np.ndarray) -> None:
        self.pending.append(records)
        self.pending_records += len(records)
        if self.pending_records >= CHUNK_RECORDS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending_records:
            return
        records = np.concatenate(self.pending)
        self.pending, self.pending_records = [], 0
        section = (records["hash"] >> self.shift).astype(np.int64) if self.ranges > 1 else np.zeros(len(records), np.int64)
        records = records[np.argsort(section, kind="stable")]
        counts = np.bincount(section, minlength=self.ranges)
        self.index.append(self.written + np.concatenate(([0], np.cumsum(counts))))
        self.file.write(records.tobytes())
        self.written += len(records)

    def close(self) -> None:
        self._flush()
        index = np.asarray(self.index, dtype="<i8").reshape(len(self.index), self.ranges + 1)
        offset = self.written * RECORD.itemsize
        self.file.write(index.tobytes())
        self.file.write(_FOOTER.pack(MAGIC, self.ranges, len(self.index), offset))


def read_section(path: Path, section: int) -> np.ndarray:
    """Every record of ``section`` in a windows file, in the order written."""
    with open(path, "rb") as file:
        file.seek(-_FOOTER.size, 2)
        magic, ranges, chunks, offset = _FOOTER.unpack(file.read(_FOOTER.size))
        if magic != MAGIC:
            raise ValueError(f"{path} is not a refinery windows file")
        file.seek(offset)
        index = np.frombuffer(file.read(chunks * (ranges + 1) * 8), dtype="<i8").reshape(chunks, ranges + 1)
        parts = []
        for start, end in zip(index[:, section], index[:, section + 1]):
            file.seek(int(start) * RECORD.itemsize)
            parts.append(np.frombuffer(file.read(int(end - start) * RECORD.itemsize), dtype=RECORD))
    return np.concatenate(parts) if parts else np.empty(0, dtype=RECORD)


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
    dropped = shard_drops(out, shard.shard_id)
    documents = windows = 0
    with atomic_path(window_file(out, shard)) as tmp, open(tmp, "wb") as file:
        writer = WindowWriter(file, ranges)
        path = shard_paths(out, shard, deduplicated=True)["documents"]
        for row, (key, doc) in enumerate(iter_keyed_documents(path, shard.shard_id, 1024)):
            if key in dropped:
                continue
            documents += 1
            hashes = window_hashes(doc.text, cfg.min_tokens)
            if len(hashes):
                records = np.empty(len(hashes), dtype=RECORD)
                records["hash"], records["row"], records["pos"] = hashes, row, np.arange(len(hashes))
                writer.add(records)
                windows += len(hashes)
        writer.close()
    return WindowsResult(shard.shard_id, documents, windows, round(time.perf_counter() - started, 3))


def find_repeated_windows(group: int, index: int, shards: list[InputShard], config: PipelineConfig,
                          out_dir: str) -> RangeResult:
    """Task 2: the repeats among one hash range of every shard of a group."""
    from refinery.stages.substring_dedup import repeated_windows

    out = Path(out_dir)
    cfg = span_cut_stage(config).config
    started = time.perf_counter()
    sections = [read_section(window_file(out, shard), index) for shard in shards]
    records = np.concatenate(sections) if sections else np.empty(0, dtype=RECORD)
    shard_of = np.repeat(np.arange(len(shards), dtype=np.uint32), [len(s) for s in sections])
    del sections
    cut = repeated_windows(records["hash"], (shard_of, records["row"], records["pos"]), cfg.keep_first)
    repeats = np.empty(len(cut), dtype=REPEAT)
    repeats["shard"], repeats["row"], repeats["pos"] = shard_of[cut], records["row"][cut], records["pos"][cut]
    repeats = repeats[np.lexsort((repeats["pos"], repeats["row"], repeats["shard"]))]
    offsets = np.searchsorted(repeats["shard"], np.arange(len(shards) + 1, dtype=np.uint32))
    data, offsets_path = range_files(out, group, index)
    with atomic_path(data) as tmp, open(tmp, "wb") as file:
        np.save(file, repeats)
    with atomic_path(offsets_path) as tmp, open(tmp, "wb") as file:
        np.save(file, offsets.astype(np.int64))
    return RangeResult(group, index, len(records), len(repeats), round(time.perf_counter() - started, 3))


def cut_shard(group: int, position: int, shard: InputShard, ranges: int, config: PipelineConfig,
              out_dir: str, sample_spans: int) -> SubstringResult:
    """Task 3: one shard's repeats from every range, as character ranges per document."""
    from refinery.stages.substring_dedup import cut_ranges

    out = Path(out_dir)
    cfg = span_cut_stage(config).config
    started = time.perf_counter()
    found = []
    for index in range(ranges):
        data, offsets_path = range_files(out, group, index)
        offsets = np.load(offsets_path)
        found.append(np.array(np.load(data, mmap_mode="r")[offsets[position]:offsets[position + 1]]))
    repeats = np.concatenate(found) if found else np.empty(0, dtype=REPEAT)
    repeats = repeats[np.lexsort((repeats["pos"], repeats["row"]))]
    rows, first = np.unique(repeats["row"], return_index=True)
    bounds = dict(zip(rows.tolist(), zip(first.tolist(), [*first[1:].tolist(), len(repeats)])))
    dropped = shard_drops(out, shard.shard_id)
    totals = {"documents": 0, "text_bytes": 0, "cut_tokens": 0, "cut_bytes": 0, "documents_touched": 0}
    cuts: dict[str, list[tuple[int, int]]] = {}
    spans = []
    path = shard_paths(out, shard, deduplicated=True)["documents"]
    for row, (key, doc) in enumerate(iter_keyed_documents(path, shard.shard_id, 1024)):
        if key in dropped:
            continue
        totals["documents"] += 1
        totals["text_bytes"] += len(doc.text.encode("utf-8", "surrogatepass"))
        if row not in bounds:
            continue
        start, end = bounds[row]
        ranges_cut, tokens = cut_ranges(doc.text, repeats["pos"][start:end].astype(np.int64), cfg.min_tokens)
        cuts[key] = ranges_cut
        totals["documents_touched"] += 1
        totals["cut_tokens"] += tokens
        totals["cut_bytes"] += sum(len(doc.text[a:b].encode("utf-8", "surrogatepass")) for a, b in ranges_cut)
        for a, b in ranges_cut:
            if len(spans) < sample_spans:
                spans.append({"id": doc.id, "url": doc.url, "tokens": len(doc.text[a:b].split()),
                              "text": doc.text[a:b][:SPAN_SAMPLE_CHARS]})
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
