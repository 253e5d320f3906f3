"""Builds and runs the Dask graph: one map task per input shard, then the global phases."""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from refinery import __version__
from refinery.config import ConfigError, PipelineConfig, RunConfig
from refinery.io import InputShard, write_json_atomic
from refinery.shard import run_shard, shard_paths
from refinery.stats import StageStats, funnel_report, sum_stage_stats

TEMPORARY = re.compile(r"\.tmp(-\d+)?$")  # what atomic_path and TokenShardWriter write before renaming


def finalize(results: list[dict], config: PipelineConfig, out_dir: str, shards: list[InputShard],
             dedup: dict | None = None) -> dict:
    """The reduce node: adds the per-shard funnels up and writes stats.json atomically.

    ``results`` are the map results; with dedup stages, ``dedup`` holds the per-shard apply
    results (``dedup["shards"]``) whose funnels extend the chain's, and the dedup summary."""
    out = Path(out_dir)
    _remove_stale_outputs(out, shards, config)
    results = sorted(results, key=lambda r: r["shard_id"])
    applied = {r["shard_id"]: r for r in (dedup or {}).get("shards", [])}
    funnels, documents, sizes = [], {}, {}
    for r in results:
        funnel = [StageStats.from_dict(s) for s in r["funnel"]]
        final = applied[r["shard_id"]] if config.dedup else r
        documents[r["shard_id"]] = final["documents"]
        sizes[r["shard_id"]] = {k: final[k] for k in ("characters", "words") if k in final}
        if config.dedup:
            funnel += [StageStats.from_dict(s) for s in applied[r["shard_id"]]["funnel"]]
        funnels.append(funnel)
    funnel = sum_stage_stats(funnels)
    languages = next((s.extra for s in funnel if s.stage == "language_id"), {})
    stats = {
        "refinery_version": __version__,
        "name": config.name,
        "config": config.path,
        "config_fingerprint": config.dedup_fingerprint() if config.dedup else config.fingerprint(),
        "input": {"shards": len(results), "records": sum(r["records"] for r in results)},
        "output": {"documents": sum(documents.values()), "path": "documents/"},
        "funnel": funnel_report(funnel),
        "languages": languages,
        **({"dedup": dedup["summary"]} if config.dedup else {}),
        "shards": [
            {"shard_id": r["shard_id"], "path": r["path"], "records": r["records"],
             "documents": documents[r["shard_id"]], **sizes[r["shard_id"]]}
            for r in results
        ],
    }
    write_json_atomic(out / "stats.json", stats)
    return stats


def _remove_stale_outputs(out: Path, shards: list[InputShard], config: PipelineConfig) -> None:
    """Drops outputs of shards and stages that are not part of this run, so the folders match stats.json."""
    import shutil

    from refinery.dedup import dedup_paths, substring_stage

    stage_names = ["warc_reader", *(s.name for s in config.stages), *(s.name for s in config.dedup)]
    expected = {p.name for shard in shards for p in shard_paths(out, shard).values()}
    folders = [out / "documents", out / "stats" / "shards", out / "_markers" / "map"]
    if config.dedup:
        expected |= {p.name for shard in shards for p in dedup_paths(out, shard).values()}
        folders += [out / "filtered", out / "stats" / "dedup", out / "_markers" / "apply",
                    out / "_markers" / "keys", out / "dedup" / "keys", out / "dedup" / "bands", out / "dedup" / "cuts"]
        if substring_stage(config) is None:
            for folder in ("dedup/cuts", "dedup/substring_spans", "_markers/substring"):
                shutil.rmtree(out / folder, ignore_errors=True)
    else:  # an earlier run deduplicated; its intermediate outputs no longer apply
        for folder in ("filtered", "dedup", "stats/dedup", "_markers/keys", "_markers/apply"):
            shutil.rmtree(out / folder, ignore_errors=True)
        (out / "_markers" / "dedup.done").unlink(missing_ok=True)
    if (out / "dropped").is_dir():
        for stage_dir in (out / "dropped").iterdir():
            if stage_dir.name not in stage_names:
                shutil.rmtree(stage_dir)
            else:
                folders.append(stage_dir)
    for directory in folders:
        if directory.is_dir():
            for path in directory.iterdir():
                if path.is_file() and path.name not in expected:
                    path.unlink()


def build_graph(config: PipelineConfig, shards: list[InputShard], out_dir: str):
    """The per-shard part of the graph: (map tasks, keys tasks) as dask.delayed objects.

    Each keys task (dedup configs only) depends on its shard's map task."""
    from dask import delayed

    from refinery.dedup import write_keys

    map_tasks = [
        delayed(run_shard, pure=True)(shard, config, out_dir, dask_key_name=f"map-{shard.shard_id}")
        for shard in shards
    ]
    keys_tasks = [
        delayed(write_keys, pure=True)(shard, config, out_dir, task, dask_key_name=f"keys-{shard.shard_id}")
        for shard, task in zip(shards, map_tasks)
    ] if config.dedup else []
    return map_tasks, keys_tasks


def build_apply_graph(config: PipelineConfig, shards: list[InputShard], out_dir: str, digest: str):
    from dask import delayed

    from refinery.dedup import apply_drops

    return [
        delayed(apply_drops, pure=True)(shard, config, out_dir, digest, dask_key_name=f"apply-{shard.shard_id}")
        for shard in shards
    ]


@dataclass
class Progress:
    """What the progress display is told after each finished shard."""

    on_start: Callable[[int, str | None], None] = lambda total, dashboard: None
    on_shard: Callable[[dict], None] = lambda result: None
    on_phase: Callable[[str], None] = lambda message: None


def prepare_output(out_dir: str, force: bool) -> None:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError("output", f"output directory {out_dir!r} is not writable: {err.strerror}") from None
    for path in out.rglob("*.tmp*"):  # temporaries of a killed run (NAME.tmp, NAME.tmp-PID): never outputs
        if TEMPORARY.search(path.name) and path.is_file():
            path.unlink(missing_ok=True)
    if force:
        import shutil

        for folder in ("_markers",):
            shutil.rmtree(out / folder, ignore_errors=True)


def execute(config: PipelineConfig, shards: list[InputShard], out_dir: str, scheduler: str | None = None,
            progress: Progress | None = None) -> dict:
    """Runs the map phase, then (with dedup stages) keys, resolution and rewrite, then finalize."""
    with dask_client(config.spec.run, scheduler) as client:
        return _run_phases(config, shards, out_dir, progress or Progress(), client)


@contextmanager
def dask_client(run: RunConfig, scheduler: str | None):
    """A distributed client (a LocalCluster, or the scheduler at ``scheduler``), or None with
    Dask's in-process scheduler when ``scheduler`` is "sync"."""
    import dask

    if scheduler == "sync":
        with dask.config.set({"scheduler": "sync", "dataframe.shuffle.method": "tasks"}):
            yield None
        return

    from distributed import Client, LocalCluster

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(
            n_workers=run.workers or os.cpu_count() or 1,
            threads_per_worker=run.threads_per_worker,
            processes=True,
            dashboard_address=":0" if run.dashboard else None,
            silence_logs=logging.CRITICAL,  # a failed task is reported once, by the driver
        )
        client = Client(cluster)
    try:
        with dask.config.set({"dataframe.shuffle.method": run.shuffle}):
            yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def compute_all(client, tasks: list) -> list:
    """Results of dask.delayed ``tasks``, on ``client`` (retrying failed tasks) or in-process."""
    import dask

    if client is None:
        return list(dask.compute(*tasks))
    return [f.result() for f in client.compute(tasks, retries=2)]


def _run_phases(config: PipelineConfig, shards: list[InputShard], out_dir: str, progress: Progress, client) -> dict:
    import dask

    map_tasks, keys_tasks = build_graph(config, shards, out_dir)
    dashboard = client.dashboard_link if client is not None and config.spec.run.dashboard else None
    progress.on_start(len(shards), dashboard)
    if client is None:  # one compute, so each map task runs once for its keys task too
        computed = dask.compute(*map_tasks, *keys_tasks)
        results, keys_results = list(computed[:len(map_tasks)]), list(computed[len(map_tasks):])
        for result in results:
            progress.on_shard(result)
    else:
        from distributed import as_completed

        futures = client.compute([*map_tasks, *keys_tasks], retries=2)
        for future in as_completed(futures[:len(map_tasks)]):
            progress.on_shard(future.result())
        results = [f.result() for f in futures[:len(map_tasks)]]
        keys_results = [f.result() for f in futures[len(map_tasks):]]
    if not config.dedup:
        return finalize(results, config, out_dir, shards)

    applied, summary = deduplicate(config, shards, out_dir, client, keys_results, progress)
    return finalize(results, config, out_dir, shards, {"shards": applied, "summary": summary})


def deduplicate(config: PipelineConfig, shards: list[InputShard], out_dir: str, client=None,
                keys_results: list[dict] | None = None, progress: Progress | None = None) -> tuple[list[dict], dict]:
    """The dedup phases over the chain's output in ``out_dir/filtered/``: keys (unless given),
    the corpus-wide resolution, then the per-shard rewrite. Returns (per-shard results, summary).

    ``client`` is a ``distributed`` client, or None for the active local scheduler."""
    from refinery.dedup import find_cuts, resolve, resolve_digest, substring_groups, substring_stage, write_keys

    if keys_results is None:
        keys_results = compute_all(client, [delayed_call(write_keys, shard, config, out_dir, None, key=f"keys-{shard.shard_id}")
                                for shard in shards])
    (progress or Progress()).on_phase(f"dedup: {' -> '.join(s.name for s in config.dedup)} over "
                                      f"{sum(r['documents'] for r in keys_results):,} documents")
    summary = resolve(config, out_dir, shards, keys_results)
    digest = resolve_digest(config, keys_results)
    groups = []
    if substring_stage(config) is not None:
        groups = compute_all(client, [delayed_call(find_cuts, index, group, config, out_dir, digest, key=f"substring-{index}")
                          for index, group in enumerate(substring_groups(config, shards))])
    applied = compute_all(client, build_apply_graph(config, shards, out_dir, digest))
    timings = {
        "keys_seconds": round(sum(r.get("seconds", 0.0) for r in keys_results), 3),
        "resolve_seconds": summary.get("seconds", 0.0),
        "apply_seconds": round(sum(r.get("seconds", 0.0) for r in applied), 3),
        **({"substring_seconds": round(sum(g["seconds"] for g in groups), 3)} if groups else {}),
    }
    if groups:
        summary["per_stage"] = {**summary.get("per_stage", {}), "substring_dedup": substring_summary(groups, applied)}
    summary = {key: value for key, value in summary.items() if key != "seconds"}
    return applied, {**summary, "timings": timings}


def substring_summary(groups: list[dict], applied: list[dict]) -> dict:
    """The substring stage's totals: what its groups found and what the rewrite cut and dropped."""
    funnels = [s for r in applied for s in r["funnel"] if s["stage"] == "substring_dedup"]
    extra = [s.get("extra", {}) for s in funnels]
    return {
        "reason": "too_short_after_cut",
        "groups": len(groups),
        "parts": sum(g["parts"] for g in groups),
        "documents_in": sum(g["documents"] for g in groups),
        "text_bytes_in": sum(g["text_bytes"] for g in groups),
        "documents_touched": sum(g["documents_touched"] for g in groups),
        "bytes_cut": sum(g["cut_bytes"] for g in groups),
        "tokens_cut": sum(g["cut_tokens"] for g in groups),
        "chars_removed": sum(e.get("chars_removed", 0) for e in extra),
        "removed": sum(sum(s["dropped"].values()) for s in funnels),
    }


def delayed_call(func, *args, key: str):
    from dask import delayed

    return delayed(func, pure=True)(*args, dask_key_name=key)


def read_stats(out_dir: str) -> dict:
    return json.loads((Path(out_dir) / "stats.json").read_text())
