"""The selection phase of `refinery run`, after the clustering and span-cut stages and before the
rewrite: per shard, the rank inputs of the documents dedup keeps (rank-<shard>); then rounds of
histogram tasks find the corpus-wide cut-off (refinery.quality.select); apply drops what ranks
below it. Engine-free: run.py makes these tasks."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refinery.config import PipelineConfig
from refinery.engine.task import Result
from refinery.io import InputShard, atomic_path, write_json_atomic
from refinery.quality import select as rs
from refinery.stage import SelectStage
from refinery.stats import StageStats

SHARDS_PER_TASK = 32  # one histogram task sums this many shards' counts: the driver gets few arrays


def select_stage(config: PipelineConfig) -> SelectStage | None:
    return next((s for s in (spec.build() for spec in config.dedup) if isinstance(s, SelectStage)), None)


def select_folder(out: Path) -> Path:
    return out / "dedup" / "select"


def rank_file(out: Path, shard: InputShard) -> Path:
    return select_folder(out) / f"{shard.shard_id}.npy"


def cutoff_file(out: Path) -> Path:
    return select_folder(out) / "cutoff.json"


def _dtype(columns: int) -> np.dtype:
    return np.dtype([("lo", np.uint64), ("weight", np.int64), ("scores", np.float64, (columns,))])


@dataclass
class RankResult(Result):
    shard_id: str
    documents: int
    weight: int
    seconds: float = 0.0


def score_matrix(selector: SelectStage, docs) -> np.ndarray:
    columns = selector.score_columns()
    return np.array([[np.nan if doc.scores.get(c) is None else doc.scores[c] for c in columns] for doc in docs],
                    dtype=np.float64).reshape(len(docs), len(columns))


def rank_keys(selector: SelectStage, batch, percentiles: np.ndarray | None):
    """(hi, lo, weights) rank keys of a batch of (internal key, document)."""
    docs = [doc for _, doc in batch]
    hi = rs.order_bits(rs.combined_values(score_matrix(selector, docs), percentiles))
    return hi, rs.tie_bits(docs), np.array(selector.weights(docs), dtype=np.int64)


def write_ranks(shard: InputShard, config: PipelineConfig, out_dir: str) -> RankResult:
    """The documents of one shard that dedup keeps: their tie-break hash, weight and scores."""
    from refinery.pipeline.decided import surviving_documents
    from refinery.pipeline.chain import DropSampler

    out = Path(out_dir)
    started = time.perf_counter()
    stages = [spec.build() for spec in config.dedup]
    selector = next(s for s in stages if isinstance(s, SelectStage))
    funnel = {s.name: StageStats(s.name) for s in stages}
    parts = []
    for batch in surviving_documents(shard, config, out, stages, funnel, DropSampler(0)):
        docs = [doc for _, doc in batch]
        part = np.zeros(len(batch), dtype=_dtype(len(selector.score_columns())))
        part["lo"] = rs.tie_bits(docs)
        part["weight"] = selector.weights(docs)
        part["scores"] = score_matrix(selector, docs)
        parts.append(part)
    ranks = np.concatenate(parts) if parts else np.zeros(0, dtype=_dtype(len(selector.score_columns())))
    with atomic_path(rank_file(out, shard)) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, ranks)
    return RankResult(shard.shard_id, len(ranks), int(ranks["weight"].sum()), round(time.perf_counter() - started, 3))


def _load(path: str, percentiles: np.ndarray | None):
    ranks = np.load(path)
    return rs.order_bits(rs.combined_values(ranks["scores"], percentiles)), ranks["lo"], ranks["weight"]


def score_histograms(paths: list[str]) -> np.ndarray:
    """Per score, documents per float32 bin, summed over ``paths``."""
    total = None
    for path in paths:
        scores = np.load(path)["scores"]
        counts = np.stack([np.bincount(rs.score_bins(scores[:, j]), minlength=rs.BINS)
                           for j in range(scores.shape[1])])
        total = counts if total is None else total + counts
    return total


def prefix_histogram(paths: list[str], percentiles_path: str | None, prefix: list[int]) -> np.ndarray:
    percentiles = np.load(percentiles_path) if percentiles_path else None
    total = np.zeros(rs.BINS, dtype=np.int64)
    for path in paths:
        hi, lo, weight = _load(path, percentiles)
        total += rs.histogram(hi, lo, weight, prefix)
    return total


def find_cutoff(config: PipelineConfig, shards: list[InputShard], out: Path, engine, results: list[RankResult]) -> dict:
    """The rounds on the engine; writes dedup/select/cutoff.json; returns the selection summary."""
    from refinery.engine import Task

    started = time.perf_counter()
    selector = select_stage(config)
    cfg = selector.config
    paths = [str(rank_file(out, s)) for s in shards]
    groups = [paths[i:i + SHARDS_PER_TASK] for i in range(0, len(paths), SHARDS_PER_TASK)]
    total = sum(r.weight for r in results)
    documents = sum(r.documents for r in results)
    percentiles_path = None
    if len(selector.score_columns()) > 1:
        counts = sum(engine.run([Task(key=f"select-scores-{g}", func=score_histograms, args=(group,))
                                 for g, group in enumerate(groups)]))
        percentiles_path = str(select_folder(out) / "percentiles.npy")
        with atomic_path(percentiles_path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, rs.percentile_table(counts))
    target = rs.target_weight(total, cfg.keep_percent)
    summary = {"stage": selector.name, "scores": list(selector.score_columns()), "by": cfg.by,
               "keep_percent": cfg.keep_percent, "documents_in": documents, "weight_in": total, "target": target}
    if target == 0:
        write_json_atomic(cutoff_file(out), {**summary, "cutoff": None})
        return {**summary, "cutoff": None, "weight_kept": 0, "kept_share": 0.0,
                "rounds_seconds": round(time.perf_counter() - started, 3)}
    prefix: list[int] = []
    above = 0
    for round_ in range(rs.ROUNDS):
        counts = sum(engine.run([Task(key=f"select-round{round_}-{g}", func=prefix_histogram,
                                      args=(group, percentiles_path, list(prefix)))
                                 for g, group in enumerate(groups)]))
        chosen, above_next = rs.choose_bin(counts, above, target)
        if round_ == rs.ROUNDS - 1:
            kept_weight = above_next + int(counts[chosen])
        prefix.append(chosen)
        above = above_next
    hi, lo = rs.key_from_bins(prefix)
    summary.update({"cutoff": {"hi": hi, "lo": lo, "value": rs.value_of(hi), "percentiles": percentiles_path is not None},
                    "weight_kept": kept_weight, "kept_share": round(kept_weight / total, 6)})
    write_json_atomic(cutoff_file(out), summary)
    return {**summary, "rounds_seconds": round(time.perf_counter() - started, 3)}


def read_cutoff(out: Path) -> rs.Cutoff | None:
    stored = json.loads(cutoff_file(out).read_text())
    if stored["cutoff"] is None:
        return None
    percentiles = np.load(select_folder(out) / "percentiles.npy") if stored["cutoff"]["percentiles"] else None
    return rs.Cutoff(stored["cutoff"]["hi"], stored["cutoff"]["lo"], stored["target"], stored["weight_in"], percentiles)
