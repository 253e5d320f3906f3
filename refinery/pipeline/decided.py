"""What the clustering and span-cut stages decided for one shard, applied while reading it: the
documents they keep, with the cuts made (the rewrite and the selection's ranks both read this)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from refinery.config import PipelineConfig
from refinery.document import Document, Drop
from refinery.io import InputShard
from refinery.pipeline.chain import DropSampler, shard_paths
from refinery.pipeline.keys import iter_keyed_documents
from refinery.pipeline.substring import shard_drops
from refinery.stage import SelectStage, SpanCutStage, batched
from refinery.stats import StageStats


def _shard_cuts(out: Path, shard_id: str) -> dict[str, list[tuple[int, int]]]:
    table = pq.read_table(out / "dedup" / "cuts" / f"{shard_id}.parquet")
    return {key: list(zip(starts, ends)) for key, starts, ends in
            zip(*(table.column(c).to_pylist() for c in ("key", "starts", "ends")))}


def _cut(stage, doc: Document, ranges: list[tuple[int, int]], stats: StageStats) -> bool:
    """Cuts ``ranges`` from ``doc.text``; False when too little text is left to keep it."""
    from refinery.stages.substring_dedup import cut_text

    before = len(doc.text)
    doc.text = cut_text(doc.text, ranges)
    extra = stats.extra
    extra["documents_touched"] = extra.get("documents_touched", 0) + 1
    extra["spans_cut"] = extra.get("spans_cut", 0) + len(ranges)
    extra["chars_removed"] = extra.get("chars_removed", 0) + before - len(doc.text)
    return len(doc.text.split()) >= stage.config.min_words_after_cut


def surviving_documents(shard: InputShard, config: PipelineConfig, out: Path, stages: list,
                        funnel: dict[str, StageStats], sampler: DropSampler) -> Iterator[list[tuple[str, Document]]]:
    """Batches of (internal key, document) of the shard's chain output that the clustering and
    span-cut stages keep, cuts applied; drops are counted in ``funnel`` and offered to ``sampler``.
    A selection stage is left to the caller: it needs the corpus-wide cut-off."""
    drops = shard_drops(out, shard.shard_id)
    cuts = _shard_cuts(out, shard.shard_id) if any(isinstance(s, SpanCutStage) for s in stages) else {}
    deciding = [s for s in stages if not isinstance(s, SelectStage)]
    source = shard_paths(out, shard, deduplicated=True)["documents"]
    keyed = iter_keyed_documents(source, shard.shard_id, config.spec.run.row_group_size)
    for docs in batched(keyed, config.spec.run.row_group_size):
        kept = []
        for key, doc in docs:
            stage_name, kept_id = drops.get(key, (None, None))
            for stage in deciding:  # the stages before the one that drops it saw it pass
                name = stage.name
                funnel[name].docs_in += 1
                if isinstance(stage, SpanCutStage) and key in cuts:
                    if not _cut(stage, doc, cuts[key], funnel[name]):
                        funnel[name].dropped[stage.reason] += 1
                        sampler.offer(name, Drop(doc, stage.reason))
                        break
                if name == stage_name:
                    funnel[name].dropped[stage.reason] += 1
                    sampler.offer(name, Drop(doc, stage.reason, kept_id))
                    break
                funnel[name].count_out(doc.language, doc.text)
            else:
                kept.append((key, doc))
        if kept:
            yield kept
