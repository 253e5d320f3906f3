"""One map task: an input shard streamed through the stage chain into Parquet. Engine-free:
:mod:`refinery.pipeline.run` makes it a task, and the engine decides whether it runs."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.config import PipelineConfig
from refinery.document import Document, Drop
from refinery.engine.task import Result
from refinery.io import InputShard, atomic_path, write_json_atomic
from refinery.stage import SourceStage, Stage, batched
from refinery.stats import StageStats

DOCUMENT_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("url", pa.string()),
    ("warc_date", pa.string()),
    ("source", pa.string()),
    ("language", pa.string()),
    ("language_score", pa.float64()),
    ("text", pa.string()),
])


# text: what the stage saw (the HTML head for pre-extraction drops); kept_id: for dedup drops,
# the document kept in its place; detail: what else explains a drop (decontaminate: set and item)
DROPPED_SCHEMA = pa.schema([(name, pa.string()) for name in ("id", "url", "stage", "reason", "language", "text",
                                                             "kept_id", "detail")])
DROPPED_TEXT_CHARS = 20_000


class UndeclaredReason(AssertionError):
    pass


class DropSampler:
    """Keeps the first N dropped documents per stage and reason: bounded and deterministic."""

    def __init__(self, per_reason: int):
        self.per_reason = per_reason
        self.kept: dict[str, list[dict]] = {}
        self._counts: dict[tuple[str, str], int] = {}

    def offer(self, stage: str, drop: Drop) -> None:
        key = (stage, drop.reason)
        if self._counts.get(key, 0) >= self.per_reason:
            return
        self._counts[key] = self._counts.get(key, 0) + 1
        doc = drop.doc
        self.kept.setdefault(stage, []).append({
            "id": doc.id, "url": doc.url, "stage": stage, "reason": drop.reason, "language": doc.language,
            "text": (doc.text or doc.html or "")[:DROPPED_TEXT_CHARS], "kept_id": drop.kept_id, "detail": drop.detail,
        })

    def write(self, out_dir: Path, shard_id: str, stages: list[str]) -> None:
        for stage in stages:  # remove samples of an earlier attempt with other drops
            (out_dir / "dropped" / stage / f"{shard_id}.parquet").unlink(missing_ok=True)
        for stage, rows in self.kept.items():
            with atomic_path(out_dir / "dropped" / stage / f"{shard_id}.parquet") as tmp:
                pq.write_table(pa.Table.from_pylist(rows, schema=DROPPED_SCHEMA), tmp, compression="zstd")


def _count_source(source: SourceStage, shard: InputShard, stats: StageStats, sampler: DropSampler,
                  tick: Callable[[], None] = lambda: None) -> Iterator[Document]:
    started = time.perf_counter()
    for item in source.read(shard.path, shard.start, shard.end):
        stats.docs_in += 1
        tick()
        if not _count_drop(source, item, stats, sampler):
            stats.seconds += time.perf_counter() - started
            yield item
            started = time.perf_counter()
    stats.seconds += time.perf_counter() - started


def _apply(stage: Stage, docs: Iterable[Document], stats: StageStats, sampler: DropSampler) -> Iterator[Document]:
    for batch in batched(docs, stage.batch_size):
        stats.docs_in += len(batch)
        started = time.perf_counter()
        results = stage.process_batch(batch)
        stats.seconds += time.perf_counter() - started
        for item in results:
            if not _count_drop(stage, item, stats, sampler):
                yield item


def _count_drop(stage, item: Document | Drop, stats: StageStats, sampler: DropSampler) -> bool:
    """Counts `item` as dropped (with a declared reason) or passed on; True when it was a drop."""
    if not isinstance(item, Drop):
        stats.count_out(item.language, item.text)
        return False
    if item.reason not in stage.reasons:
        raise UndeclaredReason(f"stage {stage.name} dropped with undeclared reason {item.reason!r}")
    stats.dropped[item.reason] += 1
    sampler.offer(stage.name, item)
    return True


REPORT_EVERY_S = 2.0  # how often a shard reports its progress while it runs


def _local(path: str) -> str | None:
    return None if "://" in path and not path.startswith("file://") else path.removeprefix("file://")


def input_position(path: str) -> int | None:
    """How far this process has read into the local file ``path``: the furthest offset of its
    open descriptors on it, from /proc (Linux); None elsewhere, for a remote input, or when the
    reader has it closed. A reader needs no hook for it: it is what the kernel knows."""
    if _local(path) is None:
        return None
    try:
        target = os.path.realpath(_local(path))
        furthest = None
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") != target:
                    continue
                with open(f"/proc/self/fdinfo/{fd}") as info:
                    offset = int(info.readline().split()[1])  # "pos:\t<offset>"
            except (OSError, ValueError, IndexError):
                continue
            furthest = max(furthest or 0, offset)
        return furthest
    except OSError:
        return None


class _Ticker:
    """Tells ``report`` (plain Python, given by whoever runs the shard) the records read, the
    documents through the chain and the input bytes read, at most every REPORT_EVERY_S; it is
    called for every record, so a slow shard still reports on time."""

    def __init__(self, report: Callable[..., None], path: str, records: StageStats):
        self.report, self.path, self.records = report, path, records
        self.documents, self.bytes, self.due = 0, 0, time.monotonic() + REPORT_EVERY_S
        try:
            self.total = os.path.getsize(_local(path)) if _local(path) else None
        except OSError:
            self.total = None

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self.due:
            return
        self.due = now + REPORT_EVERY_S
        position = input_position(self.path)
        self.bytes = max(self.bytes, position or 0)
        self.report(records=self.records.docs_in, documents=self.documents,
                    **({"bytes": self.bytes, "bytes_total": self.total} if self.total and self.bytes else {}))

    def count(self, docs: Iterable[Document]) -> Iterator[Document]:
        for doc in docs:
            self.documents += 1
            yield doc


@dataclass
class TextSize:
    """Characters and whitespace-separated words of the documents written (the report's size per shard)."""

    characters: int = 0
    words: int = 0

    def __add__(self, other: TextSize) -> TextSize:
        return TextSize(self.characters + other.characters, self.words + other.words)


def text_size(docs: list[Document]) -> TextSize:
    return TextSize(sum(len(d.text or "") for d in docs), sum(len((d.text or "").split()) for d in docs))


METADATA_SCHEMA = DOCUMENT_SCHEMA.append(pa.field("metadata", pa.string()))  # input.metadata_fields, as JSON


def document_schema(config: PipelineConfig) -> pa.Schema:
    """The documents' columns: a ``metadata`` column too when the config carries input fields, and
    the stages' score columns (``quality_<name>``)."""
    schema = METADATA_SCHEMA if config.spec.input.metadata_fields else DOCUMENT_SCHEMA
    for spec in config.stages:
        for column in spec.stage_class.score_columns(spec.config):
            schema = schema.append(pa.field(column, pa.float64()))
    return schema


def document_rows(docs: list[Document], schema: pa.Schema = DOCUMENT_SCHEMA) -> pa.Table:
    columns = {
        "id": [d.id for d in docs],
        "url": [d.url for d in docs],
        "warc_date": [d.warc_date for d in docs],
        "source": [d.source for d in docs],
        "language": [d.language for d in docs],
        "language_score": [d.language_score for d in docs],
        "text": [d.text for d in docs],
    }
    if "metadata" in schema.names:
        columns["metadata"] = [json.dumps(d.metadata, sort_keys=True, default=str) if d.metadata else None for d in docs]
    for column in (name for name in schema.names if name not in columns):
        columns[column] = [d.scores.get(column) for d in docs]
    return pa.Table.from_pydict(columns, schema=schema)


def source_stage_class(config: PipelineConfig, shard: InputShard) -> type[SourceStage]:
    """The reader of the shard's kind (what the run chose), else by ``input.format`` or the
    file's name (refinery.io.source_kind)."""
    from refinery.io import source_kind

    kind = shard.kind or source_kind(shard.path, config.spec.input.format)
    if kind == "wet":
        from refinery.stages.wet_reader import WetReader as reader
    elif kind == "jsonl":
        from refinery.stages.jsonl_reader import JsonlReader as reader
    elif kind == "parquet":
        from refinery.stages.parquet_reader import ParquetReader as reader
    else:
        from refinery.stages.warc_reader import WarcReader as reader
    return reader


def build_chain(config: PipelineConfig, shard: InputShard) -> tuple[SourceStage, list[Stage]]:
    reader = source_stage_class(config, shard)(config.spec.input, source=config.spec.source,
                                               limit=config.spec.run.limit)
    return reader, [spec.build() for spec in config.stages]


def shard_paths(out_dir: Path, shard: InputShard, deduplicated: bool = False) -> dict[str, Path]:
    """Where the chain's outputs go; with dedup stages, documents wait in filtered/ for them."""
    return {
        "documents": out_dir / ("filtered" if deduplicated else "documents") / f"{shard.shard_id}.parquet",
        "stats": out_dir / "stats" / "shards" / f"{shard.shard_id}.json",
        "marker": out_dir / "_markers" / "map" / f"{shard.shard_id}.done",
    }


@dataclass
class ShardResult(Result):
    """What one map task reports: its records, documents, text size and funnel."""

    shard_id: str
    path: str
    records: int
    documents: int
    characters: int = 0
    words: int = 0
    funnel: list[dict] = field(default_factory=list)


def run_shard(shard: InputShard, config: PipelineConfig, out_dir: str,
              report: Callable[..., None] | None = None) -> ShardResult:
    """Runs the chain over one shard and writes its Parquet and stats atomically. ``report``,
    when given, is told ``records=``, ``documents=`` (and ``bytes=``, ``bytes_total=`` of a
    local input) every REPORT_EVERY_S while the shard runs."""
    out = Path(out_dir)
    reader, stages = build_chain(config, shard)
    funnel = [StageStats(reader.name)] + [StageStats(stage.name) for stage in stages]
    paths = shard_paths(out, shard, bool(config.dedup))
    sampler = DropSampler(config.spec.run.dropped_samples)
    documents, size = 0, TextSize()
    ticker = _Ticker(report, shard.path, funnel[0]) if report is not None else None
    for stage in stages:
        stage.setup()
    try:
        stream: Iterable[Document] = _count_source(reader, shard, funnel[0], sampler, ticker or (lambda: None))
        for stage, stats in zip(stages, funnel[1:]):
            stream = _apply(stage, stream, stats, sampler)
        if ticker is not None:
            stream = ticker.count(stream)
        with atomic_path(paths["documents"]) as tmp:
            schema = document_schema(config)
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for rows in batched(stream, config.spec.run.row_group_size):
                    writer.write_table(document_rows(rows, schema))
                    documents += len(rows)
                    size += text_size(rows)
    finally:
        for stage in stages:
            stage.teardown()
    for stage, stats in zip(stages, funnel[1:]):
        stats.extra = stage.extra_stats()
    for stats in funnel:
        stats.check_balanced()

    sampler.write(out, shard.shard_id, [s.stage for s in funnel])
    result = ShardResult(shard_id=shard.shard_id, path=shard.path, records=funnel[0].docs_in, documents=documents,
                         characters=size.characters, words=size.words, funnel=[s.to_dict() for s in funnel])
    write_json_atomic(paths["stats"], result.to_dict())
    return result
