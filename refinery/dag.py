"""Builds and runs the Dask graph: one map task per input shard, then the global phases."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from refinery import __version__
from refinery.config import ConfigError, PipelineConfig
from refinery.io import InputShard, write_json_atomic
from refinery.shard import run_shard, shard_paths
from refinery.stats import StageStats, funnel_report, sum_stage_stats


def finalize(results: list[dict], config: PipelineConfig, out_dir: str, shards: list[InputShard]) -> dict:
    """The reduce node: adds the per-shard funnels up and writes stats.json atomically."""
    out = Path(out_dir)
    _remove_stale_outputs(out, shards, ["warc_reader", *(s.name for s in config.stages)])
    results = sorted(results, key=lambda r: r["shard_id"])
    funnel = sum_stage_stats([[StageStats.from_dict(s) for s in r["funnel"]] for r in results])
    languages = next((s.extra for s in funnel if s.stage == "language_id"), {})
    stats = {
        "refinery_version": __version__,
        "name": config.name,
        "config": config.path,
        "config_fingerprint": config.fingerprint(),
        "input": {"shards": len(results), "records": sum(r["records"] for r in results)},
        "output": {"documents": sum(r["documents"] for r in results), "path": "documents/"},
        "funnel": funnel_report(funnel),
        "languages": languages,
        "shards": [
            {"shard_id": r["shard_id"], "path": r["path"], "records": r["records"], "documents": r["documents"]}
            for r in results
        ],
    }
    write_json_atomic(out / "stats.json", stats)
    return stats


def _remove_stale_outputs(out: Path, shards: list[InputShard], stage_names: list[str]) -> None:
    """Drops outputs of shards and stages that are not part of this run, so the folders match stats.json."""
    import shutil

    expected = {p.name for shard in shards for p in shard_paths(out, shard).values()}
    folders = [out / "documents", out / "stats" / "shards", out / "_markers" / "map"]
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
    """Returns (map tasks, final node) as dask.delayed objects sharing one graph."""
    from dask import delayed

    map_tasks = [
        delayed(run_shard, pure=True)(shard, config, out_dir, dask_key_name=f"map-{shard.shard_id}")
        for shard in shards
    ]
    final = delayed(finalize, pure=True)(map_tasks, config, out_dir, shards, dask_key_name="finalize")
    return map_tasks, final


@dataclass
class Progress:
    """What the progress display is told after each finished shard."""

    on_start: Callable[[int, str | None], None] = lambda total, dashboard: None
    on_shard: Callable[[dict], None] = lambda result: None


def prepare_output(out_dir: str, force: bool) -> None:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError("output", f"output directory {out_dir!r} is not writable: {err.strerror}") from None
    if force:
        import shutil

        for folder in ("_markers",):
            shutil.rmtree(out / folder, ignore_errors=True)


def execute(config: PipelineConfig, shards: list[InputShard], out_dir: str, scheduler: str | None = None,
            progress: Progress | None = None) -> dict:
    progress = progress or Progress()
    map_tasks, final = build_graph(config, shards, out_dir)
    if scheduler == "sync":
        import dask

        progress.on_start(len(shards), None)
        results = dask.compute(*map_tasks, scheduler="sync")
        for result in results:
            progress.on_shard(result)
        return finalize(list(results), config, out_dir, shards)

    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        run = config.spec.run
        cluster = LocalCluster(
            n_workers=run.workers or os.cpu_count() or 1,
            threads_per_worker=run.threads_per_worker,
            processes=True,
            dashboard_address=":0" if run.dashboard else None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    try:
        dashboard = client.dashboard_link if (scheduler or config.spec.run.dashboard) else None
        progress.on_start(len(shards), dashboard)
        futures = client.compute([*map_tasks, final], retries=2)
        for future in as_completed(futures[:-1]):
            progress.on_shard(future.result())
        return futures[-1].result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def read_stats(out_dir: str) -> dict:
    return json.loads((Path(out_dir) / "stats.json").read_text())
