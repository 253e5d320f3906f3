"""Dedup phase 2b, one task per shard group: exact repeated substrings in the documents the
earlier dedup stages kept, as character ranges to cut per document (``dedup/cuts/<shard>.parquet``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.config import PipelineConfig
from refinery.document import Document
from refinery.engine.task import Result
from refinery.io import InputShard, atomic_path
from refinery.pipeline.chain import shard_paths
from refinery.pipeline.keys import iter_keyed_documents
from refinery.stage import SpanCutStage


@dataclass
class SubstringResult(Result):
    group: int
    shards: list[str] = field(default_factory=list)
    method: str = "suffix_array"  # or "window_hash" (refinery/pipeline/windows.py)
    parts: int = 0  # suffix arrays built
    ranges: int = 0  # hash ranges the group's windows were resolved in
    documents: int = 0
    text_bytes: int = 0
    cut_tokens: int = 0
    cut_bytes: int = 0
    documents_touched: int = 0
    seconds: float = 0.0


def shard_drops(out: Path, shard_id: str) -> dict[str, tuple[str, str]]:
    """internal key -> (stage, kept id) for the documents this shard loses."""
    folder = out / "dedup" / "drops" / f"shard={shard_id}"
    drops = {}
    for path in sorted(folder.glob("*.parquet")):
        table = pq.read_table(path, columns=["key", "kept_id", "stage"])
        for key, kept_id, stage in zip(*(table.column(c).to_pylist() for c in ("key", "kept_id", "stage"))):
            drops[key] = (stage, kept_id)
    return drops


SPANS_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("tokens", pa.int64()), ("text", pa.string())])
CUTS_SCHEMA = pa.schema([("key", pa.string()), ("starts", pa.list_(pa.int64())), ("ends", pa.list_(pa.int64()))])
SPAN_SAMPLE_CHARS = 2000


def write_cuts(out: Path, shard_id: str, cuts: dict[str, list[tuple[int, int]]]) -> None:
    """``dedup/cuts/<shard>.parquet``: internal key -> the character ranges to cut, by key."""
    rows = sorted(cuts.items())
    with atomic_path(out / "dedup" / "cuts" / f"{shard_id}.parquet") as tmp:
        pq.write_table(pa.table({"key": [key for key, _ in rows], "starts": [[a for a, _ in r] for _, r in rows],
                                 "ends": [[b for _, b in r] for _, r in rows]}, schema=CUTS_SCHEMA), tmp)


def span_cut_stage(config: PipelineConfig) -> SpanCutStage | None:
    """The config's span-cut stage (exact substrings), built, or None."""
    return next((s for s in (spec.build() for spec in config.dedup) if isinstance(s, SpanCutStage)), None)


def uses_window_hashes(config: PipelineConfig, group_text_bytes: int) -> bool:
    """Whether a group goes through window hashes: asked for, or (``auto``) its text is more
    than one suffix array may hold, so that repeats across parts are still found."""
    cfg = span_cut_stage(config).config
    return cfg.method == "window_hash" or (cfg.method == "auto" and group_text_bytes > cfg.max_part_bytes)


def substring_groups(config: PipelineConfig, shards: list[InputShard]) -> list[list[InputShard]]:
    """Consecutive shards, ``shards_per_group`` at a time (all of them when it is None)."""
    stage = span_cut_stage(config)
    size = stage.config.shards_per_group or max(len(shards), 1)
    ordered = sorted(shards, key=lambda s: s.shard_id)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def find_cuts(group: int, shards: list[InputShard], config: PipelineConfig, out_dir: str) -> SubstringResult:
    """One shard group by suffix array: the documents the earlier dedup stages kept, in parts of at
    most ``max_part_bytes`` (one part, unless ``method: suffix_array`` was forced on a bigger group),
    through :func:`refinery.stages.substring_dedup.find_repeats`. Writes
    ``dedup/cuts/<shard>.parquet`` (character ranges per document) and a sample of cut spans."""
    from refinery.stages.substring_dedup import find_repeats

    out = Path(out_dir)
    cfg = span_cut_stage(config).config
    ids = [s.shard_id for s in shards]
    started = time.perf_counter()
    cuts: dict[str, dict[str, list[tuple[int, int]]]] = {sid: {} for sid in ids}
    spans: list[dict] = []
    totals = {"parts": 0, "documents": 0, "text_bytes": 0, "cut_tokens": 0, "cut_bytes": 0, "documents_touched": 0}

    def run_part(part: list[tuple[str, str, Document]]) -> None:
        found = find_repeats([doc.text for _, _, doc in part], cfg.min_tokens, cfg.keep_first)
        totals["parts"] += 1
        for (sid, key, doc), ranges, tokens in zip(part, found.cuts, found.cut_tokens):
            if not ranges:
                continue
            cuts[sid][key] = ranges
            totals["documents_touched"] += 1
            totals["cut_tokens"] += tokens
            totals["cut_bytes"] += sum(len(doc.text[a:b].encode("utf-8", "surrogatepass")) for a, b in ranges)
            for a, b in ranges:
                if len(spans) < cfg.sample_spans:
                    spans.append({"id": doc.id, "url": doc.url, "tokens": len(doc.text[a:b].split()),
                                  "text": doc.text[a:b][:SPAN_SAMPLE_CHARS]})

    part: list[tuple[str, str, Document]] = []
    part_bytes = 0
    for shard in shards:
        dropped = shard_drops(out, shard.shard_id)
        for key, doc in iter_keyed_documents(shard_paths(out, shard, deduplicated=True)["documents"],
                                             shard.shard_id, 1024):
            if key in dropped:
                continue
            size = len(doc.text.encode("utf-8", "surrogatepass"))
            if part and part_bytes + size > cfg.max_part_bytes:
                run_part(part)
                part, part_bytes = [], 0
            part.append((shard.shard_id, key, doc))
            part_bytes += size
            totals["documents"] += 1
            totals["text_bytes"] += size
    if part:
        run_part(part)

    for sid in ids:
        write_cuts(out, sid, cuts[sid])
    with atomic_path(out / "dedup" / "substring_spans" / f"group-{group:05d}.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(spans, schema=SPANS_SCHEMA), tmp)
    return SubstringResult(group=group, shards=ids, **totals, seconds=round(time.perf_counter() - started, 3))


