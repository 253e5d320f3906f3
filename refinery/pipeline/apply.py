"""Dedup phase 3, one task per shard: ``documents/<shard>.parquet`` without the dedup losers, with
the span-cut stage's cuts applied, and funnel counts and dropped samples per dedup stage."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from refinery.config import PipelineConfig
from refinery.document import Document, Drop
from refinery.engine.task import Result
from refinery.io import InputShard, atomic_path, write_json_atomic
from refinery.pipeline.chain import (
    document_schema,
    DropSampler,
    TextSize,
    document_rows,
    text_size,
)
from refinery.pipeline.decided import surviving_documents
from refinery.pipeline.keys import dedup_paths
from refinery.pipeline.select import rank_keys, read_cutoff
from refinery.stage import SelectStage
from refinery.stats import StageStats


@dataclass
class ApplyResult(Result):
    shard_id: str
    documents: int
    characters: int = 0
    words: int = 0
    funnel: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def apply_drops(shard: InputShard, config: PipelineConfig, out_dir: str) -> ApplyResult:
    """Phase 3 for one shard: documents/<shard>.parquet without the dedup losers, and with a
    selection stage, without what ranks below its cut-off."""
    out = Path(out_dir)
    paths = dedup_paths(out, shard)
    stages = [spec.build() for spec in config.dedup]
    funnel = {s.name: StageStats(s.name) for s in stages}
    order = [s.name for s in stages]
    selector = next((s for s in stages if isinstance(s, SelectStage)), None)
    cutoff = read_cutoff(out) if selector is not None else None
    sampler = DropSampler(config.spec.run.dropped_samples)
    started = time.perf_counter()
    documents, size = 0, TextSize()

    with atomic_path(paths["documents"]) as tmp:
        schema = document_schema(config)
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in surviving_documents(shard, config, out, stages, funnel, sampler):
                kept = [doc for _, doc in batch]
                if selector is not None:
                    kept = _select(selector, batch, cutoff, funnel[selector.name], sampler)
                if kept:
                    writer.write_table(document_rows(kept, schema))
                    documents += len(kept)
                    size += text_size(kept)
    for stats in funnel.values():  # their time is in the dedup phases' timings, not per stage
        stats.check_balanced()
    sampler.write(out, shard.shard_id, order)
    result = ApplyResult(shard_id=shard.shard_id, documents=documents, characters=size.characters,
                         words=size.words, funnel=[funnel[name].to_dict() for name in order],
                         seconds=round(time.perf_counter() - started, 3))
    write_json_atomic(paths["stats"], result.to_dict())
    return result


def _select(selector, batch: list[tuple[str, Document]], cutoff, stats: StageStats, sampler: DropSampler) -> list[Document]:
    kept = []
    stats.docs_in += len(batch)
    if cutoff is None:  # nothing reached the selection
        for _, doc in batch:
            stats.count_out(doc.language, doc.text)
        return [doc for _, doc in batch]
    hi, lo, _ = rank_keys(selector, batch, cutoff.percentiles)
    for (_, doc), keep in zip(batch, cutoff.keeps(hi, lo)):
        if keep:
            stats.count_out(doc.language, doc.text)
            kept.append(doc)
        else:
            stats.dropped[selector.reason] += 1
            sampler.offer(selector.name, Drop(doc, selector.reason))
    return kept
