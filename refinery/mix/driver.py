"""`refinery run` on a mix config: the steps of :mod:`refinery.mix` as task lists on the engine.

Each ``*_task`` function only says what a task is (its key, function, fingerprint, inputs,
outputs and marker under ``OUTPUT/_markers/mix/``); :func:`refinery.engine.run_task` skips a task
whose marker matches, so a killed mix resumes where it stopped, with the same bytes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

from refinery.engine import Task, finished, run_task
from refinery.engine.output import is_own_name, remove_own
from refinery.io import write_json_atomic
from refinery.mix.card import write_dataset_card
from refinery.mix.plan import plan_mix
from refinery.mix.sources import ConvertResult, convert_curated_file, converted_paths, curated_funnels, source_files
from refinery.mix.spec import CheckedMix, MixSpec, SourceSpec, check_mix, source_key
from refinery.mix.tokenize import (HeldoutTokens, ShardTokens, digest, heldout_token_files, shard_token_files,
                                   tokenize_heldout, tokenize_shard, tokenizer_task)
from refinery.mix.write import Assigned, WrittenGroup, assign_path, assign_shard, write_output_file


def _marker(out: Path, *parts: str) -> str:
    return str(out.joinpath("_markers", "mix", *parts))


def convert_task(n: int, path: str, source: SourceSpec, out: Path) -> Task:
    from refinery.io import InputShard

    return Task(key=f"convert-{source.name}-{n}", func=convert_curated_file, args=(path, source, str(out)),
                fingerprint=digest(source.model_dump(mode="json")), inputs=(path,),
                outputs=tuple(map(str, converted_paths(path, source, str(out)))),
                marker=_marker(out, "convert", f"{source.name}-{InputShard.for_path(path).shard_id}.done"),
                result_type=ConvertResult)


def heldout_task(n: int, source: str, path: str, tokenizer_path: str, tokenizer_hash: str, out: Path) -> Task:
    return Task(key=f"heldout-{n}", func=tokenize_heldout, args=(path, source, tokenizer_path, str(out)),
                fingerprint=digest(tokenizer_hash), inputs=(path,),
                outputs=tuple(map(str, heldout_token_files(out, source, path))),
                marker=_marker(out, "heldout", f"{source}-{Path(path).stem}.done"), result_type=HeldoutTokens)


def tokenize_task(n: int, source: str, path: str, tokenizer_path: str, tokenizer_hash: str, spec: MixSpec,
                  out: Path) -> Task:
    return Task(key=f"tokenize-{n}", func=tokenize_shard,
                args=(source, path, tokenizer_path, str(out), spec.mix.seed, spec.tokenize.batch_size),
                fingerprint=digest(tokenizer_hash, spec.mix.seed), inputs=(path,),
                outputs=tuple(map(str, shard_token_files(out, source, path))),
                marker=_marker(out, "tokenize", f"{source}-{Path(path).stem}.done"), result_type=ShardTokens)


def assign_task(n: int, result: ShardTokens, spec: MixSpec, plan: dict, files: int, out: Path, mix: str) -> Task:
    return Task(key=f"assign-{n}", func=assign_shard, args=(n, result, spec, plan, files, str(out)),
                fingerprint=mix, inputs=(str(shard_token_files(out, result.source, result.path)[1]),),
                outputs=(str(assign_path(out, n)),), marker=_marker(out, "assign", f"{n:06d}.done"),
                result_type=Assigned)


def write_task(i: int, spec: MixSpec, shard_results: list[ShardTokens], tokenizer_path: str, tokenizer_hash: str,
               out: Path, mix: str) -> Task:
    """An output group: its first file is always written; how many more it needs is known only
    once it ran, so its result records every file's size (see :func:`_forget_if_changed`)."""
    first = f"part-{i:05d}-000"
    suffixes = {"megatron": (".bin", ".idx"), "datatrove": (".ds", ".ds.index", ".ds.metadata")}
    outputs = (*(str(out / "tokens" / f"{first}{ext}") for f in spec.tokenize.formats for ext in suffixes[f]),
               str(out / "documents" / f"{first}.parquet"))
    task = Task(key=f"write-{i}", func=write_output_file,
                args=(i, spec, shard_results, tokenizer_path, f"refinery-{tokenizer_hash[:12]}", str(out)),
                fingerprint=mix, inputs=(str(out / "tokens" / "_work" / "assign"),), outputs=outputs,
                marker=_marker(out, "write", f"{i:05d}.done"), result_type=WrittenGroup)
    _forget_if_changed(task, out)
    return task


def mix_finished_task(spec: MixSpec, shards: list[tuple[str, str]], tokenizer_hash: str, out: Path,
                      stats: dict | None = None) -> Task:
    """The token phase as a whole (tokenize, assign, write, summary), done once its scratch
    ``tokens/_work/`` is removed: valid while the source shards, the tokenizer and the mix settings
    are unchanged and the outputs keep their sizes, so a rerun of a finished mix needs no ``_work``.
    Its result is the stats."""
    return Task(key="mix-finished", func=lambda: stats,
                fingerprint=digest(spec.model_dump(mode="json", exclude={"run", "output"}), tokenizer_hash),
                inputs=tuple(path for _, path in shards),
                outputs=tuple(str(out / p) for p in ("tokens", "documents", "stats.json", "README.md")),
                marker=_marker(out, "finished.done"))


def _forget_if_changed(task: Task, out: Path) -> None:
    """Removes the marker of a finished write task whose later files changed size or went away."""
    done = finished(task)
    if done is not None and any(not (out / p).is_file() or (out / p).stat().st_size != size
                                for p, size in done.sizes.items()):
        Path(task.marker).unlink()


def mix_digest(spec: MixSpec, plan: dict, shard_results: list[ShardTokens], files: int, tokenizer_hash: str) -> str:
    """Everything the output files depend on: their markers are valid only for this digest."""
    state = {"plan": plan, "files": files, "tokenizer": tokenizer_hash, "seed": spec.mix.seed,
             "tokenize": spec.tokenize.model_dump(mode="json"),
             "shards": [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in shard_results]}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def execute_mix(spec: MixSpec, out_dir: str, scheduler: str | None = None, workers: int | None = None,
                log=print, checked: CheckedMix | None = None) -> dict:
    """All the steps of :mod:`refinery.mix`; returns the stats written to OUTPUT/stats.json.
    Every source is checked first (:func:`check_mix`, unless ``checked`` is its result), so a bad
    path or nested config fails before any pipeline runs."""
    from refinery import tokenizer as tk
    from refinery.config import dedup_only_config, with_overrides
    from refinery.engine import Engine
    from refinery.io import InputShard
    from refinery.paths import inside
    from refinery.pipeline.run import deduplicate, execute

    out = Path(out_dir)
    for source in spec.sources:  # names are checked when parsed; this guards every join below
        inside(out / "sources", source.name), inside(out / "heldout", source.name)
    checked = checked or check_mix(spec)
    run = spec.run.model_copy(update={"workers": workers}) if workers else spec.run
    started = time.perf_counter()
    pipelines, dedup_summaries = {}, {}
    with Engine.for_run(run, scheduler) as engine:
        for source in (s for s in spec.sources if s.config):  # web sources: their own pipeline runs
            config, shards = checked.pipelines[source.name]
            config = with_overrides(config, output=str(out / "sources" / source.name), workers=run.workers)
            log(f"source {source.name}: running {source.config}")
            pipelines[source.name] = execute(config, shards, str(out / "sources" / source.name), engine=engine)

        converted: list[ConvertResult] = engine.run([convert_task(n, f, source, out)
                                                     for n, (source, f) in enumerate(checked.curated)])
        for index, source in enumerate(spec.sources):
            if not (source.paths and source.dedup):
                continue
            shards = [InputShard.for_path(c.input) for c in converted if c.source == source.name]
            config = dedup_only_config(source.name, source.dedup, run, key=f"{source_key(index, source)}.dedup")
            log(f"source {source.name}: {' -> '.join(s.name for s in config.dedup)}")
            _, dedup_summaries[source.name] = deduplicate(config, shards, str(out / "sources" / source.name), engine)

        if spec.tokenize.tokenizer == "train":
            paths = [str(p) for s in spec.sources for p in source_files(out, s.name)]
            tokenizer_path = engine.run_here(tokenizer_task(paths, spec.tokenize.vocab_size,
                                                            spec.tokenize.train_sample_bytes, out, "mix", log,
                                                            interleave=True)).path
        else:
            tokenizer_path = spec.tokenize.tokenizer
        tokenizer_hash = tk.file_hash(tokenizer_path)

        heldout_parts = sorted((s.name, str(p)) for s in spec.sources if s.heldout_fraction
                               for p in (out / "sources" / s.name / "heldout").glob("*.parquet"))
        heldout_results = engine.run([heldout_task(n, name, p, tokenizer_path, tokenizer_hash, out)
                                      for n, (name, p) in enumerate(heldout_parts)])
        shards = [(s.name, str(p)) for s in spec.sources for p in source_files(out, s.name)]
        done = finished(mix_finished_task(spec, shards, tokenizer_hash, out))
        if done is not None:  # nothing changed since it finished (and removed tokens/_work/)
            log("mix: finished before with these sources and settings; nothing to do")
            return done
        shard_results = engine.run([tokenize_task(n, name, p, tokenizer_path, tokenizer_hash, spec, out)
                                    for n, (name, p) in enumerate(shards)])
        plan = plan_mix(spec, shard_results)
        for line in plan["short"]:
            log(f"mix: source ran short: {line}")
        selected = sum(p["target_tokens"] for p in plan["sources"].values())
        files = max(1, math.ceil(selected / spec.tokenize.max_file_tokens))
        mix = mix_digest(spec, plan, shard_results, files, tokenizer_hash)
        for stale in (out / "tokens" / "_work" / "assign").glob("*.parquet"):
            if int(stale.stem) >= len(shard_results):  # an earlier run had more shards
                stale.unlink()
        engine.run([assign_task(n, r, spec, plan, files, out, mix) for n, r in enumerate(shard_results)])
        groups = engine.run([write_task(i, spec, shard_results, tokenizer_path, tokenizer_hash, out, mix)
                             for i in range(files)])

    outputs = [part for group in groups for part in group.parts]
    _remove_stale_outputs(out, outputs, [heldout_token_files(out, name, p) for name, p in heldout_parts])
    tokenizer = tk.load(tokenizer_path)
    stats = _write_summary(spec, out, plan, outputs, shard_results, {
        "tokenizer": {"path": os.path.relpath(tokenizer_path, out) if str(tokenizer_path).startswith(str(out))
                      else tokenizer_path, "sha256": tokenizer_hash, "eos_id": tk.eos_id(tokenizer),
                      "vocab_size": tokenizer.get_vocab_size()},
        "pipelines": {k: {"funnel": v["funnel"], "dedup": v.get("dedup")} for k, v in pipelines.items()},
        "curated_dedup": dedup_summaries, "curated_funnel": curated_funnels(converted),
        "curated_files": [{**{k: v for k, v in c.to_dict().items() if k != "funnel"},
                           "path": os.path.relpath(c.path, out)} for c in converted],
        "heldout": _heldout_totals(heldout_results), "started": started})
    remove_own(out / "tokens" / "_work")  # scratch of tokenize and assign; only the marker below resumes past it
    run_task(mix_finished_task(spec, shards, tokenizer_hash, out, stats))
    return stats


def _write_summary(spec: MixSpec, out: Path, plan: dict, outputs: list[dict], shard_results: list[ShardTokens],
                   facts: dict) -> dict:
    """``tokens/manifest.json``, ``stats.json`` and the dataset card; returns the stats."""
    totals = {s.name: {"documents": 0, "tokens": 0} for s in spec.sources}
    for output in outputs:
        for name, entry in output["sources"].items():
            totals[name]["documents"] += entry["documents"]
            totals[name]["tokens"] += entry["tokens"]
    all_tokens = sum(t["tokens"] for t in totals.values())
    sources = {}
    for source in spec.sources:
        p = plan["sources"][source.name]
        achieved = totals[source.name]["tokens"] / all_tokens if all_tokens else 0.0
        sources[source.name] = {**p, **totals[source.name], "achieved_share": round(achieved, 6),
                                "share_error_points": round(100 * (achieved - p["target_share"]), 3),
                                "license": source.license, "languages": source.languages}
    manifest = {
        "name": spec.name, "seed": spec.mix.seed, "formats": spec.tokenize.formats, "tokenizer": facts["tokenizer"],
        "dtype": shard_results[0].dtype if shard_results else "uint16",
        "tokens": all_tokens, "documents": sum(t["documents"] for t in totals.values()),
        "sources": {k: {"tokens": v["tokens"], "documents": v["documents"], "achieved_share": v["achieved_share"]}
                    for k, v in sources.items()},
        "files": outputs,
        "order": "documents appear in each file's order; files in name order",
    }
    write_json_atomic(out / "tokens" / "manifest.json", manifest)
    stats = {"name": spec.name, "kind": "mix", "budget_tokens": plan["budget_tokens"], "short": plan["short"],
             "sources": sources, "pipelines": facts["pipelines"], "curated_dedup": facts["curated_dedup"],
             "curated_funnel": facts["curated_funnel"], "curated_files": facts["curated_files"],
             "heldout": facts["heldout"], "output": {"files": len(outputs), "tokens": all_tokens},
             "seconds": round(time.perf_counter() - facts["started"], 3)}
    write_json_atomic(out / "stats.json", stats)
    write_dataset_card(out, spec, stats, manifest)
    return stats


def _remove_stale_outputs(out: Path, outputs: list[dict], heldout_files: list[list[Path]]) -> None:
    """Output files of earlier runs that this one did not write (a smaller mix, a source no longer
    split), so the folders hold exactly what the manifest lists."""
    expected = {out / path for entry in outputs for path in [*entry["files"].values(), entry["parquet"]]}
    expected |= {path for files in heldout_files for path in files}
    candidates = [*(out / "tokens").glob("part-*"), *(out / "documents").glob("part-*"),
                  *(p for p in (out / "heldout").rglob("*") if p.is_file())]
    for path in candidates:
        if path not in expected and path.is_file() and is_own_name(path):
            path.unlink()
    for folder in (out / "heldout").glob("*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _heldout_totals(results: list[HeldoutTokens]) -> dict:
    totals: dict[str, dict] = {}
    for r in results:
        entry = totals.setdefault(r.source, {"documents": 0, "tokens": 0, "folder": f"heldout/{r.source}"})
        entry["documents"] += r.documents
        entry["tokens"] += r.tokens
    return totals
