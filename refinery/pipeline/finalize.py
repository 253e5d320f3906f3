"""The reduce node of `refinery run`: adds the per-shard funnels up and writes stats.json."""

from __future__ import annotations

from pathlib import Path

from refinery import __version__
from refinery.config import PipelineConfig
from refinery.engine.output import is_own_name, remove_own
from refinery.io import InputShard, write_json_atomic
from refinery.pipeline.apply import ApplyResult
from refinery.pipeline.chain import ShardResult, shard_paths, source_stage_class
from refinery.pipeline.keys import dedup_paths
from refinery.pipeline.substring import SubstringResult, span_cut_stage
from refinery.stats import StageStats, funnel_report, sum_stage_stats


def finalize(results: list[ShardResult], config: PipelineConfig, out_dir: str, shards: list[InputShard],
             applied: list[ApplyResult] | None = None, dedup_summary: dict | None = None) -> dict:
    """Writes stats.json atomically. ``results`` are the map results; with dedup stages,
    ``applied`` holds the per-shard rewrites, whose funnels extend the chain's."""
    out = Path(out_dir)
    _remove_stale_outputs(out, shards, config)
    results = sorted(results, key=lambda r: r.shard_id)
    rewritten = {r.shard_id: r for r in applied or []}
    funnels, finals = [], {}
    for r in results:
        funnel = [StageStats.from_dict(s) for s in r.funnel]
        finals[r.shard_id] = rewritten[r.shard_id] if config.dedup else r
        if config.dedup:
            funnel += [StageStats.from_dict(s) for s in rewritten[r.shard_id].funnel]
        funnels.append(funnel)
    funnel = sum_stage_stats(funnels)
    # the dedup stages run as corpus-wide phases, not per shard: their funnel seconds are those
    # phases' timings shared out per stage (refinery.pipeline.run.stage_seconds)
    dedup_seconds = (dedup_summary or {}).get("timings", {}).get("stage_seconds", {})
    for stage in funnel:
        stage.seconds = dedup_seconds.get(stage.stage, stage.seconds)
    keyed = {spec.name: spec.stage_class.summary_key for spec in config.stages if spec.stage_class.summary_key}
    summaries = {keyed[s.stage]: s.extra for s in funnel if s.stage in keyed}
    stats = {
        "refinery_version": __version__,
        "name": config.name,
        "config": config.path,
        "config_fingerprint": config.dedup_fingerprint() if config.dedup else config.fingerprint(),
        "input": {"shards": len(results), "records": sum(r.records for r in results)},
        "output": {"documents": sum(f.documents for f in finals.values()), "path": "documents/"},
        "funnel": funnel_report(funnel),
        "languages": summaries.get("languages", {}),
        **({"dedup": dedup_summary} if config.dedup else {}),
        "shards": [
            {"shard_id": r.shard_id, "path": r.path, "records": r.records,
             "documents": finals[r.shard_id].documents, "characters": finals[r.shard_id].characters,
             "words": finals[r.shard_id].words}
            for r in results
        ],
    }
    write_json_atomic(out / "stats.json", stats)
    return stats


def substring_summary(stage, groups: list[SubstringResult], applied: list[ApplyResult]) -> dict:
    """The span-cut stage's totals: what its groups found and what the rewrite cut and dropped."""
    funnels = [s for r in applied for s in r.funnel if s["stage"] == stage.name]
    extra = [s.get("extra", {}) for s in funnels]
    return {
        "reason": stage.reason,
        "groups": len({g.group for g in groups}),
        "methods": sorted({g.method for g in groups}),
        "parts": sum(g.parts for g in groups),
        "hash_ranges": sum({g.group: g.ranges for g in groups}.values()),
        "documents_in": sum(g.documents for g in groups),
        "text_bytes_in": sum(g.text_bytes for g in groups),
        "documents_touched": sum(g.documents_touched for g in groups),
        "bytes_cut": sum(g.cut_bytes for g in groups),
        "tokens_cut": sum(g.cut_tokens for g in groups),
        "chars_removed": sum(e.get("chars_removed", 0) for e in extra),
        "removed": sum(sum(s["dropped"].values()) for s in funnels),
    }


def _remove_stale_outputs(out: Path, shards: list[InputShard], config: PipelineConfig) -> None:
    """Drops outputs of shards and stages that are not part of this run, so the folders match stats.json."""
    stage_names = [*(source_stage_class(config, s).name for s in shards[:1]), *(s.name for s in config.stages), *(s.name for s in config.dedup)]
    expected = {p.name for shard in shards for p in shard_paths(out, shard).values()}
    folders = [out / "documents", out / "stats" / "shards", out / "_markers" / "map"]
    if config.dedup:
        expected |= {p.name for shard in shards for p in dedup_paths(out, shard).values()}
        folders += [out / "filtered", out / "stats" / "dedup", out / "_markers" / "apply",
                    out / "_markers" / "keys", out / "dedup" / "keys", out / "dedup" / "bands", out / "dedup" / "cuts"]
        if span_cut_stage(config) is None:
            for folder in ("dedup/cuts", "dedup/substring_spans", "_markers/substring"):
                remove_own(out / folder)
    else:  # an earlier run deduplicated; its intermediate outputs no longer apply
        for folder in ("filtered", "dedup", "stats/dedup", "_markers/keys", "_markers/apply"):
            remove_own(out / folder)
        (out / "_markers" / "dedup.done").unlink(missing_ok=True)
    if (out / "dropped").is_dir():
        for stage_dir in (out / "dropped").iterdir():
            if stage_dir.name not in stage_names:
                remove_own(stage_dir)
            else:
                folders.append(stage_dir)
    for directory in folders:
        if directory.is_dir():
            for path in directory.iterdir():
                if path.is_file() and path.name not in expected and is_own_name(path):
                    path.unlink()
