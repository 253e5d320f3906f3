"""`refinery run` as task lists on the engine: map, keys, resolve, substring, apply, finalize.

Each function here only says what a task is (its key, function, fingerprint, inputs, outputs and
marker); :class:`refinery.engine.Engine` runs them and :func:`refinery.engine.run_task` decides,
from the marker, whether a task runs again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from refinery.config import PipelineConfig
from refinery.engine import Engine, Task
from refinery.engine.output import remove_own
from refinery.engine.task import finished
from refinery.io import InputShard
from refinery.pipeline.apply import ApplyResult, apply_drops
from refinery.pipeline.chain import ShardResult, run_shard, shard_paths
from refinery.pipeline.finalize import finalize, substring_summary
from refinery.pipeline.keys import KeysResult, dedup_paths, write_keys
from refinery.pipeline.substring import (
    SubstringResult,
    find_cuts,
    span_cut_stage,
    substring_groups,
    uses_window_hashes,
)
from refinery.pipeline import windows
from refinery.pipeline.split import split_inputs
from refinery.pipeline.select import RankResult, cutoff_file, find_cutoff, rank_file, select_stage, write_ranks


@dataclass
class Progress:
    """What the progress display is told: the start, each finished shard, each later phase."""

    on_start: Callable[[int, str | None], None] = lambda total, dashboard: None
    on_shard: Callable[[ShardResult], None] = lambda result: None
    on_phase: Callable[[str], None] = lambda message: None


def map_task(shard: InputShard, config: PipelineConfig, out: Path) -> Task:
    paths = shard_paths(out, shard, bool(config.dedup))
    ranged = f":{shard.start}-{shard.end}" if shard.end is not None else ""  # a range's bytes, not only its number
    return Task(key=f"map-{shard.shard_id}", func=run_shard, args=(shard, config, str(out)),
                fingerprint=config.fingerprint() + ranged, inputs=(shard.path,),
                outputs=(str(paths["documents"]), str(paths["stats"])), marker=str(paths["marker"]),
                result_type=ShardResult, reports=True)


def keys_task(shard: InputShard, config: PipelineConfig, out: Path, after: tuple[str, ...] = ()) -> Task:
    paths = dedup_paths(out, shard)
    return Task(key=f"keys-{shard.shard_id}", func=write_keys, args=(shard, config, str(out)),
                fingerprint=config.dedup_fingerprint(),
                inputs=(str(shard_paths(out, shard, deduplicated=True)["documents"]),),
                # the band file is not a lasting output: the resolution consumes and deletes it
                outputs=(str(paths["keys"]),), marker=str(paths["keys_marker"]),
                after=after, result_type=KeysResult)


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def resolve_task(config: PipelineConfig, shards: list[InputShard], out: Path) -> Task:
    from refinery.engine.resolve import resolve

    keys, bands = ([str(dedup_paths(out, s)[k]) for s in shards] for k in ("keys", "bands"))
    texts = [str(shard_paths(out, s, deduplicated=True)["documents"]) for s in shards]
    args = (config, str(out), keys, bands, texts, [s.shard_id for s in shards])
    # the keys files stand for the band files: both come from one keys task, and the band files
    # are gone once this task is done
    return Task(key="resolve", func=resolve, args=args,
                fingerprint=_digest(config.dedup_fingerprint(), [s.shard_id for s in shards]), inputs=tuple(keys),
                outputs=tuple(str(out / "dedup" / name) for name in ("clusters.parquet", "drops", "domains.parquet")),
                marker=str(out / "_markers" / "dedup.done"))


def _drops_folder(out: Path, shard: InputShard) -> str:
    return str(out / "dedup" / "drops" / f"shard={shard.shard_id}")


def substring_task(index: int, group: list[InputShard], config: PipelineConfig, out: Path) -> Task:
    inputs = tuple(p for s in group for p in (str(shard_paths(out, s, deduplicated=True)["documents"]),
                                              _drops_folder(out, s)))
    outputs = (*(str(out / "dedup" / "cuts" / f"{s.shard_id}.parquet") for s in group),
               str(out / "dedup" / "substring_spans" / f"group-{index:05d}.parquet"))
    return Task(key=f"substring-{index}", func=find_cuts, args=(index, group, config, str(out)),
                fingerprint=_digest(config.dedup_fingerprint(), [s.shard_id for s in group]), inputs=inputs,
                outputs=outputs, marker=str(out / "_markers" / "substring" / f"group-{index:05d}.done"),
                result_type=SubstringResult)


def window_path_tasks(index: int, group: list[InputShard], config: PipelineConfig, out: Path,
                      text_bytes: int) -> tuple[list[Task], list[Task]]:
    """A group through window hashes: (windows and range tasks, cut tasks); see pipeline/windows.py."""
    cfg = span_cut_stage(config).config
    ranges = windows.range_count(text_bytes, cfg.max_part_bytes)
    work = windows.work_folder(out)
    markers = work / "_markers"
    group_ids = [s.shard_id for s in group]
    identity = windows.group_identity(out, group)
    shard_tasks = [Task(key=f"windows-{s.shard_id}", func=windows.write_windows, args=(s, config, str(out), ranges),
                        fingerprint=_digest(config.dedup_fingerprint(), ranges),
                        inputs=(str(shard_paths(out, s, deduplicated=True)["documents"]), _drops_folder(out, s)),
                        outputs=(str(windows.window_file(out, s)),), marker=str(markers / f"windows-{s.shard_id}.done"),
                        result_type=windows.WindowsResult) for s in group]
    range_tasks = [Task(key=f"range-{index}-{r}", func=windows.find_repeated_windows, args=(index, r, group, config, str(out)),
                        fingerprint=_digest(config.dedup_fingerprint(), group_ids, identity, ranges),
                        outputs=tuple(str(p) for p in windows.range_files(out, index, r)),
                        marker=str(markers / f"range-{index:05d}-{r:05d}.done"), after=tuple(t.key for t in shard_tasks),
                        result_type=windows.RangeResult) for r in range(ranges)]
    per_shard = -(-cfg.sample_spans // len(group)) if group else 0
    cut_tasks = [Task(key=f"cut-{s.shard_id}", func=windows.cut_shard,
                      args=(index, n, s, ranges, config, str(out), per_shard),
                      fingerprint=_digest(config.dedup_fingerprint(), group_ids, identity, ranges),
                      inputs=(str(shard_paths(out, s, deduplicated=True)["documents"]), _drops_folder(out, s)),
                      outputs=(str(out / "dedup" / "cuts" / f"{s.shard_id}.parquet"), str(windows.spans_file(out, index, s))),
                      marker=str(out / "_markers" / "substring" / f"cut-{s.shard_id}.done"),
                      after=tuple(t.key for t in range_tasks), result_type=SubstringResult)
                 for n, s in enumerate(group)]
    return shard_tasks + range_tasks, cut_tasks


def substring_phase(config: PipelineConfig, shards: list[InputShard], out: Path, engine: Engine,
                    keys_results: list[KeysResult]) -> tuple[list[SubstringResult], float]:
    """Each shard group by suffix array (one task) or by window hashes (windows, range and cut
    tasks); a group whose cuts are all done skips its windows and ranges. Returns the groups' (or
    cut tasks') results and the seconds of the windows and range tasks."""
    text_bytes = {r.shard_id: r.text_bytes for r in keys_results}
    tasks, reported = [], []
    for index, group in enumerate(substring_groups(config, shards)):
        group_bytes = sum(text_bytes.get(s.shard_id, 0) for s in group)
        if not uses_window_hashes(config, group_bytes):
            tasks.append(substring_task(index, group, config, out))
            reported.append(tasks[-1].key)
            continue
        work, cuts = window_path_tasks(index, group, config, out, group_bytes)
        if all(finished(t) is not None for t in cuts):
            cuts = [replace(t, after=()) for t in cuts]  # nothing to wait for: they are done
        else:
            tasks += work
        tasks += cuts
        reported += [t.key for t in cuts]
    results = dict(zip([t.key for t in tasks], engine.run(tasks)))
    remove_own(windows.work_folder(out).parent)  # dedup/_work: the resolution left nothing there
    work_seconds = sum(r.seconds for key, r in results.items() if key not in reported)
    return [results[key] for key in reported], work_seconds


def _decided(shard: InputShard, out: Path, cuts: bool) -> tuple[str, ...]:
    """What the clustering and span-cut stages decided for a shard: its documents, drops and cuts."""
    return (str(shard_paths(out, shard, deduplicated=True)["documents"]), _drops_folder(out, shard),
            *([str(out / "dedup" / "cuts" / f"{shard.shard_id}.parquet")] if cuts else []))


def rank_task(shard: InputShard, config: PipelineConfig, out: Path, cuts: bool) -> Task:
    return Task(key=f"rank-{shard.shard_id}", func=write_ranks, args=(shard, config, str(out)),
                fingerprint=config.dedup_fingerprint(), inputs=_decided(shard, out, cuts),
                outputs=(str(rank_file(out, shard)),), marker=str(out / "_markers" / "select" / f"{shard.shard_id}.done"),
                result_type=RankResult)


def apply_task(shard: InputShard, config: PipelineConfig, out: Path, cuts: bool, selects: bool = False) -> Task:
    paths = dedup_paths(out, shard)
    inputs = (*_decided(shard, out, cuts), *([str(cutoff_file(out))] if selects else []))
    return Task(key=f"apply-{shard.shard_id}", func=apply_drops, args=(shard, config, str(out)),
                fingerprint=config.dedup_fingerprint(), inputs=inputs,
                outputs=(str(paths["documents"]), str(paths["stats"])), marker=str(paths["apply_marker"]),
                result_type=ApplyResult)


def execute(config: PipelineConfig, shards: list[InputShard], out_dir: str, scheduler: str | None = None,
            progress: Progress | None = None, engine: Engine | None = None) -> dict:
    """Runs the map phase, then (with dedup stages) keys, resolution and rewrite, then finalize.
    Uses ``engine`` when given (a product running several pipelines), else starts one."""
    if engine is None:
        with Engine.for_run(config.spec.run, scheduler) as engine:
            return execute(config, shards, out_dir, progress=progress, engine=engine)
    out = Path(out_dir)
    progress = progress or Progress()
    shards = split_inputs(shards, config, out, engine)  # big files as byte ranges, one task each
    tasks = [map_task(shard, config, out) for shard in shards]
    if config.dedup:
        tasks += [keys_task(shard, config, out, after=(f"map-{shard.shard_id}",)) for shard in shards]
    progress.on_start(len(shards), engine.dashboard_link)
    results = engine.run(tasks, on_result=progress.on_shard, report=len(shards))
    mapped, keys_results = results[:len(shards)], results[len(shards):]
    if not config.dedup:
        return finalize(mapped, config, out_dir, shards)
    applied, summary = deduplicate(config, shards, out_dir, engine, keys_results, progress)
    return finalize(mapped, config, out_dir, shards, applied, summary)


def deduplicate(config: PipelineConfig, shards: list[InputShard], out_dir: str, engine: Engine | None = None,
                keys_results: list[KeysResult] | None = None,
                progress: Progress | None = None) -> tuple[list[ApplyResult], dict]:
    """The dedup phases over the chain's output in ``out_dir/filtered/``: keys (unless given), the
    corpus-wide resolution, then the per-shard rewrite. Returns (per-shard results, summary).
    Without ``engine``, runs on Dask's configured local scheduler."""
    if engine is None:
        with Engine.in_process() as engine:
            return deduplicate(config, shards, out_dir, engine, keys_results, progress)
    out = Path(out_dir)
    if keys_results is None:
        keys_results = engine.run([keys_task(shard, config, out) for shard in shards])
    (progress or Progress()).on_phase(f"dedup: {' -> '.join(s.name for s in config.dedup)} over "
                                      f"{sum(r.documents for r in keys_results):,} documents")
    resolution = resolve_task(config, shards, out)
    if finished(resolution) is None:
        _restore_band_files(config, shards, out, engine)
    summary = dict(engine.run_here(resolution))
    remove_own(out / "dedup" / "bands")  # consumed: the window hashes that come next need the disk
    cutter = span_cut_stage(config)
    groups: list[SubstringResult] = []
    window_seconds = 0.0
    if cutter is not None:
        groups, window_seconds = substring_phase(config, shards, out, engine, keys_results)
    selector = select_stage(config)
    if selector is not None:
        ranked = engine.run([rank_task(shard, config, out, cuts=cutter is not None) for shard in shards])
        # one driver step: its rounds of histogram tasks show as one phase
        summary["selection"] = engine.run_here(Task(key="select", func=find_cutoff,
                                                    args=(config, shards, out, engine, ranked)))
        select_seconds = sum(r.seconds for r in ranked) + summary["selection"].pop("rounds_seconds")
    applied = engine.run([apply_task(shard, config, out, cuts=cutter is not None, selects=selector is not None)
                          for shard in shards])
    if selector is not None:
        kept = sum(s["docs_out"] for r in applied for s in r.funnel if s["stage"] == selector.name)
        summary["selection"]["documents_kept"] = kept
    timings = {
        "keys_seconds": round(sum(r.seconds for r in keys_results), 3),
        "resolve_seconds": summary.get("seconds", 0.0),
        "apply_seconds": round(sum(r.seconds for r in applied), 3),
        **({"substring_seconds": round(sum(g.seconds for g in groups) + window_seconds, 3)} if groups else {}),
        **({"select_seconds": round(select_seconds, 3)} if selector is not None else {}),
    }
    if groups:
        summary["per_stage"] = {**summary.get("per_stage", {}), cutter.name: substring_summary(cutter, groups, applied)}
    timings["stage_seconds"] = stage_seconds(config, timings, summary.get("stage_seconds", {}))
    summary = {key: value for key, value in summary.items() if key not in ("seconds", "stage_seconds")}
    return applied, {**summary, "timings": timings}


def _restore_band_files(config: PipelineConfig, shards: list[InputShard], out: Path, engine: Engine) -> None:
    """Runs again the keys tasks whose band files an earlier resolution consumed, when the
    resolution has to run again (a changed shard or config reruns its keys tasks anyway)."""
    missing = [s for s in shards if not dedup_paths(out, s)["bands"].exists()]
    for shard in missing:
        remove_own(dedup_paths(out, shard)["keys_marker"])
    if missing:
        engine.run([keys_task(shard, config, out) for shard in missing])


def stage_seconds(config: PipelineConfig, timings: dict, clustering: dict[str, float]) -> dict[str, float]:
    """The dedup phases' seconds as the funnel shows them, per dedup stage (they add up to the
    timings): the resolution's stages get their own clustering time, and evenly the keys time and
    the rest of the resolution (reading keys, writing clusters and drops); the span-cut stage gets
    the substring time; every stage gets an even share of the rewrite (apply)."""
    names = [spec.name for spec in config.dedup]
    cutter = span_cut_stage(config)
    selector = select_stage(config)
    later = {s.name for s in (cutter, selector) if s is not None}
    resolved = [name for name in names if name not in later] or names
    shared = timings["resolve_seconds"] - sum(clustering.values())
    seconds = {name: timings["apply_seconds"] / len(names) for name in names}
    for name in resolved:
        seconds[name] += clustering.get(name, 0.0) + (timings["keys_seconds"] + max(shared, 0.0)) / len(resolved)
    if cutter is not None:
        seconds[cutter.name] += timings.get("substring_seconds", 0.0)
    if selector is not None:
        seconds[selector.name] += timings.get("select_seconds", 0.0)
    return {name: round(value, 3) for name, value in seconds.items()}
