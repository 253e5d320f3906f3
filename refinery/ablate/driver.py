"""`refinery ablate`: the variants' pipeline runs, the tokenizer and the tokenization tasks on
the engine, then one training per variant and seed (`refinery/train`), then the results."""

from __future__ import annotations

import json
import time
from pathlib import Path

from refinery.ablate.results import plot_curves, render_markdown, summarize
from refinery.ablate.spec import AblationSpec, CheckedAblation, VariantSpec, check_ablation, variant_config
from refinery.ablate.tokenize import (ReferenceTokens, ShardSplit, reference_task, remove_stale_token_files,
                                      shard_task, token_folders)
from refinery.config import ConfigError
from refinery.io import write_json_atomic, write_text_atomic
from refinery.mix.sources import held_out_by_text
from refinery.train import EvalSet, TrainSpec


def train_spec(spec: AblationSpec, out: Path, variant: str, seed: int, tokenizer_path: str) -> TrainSpec:
    return TrainSpec(name=f"{variant}-seed{seed}", data=str(out / "variants" / variant / "tokens"),
                     tokenizer=tokenizer_path, model=spec.model,
                     train=spec.train.model_copy(update={"seed": seed}),
                     eval=[EvalSet(name=e.name, data=str(out / "eval" / e.name)) for e in spec.eval])


def execute_ablation(spec: AblationSpec, out_dir: str, scheduler: str | None = None, workers: int | None = None,
                     log=print, checked: CheckedAblation | None = None, fresh: bool = False) -> dict:
    """The steps of the module docstring; returns what is written to OUTPUT/ablation.json. Everything
    is checked first (:func:`check_ablation`, unless ``checked`` is its result), before any work."""
    from refinery import tokenizer as tk
    from refinery.config import with_overrides
    from refinery.engine import Engine, run_task
    from refinery.io import InputShard
    from refinery.mix.tokenize import tokenizer_task
    from refinery.paths import inside
    from refinery.pipeline.run import execute
    from refinery.engine import finished
    from refinery.train.task import training_task

    out = Path(out_dir)
    for name in [*(v.name for v in spec.variants), *(e.name for e in spec.eval)]:  # checked when parsed too
        inside(out / "variants", name), inside(out / "eval", name)
    checked = checked or check_ablation(spec)
    started = time.perf_counter()
    run = spec.run.model_copy(update={"workers": workers}) if workers else spec.run
    pipelines = {}
    for variant in spec.variants:
        config = variant_config(spec, variant)
        config = with_overrides(config, inputs=spec.input, output=str(out / "variants" / variant.name / "run"),
                                workers=run.workers)
        shards = checked.shards
        stages = " -> ".join([s.name for s in config.stages] + [s.name for s in config.dedup])
        log(f"variant {variant.name}: {stages}")
        began = time.perf_counter()
        stats = execute(config, shards, str(out / "variants" / variant.name / "run"), scheduler=scheduler)
        pipelines[variant.name] = {"stages": [s.name for s in config.stages], "dedup": [s.name for s in config.dedup],
                                   "documents": stats["output"]["documents"], "records": stats["input"]["records"],
                                   "seconds": round(time.perf_counter() - began, 3)}

    if spec.control.enabled:  # the positive control: built from two variants' documents, not run
        from refinery.ablate.control import build_control, control_variant

        stems_so_far = sorted({p.stem for v in spec.variants
                               for p in (out / "variants" / v.name / "run" / "documents").glob("*.parquet")})
        pipelines[spec.control.name] = build_control(spec, out, stems_so_far, log)
        spec = spec.model_copy(update={"variants": [*spec.variants, control_variant(spec)]})

    if spec.tokenize.tokenizer == "train":
        first = [str(p) for p in sorted((out / "variants" / spec.variants[0].name / "run" / "documents").glob("*.parquet"))]
        fraction = spec.heldout_fraction
        tokenizer_path = run_task(tokenizer_task(first, spec.tokenize.vocab_size, spec.tokenize.train_sample_bytes, out,
                                                 "ablate", log, interleave=False,
                                                 keep=lambda text: not held_out_by_text(text, fraction),
                                                 keep_key=["held_out_by_text", fraction])).path
    else:
        tokenizer_path = spec.tokenize.tokenizer
    tokenizer_hash = tk.file_hash(tokenizer_path)

    stems = sorted({p.stem for v in spec.variants
                    for p in (out / "variants" / v.name / "run" / "documents").glob("*.parquet")})
    tasks = [shard_task(stem, spec, tokenizer_path, tokenizer_hash, out) for stem in stems]
    for v in spec.variants:
        for folder in token_folders(out, spec, v).values():
            remove_stale_token_files(folder, set(stems))
    for reference in spec.eval:
        if reference.paths:
            files = checked.eval_files[reference.name]
            tasks += [reference_task(n, f, reference, spec, tokenizer_path, tokenizer_hash, out)
                      for n, f in enumerate(files)]
            remove_stale_token_files(out / "eval" / reference.name, {InputShard.for_path(f).shard_id for f in files})
    with Engine.for_run(run, scheduler) as engine:
        results: list[ShardSplit | ReferenceTokens] = engine.run(tasks)
    data = {v.name: {"train": {"documents": 0, "tokens": 0}, "heldout": {"documents": 0, "tokens": 0}}
            for v in spec.variants}
    eval_sets = {e.name: {"documents": 0, "tokens": 0, "dropped": {},
                          "source": f"held-out documents of {e.variant}" if e.variant else
                          f"{'every record' if e.records == 'all' else 'held-out part'} of {', '.join(e.paths)}"
                          + (f" ({e.format} markup as text)" if e.format == "wikitext" else "")}
                 for e in spec.eval}
    for result in results:
        if isinstance(result, ShardSplit):
            for name, parts in result.variants.items():
                for part, counts in parts.items():
                    for key in ("documents", "tokens"):
                        data[name][part][key] += counts[key]
        else:
            eval_sets[result.set]["documents"] += result.documents
            eval_sets[result.set]["tokens"] += result.tokens
            for reason, count in result.dropped.items():
                eval_sets[result.set]["dropped"][reason] = eval_sets[result.set]["dropped"].get(reason, 0) + count
    for reference in spec.eval:
        if reference.variant:
            eval_sets[reference.name].update(data[reference.variant]["heldout"])
    for name, counts in {**{f"variants.{k}": v["train"] for k, v in data.items()}, **eval_sets}.items():
        if counts["tokens"] <= spec.model.seq_len + 1:
            raise ConfigError("heldout_fraction" if name in eval_sets else "variants",
                              f"{name} has {counts['tokens']} tokens, less than one window of {spec.model.seq_len + 1}")

    for variant in spec.variants:
        write_variant_card(spec, out, variant, pipelines[variant.name], data[variant.name], tokenizer_path)

    runs = {}
    for variant in spec.variants:
        for seed in spec.seeds:
            train_cfg = train_spec(spec, out, variant.name, seed, tokenizer_path)
            folder = out / "variants" / variant.name / "train" / f"seed-{seed}"
            task = training_task(train_cfg, str(folder), log, fresh=fresh)  # fresh: --force, no checkpoint
            if finished(task) is None:
                log(f"train: {variant.name}, seed {seed}: {spec.train.tokens:,} tokens")
            else:
                log(f"train: {variant.name}, seed {seed}: done before, reused")
            summary = run_task(task)
            curve = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
            runs[(variant.name, seed)] = {"summary": summary, "curve": [
                {"tokens": r["tokens"], **{k: e["bits_per_byte"] for k, e in r["eval"].items()}}
                for r in curve if "eval" in r]}

    scores = document_scores(spec, out, runs, log)
    result = summarize(spec, out, pipelines, data, eval_sets, runs, tokenizer_path,
                       round(time.perf_counter() - started, 3), scores)
    write_json_atomic(out / "ablation.json", result)
    plot_curves(spec, runs, out / "ablation.png", result)
    write_text_atomic(out / "ablation.md", render_markdown(spec, result))
    return result


def document_scores(spec: AblationSpec, out: Path, runs: dict, log=print) -> dict:
    """Per variant, seed and eval set: each held-out document's bits per byte under that model,
    one resumable task each (refinery/ablate/documents.py)."""
    from refinery.ablate.documents import DocumentScores
    from refinery.engine import Task, run_task

    scores = {}
    for variant in spec.variants:
        for seed in spec.seeds:
            model_dir = runs[(variant.name, seed)]["summary"]["model_dir"]
            folder = out / "variants" / variant.name / "train" / f"seed-{seed}"
            for reference in spec.eval:
                path = folder / "documents" / f"{reference.name}.json"
                task = Task(key=f"score-{variant.name}-{seed}-{reference.name}", func=_scored,
                            args=(model_dir, str(out / "eval" / reference.name), reference.name, spec.model.seq_len,
                                  spec.document_tokens, str(path)),
                            fingerprint=json.dumps([spec.model.seq_len, spec.document_tokens]),
                            inputs=(model_dir, str(out / "eval" / reference.name)), outputs=(str(path),),
                            marker=str(folder / "documents" / f"{reference.name}.done"), result_type=DocumentScores)
                scores[(variant.name, seed, reference.name)] = run_task(task)
    log(f"scored {len(scores)} (model, eval set) pairs document by document")
    return scores


def _scored(model_dir: str, folder: str, name: str, seq_len: int, max_tokens: int, path: str):
    from refinery.ablate.documents import score_documents

    result = score_documents(model_dir, folder, name, seq_len, max_tokens)
    write_json_atomic(path, result.to_dict())
    return result


def write_variant_card(spec: AblationSpec, out: Path, variant: VariantSpec, pipeline: dict, counts: dict,
                       tokenizer_path: str) -> None:
    """``tokens/manifest.json`` and a short dataset card for one variant's training data, which the
    trained models' cards link to."""
    from refinery import tokenizer as tk

    folder = out / "variants" / variant.name
    train = counts["train"]
    write_json_atomic(folder / "tokens" / "manifest.json", {
        "name": f"{spec.name}-{variant.name}", "tokens": train["tokens"], "documents": train["documents"],
        "tokenizer": {"path": tokenizer_path, "sha256": tk.file_hash(tokenizer_path)},
        "sources": {variant.name: {**train, "achieved_share": 1.0}}})
    stages = " → ".join(pipeline["stages"] + pipeline["dedup"])
    write_text_atomic(folder / "README.md", "\n".join([
        "---", "license: other", "tags:", "- refinery", "- ablation", "---", "",
        f"# {spec.name}: variant `{variant.name}`", "",
        f"{variant.description or variant.name}. Built by `refinery ablate` from "
        f"`{', '.join(spec.input or ['the base config inputs'])}` through `{spec.base}` with these stages: {stages}.",
        "", f"- {pipeline['records']:,} input records, {pipeline['documents']:,} documents kept by the pipeline.",
        f"- Train part: {train['documents']:,} documents, {train['tokens']:,} tokens in `tokens/`.",
        f"- Held out: {counts['heldout']['documents']:,} documents ({counts['heldout']['tokens']:,} tokens), chosen "
        f"by a hash of their normalised text ({spec.heldout_fraction:.0%}); never trained on.",
        "- Pipeline output, funnel and stats: `run/` (`run/stats.json`).", ""]))
