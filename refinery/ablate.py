"""Data ablations (`refinery ablate CONFIG`): train the same tiny Falcon on each data variant and
compare them on the same held-out text, as RefinedWeb did to show that its filtering pays off.

configs/ablation.yaml cuts its variants from one pipeline config (``base``): each keeps some of
its stages and dedup stages (raw: extraction and language ID; filtered: plus the MDR filters;
refined: plus dedup). `refinery ablate` then:

1. runs every variant's pipeline over the same inputs into ``OUTPUT/variants/NAME/run/``;
2. splits documents into train and held-out parts by a hash of the normalised text of their
   first variant's version (``heldout_fraction``), so a document, and every exact copy of it, is
   held out from all variants or from none;
3. trains one tokenizer (on the first variant's train part) or takes the configured one;
4. tokenizes each variant's train part into ``OUTPUT/variants/NAME/tokens/``, and each eval set
   into ``OUTPUT/eval/SET/``: the held-out documents of a variant, or the held-out part of
   curated reference files (split by record id, as a mix's ``heldout_fraction`` splits them);
   one task per input shard or file;
5. trains the model of ``model``/``train`` on every variant with every seed, at the same token
   budget, evaluating all of them on the same sets (`refinery/train.py`);
6. writes ``OUTPUT/ablation.json``, ``OUTPUT/ablation.md`` and ``OUTPUT/ablation.png``.

Finished pipeline runs and trainings are reused when the command is run again.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
from pydantic import Field, ValidationError, model_validator

from refinery.config import ConfigError, RunConfig, _first_error, _Strict
from refinery.io import write_json_atomic, write_text_atomic
from refinery.mix import heldout
from refinery.train import EvalSet, ModelSettings, TrainSettings, TrainSpec


class VariantSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    description: str = ""
    stages: list[str] | Literal["all"] = "all"  # the base config's stages to keep (its order stays)
    dedup: list[str] | Literal["all"] = "all"


class ReferenceSet(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    variant: str | None = None  # the held-out documents of this variant
    paths: list[str] | None = None  # or the held-out part of curated files (JSONL(.gz), Parquet)
    text_field: str = "text"
    id_field: str = "id"
    format: Literal["plain", "code", "chat"] = "plain"

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.variant is None) == (self.paths is None):
            raise ValueError("give either `variant` (its held-out documents) or `paths` (curated files)")
        return self


class AblationTokenizer(_Strict):
    tokenizer: str = "train"  # "train", or a local folder / tokenizer.json
    vocab_size: int = Field(default=8192, ge=268)
    train_sample_bytes: int = Field(default=20_000_000, gt=0)


class AblationSpec(_Strict):
    name: str = Field(min_length=1)
    base: str  # the pipeline config the variants are cut from
    input: list[str] | None = None  # default: the base config's inputs
    output: str | None = None
    variants: list[VariantSpec] = Field(min_length=1)
    heldout_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    eval: list[ReferenceSet] = Field(min_length=1)
    tokenize: AblationTokenizer = AblationTokenizer()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings(heldout_fraction=0)
    seeds: list[int] = Field(default=[1], min_length=1)
    run: RunConfig = RunConfig()


def parse_ablation(raw: dict, path: str = "") -> AblationSpec:
    if isinstance(raw, dict) and isinstance(raw.get("train"), dict):
        for key in ("seed", "heldout_fraction"):
            if key in raw["train"]:
                raise ConfigError(f"train.{key}", "set by the ablation: use `seeds`, and `heldout_fraction` at the top")
    try:
        spec = AblationSpec.model_validate(raw)
    except ValidationError as err:
        raise _first_error(err) from None
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"heldout_fraction": 0.0})})
    names = [v.name for v in spec.variants]
    if len(set(names)) != len(names):
        raise ConfigError("variants", f"variant names repeat: {names}")
    if len({e.name for e in spec.eval}) != len(spec.eval):
        raise ConfigError("eval", "eval set names repeat")
    if spec.model.hidden_size % spec.model.heads:
        raise ConfigError("model.heads", f"must divide hidden_size {spec.model.hidden_size}")
    for index, reference in enumerate(spec.eval):
        if reference.variant is not None and reference.variant not in names:
            raise ConfigError(f"eval[{index}].variant", f"no variant {reference.variant!r} (variants: {names})")
    if spec.tokenize.tokenizer != "train" and not Path(spec.tokenize.tokenizer).exists():
        raise ConfigError("tokenize.tokenizer", f"no tokenizer at {spec.tokenize.tokenizer!r} (or use `train`)")
    for index, variant in enumerate(spec.variants):
        variant_config(spec, variant, key=f"variants[{index}]")  # names stages the base has
    return spec


def variant_config(spec: AblationSpec, variant: VariantSpec, key: str = "variants"):
    """The base pipeline config with only the variant's stages and dedup stages."""
    from refinery.config import parse_config, read_yaml

    raw = read_yaml(spec.base)
    if not isinstance(raw, dict):
        raise ConfigError("base", f"{spec.base} is not a pipeline config")
    for section in ("stages", "dedup"):
        entries = raw.get(section) or []
        names = [e if isinstance(e, str) else next(iter(e)) for e in entries]
        wanted = getattr(variant, section)
        if wanted == "all":
            continue
        missing = [n for n in wanted if n not in names]
        if missing:
            raise ConfigError(f"{key}.{section}", f"{missing} not in {spec.base}'s {section}: {names}")
        raw[section] = [e for e, n in zip(entries, names) if n in wanted]
    raw["name"] = f"{spec.name}-{variant.name}"
    return parse_config(raw, spec.base)


# --- the held-out split --------------------------------------------------------------------------

def heldout_text(text: str, fraction: float) -> bool:
    """A crawl document is held out by its normalised text, so its exact copies go with it."""
    from refinery.minhash import normalize

    return heldout(normalize(text), fraction)


def split_documents(documents: Path, fraction: float) -> dict[str, bool]:
    """Per id in a documents Parquet file, whether it is held out."""
    split = {}
    if documents.exists():
        for batch in pq.ParquetFile(documents).iter_batches(columns=["id", "text"], batch_size=1024):
            for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                split[doc_id] = heldout_text(text, fraction)
    return split


def tokenize_shard(stem: str, spec: AblationSpec, tokenizer_path: str, out_dir: str) -> dict:
    """One input shard: every variant's train documents into its token folder, and the held-out
    documents of the variants that eval sets name into those sets' folders."""
    import tokenizer as tk
    from refinery.tokens import TokenShardWriter, encode_documents, token_dtype

    out = Path(out_dir)
    tokenizer = tk.load(tokenizer_path)
    dtype = token_dtype(tokenizer.get_vocab_size())
    first = out / "variants" / spec.variants[0].name / "run" / "documents" / f"{stem}.parquet"
    first_split = split_documents(first, spec.heldout_fraction)  # a shard's ids: bounded per task
    result = {}
    for variant in spec.variants:
        path = out / "variants" / variant.name / "run" / "documents" / f"{stem}.parquet"
        sets = [e.name for e in spec.eval if e.variant == variant.name]
        writers = {"train": None, **{name: None for name in sets}}
        counts = {part: {"documents": 0, "tokens": 0} for part in ("train", "heldout")}
        for batch in (pq.ParquetFile(path).iter_batches(columns=["id", "text"], batch_size=1024)
                      if path.exists() else []):
            ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
            for doc_id, text, tokens in zip(ids, texts, encode_documents(tokenizer, texts, tk.EOS_ID, dtype)):
                is_heldout = first_split.get(doc_id)
                if is_heldout is None:  # not in the first variant: split on its own text
                    is_heldout = heldout_text(text, spec.heldout_fraction)
                part = "heldout" if is_heldout else "train"
                counts[part]["documents"] += 1
                counts[part]["tokens"] += len(tokens)
                for name in (["train"] if part == "train" else sets):
                    if writers[name] is None:
                        folder = (out / "variants" / variant.name / "tokens" if name == "train"
                                  else out / "eval" / name)
                        writers[name] = TokenShardWriter(folder, stem, tokenizer.get_vocab_size(), ("megatron",))
                    writers[name].add(tokens)
        for writer in writers.values():
            if writer is not None:
                writer.close()
        result[variant.name] = counts
    return {"shard": stem, "variants": result}


def tokenize_reference(name: str, path: str, reference: ReferenceSet, fraction: float, tokenizer_path: str,
                       out_dir: str) -> dict:
    """The held-out records of one curated file (split by record id) into ``OUTPUT/eval/NAME/``."""
    import tokenizer as tk
    from refinery.io import InputShard
    from refinery.mix import SourceSpec, curated_texts
    from refinery.tokens import write_token_file

    source = SourceSpec(name=name, paths=[path], text_field=reference.text_field, id_field=reference.id_field,
                        format=reference.format)
    records, texts = 0, []
    for record_id, text in curated_texts(path, source):
        records += 1
        if text and heldout(record_id, fraction):
            texts.append(text)
    tokens = write_token_file(Path(out_dir) / "eval" / name, InputShard.for_path(path).shard_id,
                              tk.load(tokenizer_path), texts, tk.EOS_ID)
    return {"set": name, "path": path, "records": records, "documents": len(texts), "tokens": tokens}


# --- the run -------------------------------------------------------------------------------------

def train_spec(spec: AblationSpec, out: Path, variant: str, seed: int, tokenizer_path: str) -> TrainSpec:
    return TrainSpec(name=f"{variant}-seed{seed}", data=str(out / "variants" / variant / "tokens"),
                     tokenizer=tokenizer_path, model=spec.model,
                     train=spec.train.model_copy(update={"seed": seed}),
                     eval=[EvalSet(name=e.name, data=str(out / "eval" / e.name)) for e in spec.eval])


def execute_ablation(spec: AblationSpec, out_dir: str, scheduler: str | None = None, workers: int | None = None,
                     log=print) -> dict:
    """The steps of the module docstring; returns what is written to OUTPUT/ablation.json."""
    import glob

    from dask import delayed

    import tokenizer as tk
    from refinery.config import with_overrides
    from refinery.dag import compute_all, dask_client, execute
    from refinery.io import expand_inputs
    from refinery.train import train

    out = Path(out_dir)
    started = time.perf_counter()
    run = spec.run.model_copy(update={"workers": workers}) if workers else spec.run
    pipelines = {}
    for variant in spec.variants:
        config = variant_config(spec, variant)
        config = with_overrides(config, inputs=spec.input, output=str(out / "variants" / variant.name / "run"),
                                workers=run.workers)
        shards = expand_inputs(config.spec.input.paths)
        stages = " -> ".join([s.name for s in config.stages] + [s.name for s in config.dedup])
        log(f"variant {variant.name}: {stages}")
        began = time.perf_counter()
        stats = execute(config, shards, str(out / "variants" / variant.name / "run"), scheduler=scheduler)
        pipelines[variant.name] = {"stages": [s.name for s in config.stages], "dedup": [s.name for s in config.dedup],
                                   "documents": stats["output"]["documents"], "records": stats["input"]["records"],
                                   "seconds": round(time.perf_counter() - began, 3)}

    if spec.tokenize.tokenizer == "train":
        log(f"tokenizer: training a {spec.tokenize.vocab_size:,}-token BPE on {spec.variants[0].name}'s train part")
        first = sorted((out / "variants" / spec.variants[0].name / "run" / "documents").glob("*.parquet"))
        texts = tk.sample_texts(first, spec.tokenize.train_sample_bytes,
                                keep=lambda text: not heldout_text(text, spec.heldout_fraction))
        tokenizer_path = str(tk.save(tk.train(texts, spec.tokenize.vocab_size), out / "tokenizer"))
    else:
        tokenizer_path = spec.tokenize.tokenizer

    for stale in [out / "eval", *(out / "variants" / v.name / "tokens" for v in spec.variants)]:
        shutil.rmtree(stale, ignore_errors=True)  # the token files are rebuilt whole
    stems = sorted({p.stem for v in spec.variants
                    for p in (out / "variants" / v.name / "run" / "documents").glob("*.parquet")})
    with dask_client(run, scheduler) as client:
        tasks = [delayed(tokenize_shard, pure=True)(stem, spec, tokenizer_path, str(out)) for stem in stems]
        for index, reference in enumerate(spec.eval):
            if reference.paths:
                files = sorted({p for pattern in reference.paths for p in glob.glob(pattern)})
                if not files:
                    raise ConfigError(f"eval[{index}].paths", f"no file matches {reference.paths}")
                tasks += [delayed(tokenize_reference, pure=True)(reference.name, f, reference, spec.heldout_fraction,
                                                                  tokenizer_path, str(out)) for f in files]
        results = compute_all(client, tasks)
    data = {v.name: {"train": {"documents": 0, "tokens": 0}, "heldout": {"documents": 0, "tokens": 0}}
            for v in spec.variants}
    eval_sets = {e.name: {"documents": 0, "tokens": 0,
                          "source": f"held-out documents of {e.variant}" if e.variant else
                          f"held-out part of {', '.join(e.paths)}"} for e in spec.eval}
    for result in results:
        if "variants" in result:
            for name, parts in result["variants"].items():
                for part, counts in parts.items():
                    for key in ("documents", "tokens"):
                        data[name][part][key] += counts[key]
        else:
            eval_sets[result["set"]]["documents"] += result["documents"]
            eval_sets[result["set"]]["tokens"] += result["tokens"]
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
            done = folder / "train.json"
            summary = json.loads(done.read_text()) if done.exists() else None
            if summary is None or summary.get("spec") != train_cfg.model_dump() or not (folder / "model").exists():
                log(f"train: {variant.name}, seed {seed}: {spec.train.tokens:,} tokens")
                summary = train(train_cfg, str(folder), log=log)
            else:
                log(f"train: {variant.name}, seed {seed}: done before, reused")
            curve = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
            runs[(variant.name, seed)] = {"summary": summary, "curve": [
                {"tokens": r["tokens"], **{k: e["bits_per_byte"] for k, e in r["eval"].items()}}
                for r in curve if "eval" in r]}

    result = summarize(spec, out, pipelines, data, eval_sets, runs, tokenizer_path,
                       round(time.perf_counter() - started, 3))
    write_json_atomic(out / "ablation.json", result)
    plot_curves(spec, runs, out / "ablation.png")
    write_text_atomic(out / "ablation.md", render_markdown(spec, result))
    return result


def write_variant_card(spec: AblationSpec, out: Path, variant: VariantSpec, pipeline: dict, counts: dict,
                       tokenizer_path: str) -> None:
    """``tokens/manifest.json`` and a short dataset card for one variant's training data, which the
    trained models' cards link to."""
    import tokenizer as tk

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


# --- results -------------------------------------------------------------------------------------

def summarize(spec: AblationSpec, out: Path, pipelines: dict, data: dict, eval_sets: dict, runs: dict,
              tokenizer_path: str, seconds: float) -> dict:
    import tokenizer as tk

    variants = {}
    for variant in spec.variants:
        seeds = [runs[(variant.name, seed)]["summary"] for seed in spec.seeds]
        steps, tokens = seeds[0]["steps"], seeds[0]["tokens"]
        evals = {}
        for name in eval_sets:
            values = [s["eval"][name]["bits_per_byte"] for s in seeds]
            evals[name] = {"bits_per_byte": float(np.mean(values)), "per_seed": values,
                           "seed_std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                           "stderr": float(np.mean([s["eval"][name]["bpb_stderr"] for s in seeds]))}
        train_tokens = data[variant.name]["train"]["tokens"]
        variants[variant.name] = {
            "description": variant.description, **pipelines[variant.name],
            "train_documents": data[variant.name]["train"]["documents"], "train_tokens": train_tokens,
            "heldout_documents": data[variant.name]["heldout"]["documents"],
            "epochs": round(tokens / train_tokens, 3) if train_tokens else math.inf,
            "steps": steps, "tokens_trained": tokens,
            "final_train_loss": float(np.mean([s["final_train_loss"] for s in seeds])),
            "eval": evals,
            "train_seconds": round(sum(s["seconds"] for s in seeds), 3),
            "seconds": round(pipelines[variant.name]["seconds"] + sum(s["seconds"] for s in seeds), 3),
            "model_dirs": [s["model_dir"] for s in seeds],
        }
    ordering = {name: sorted(variants, key=lambda v: variants[v]["eval"][name]["bits_per_byte"]) for name in eval_sets}
    first = runs[(spec.variants[0].name, spec.seeds[0])]["summary"]
    return {"name": spec.name, "base": spec.base, "inputs": spec.input, "heldout_fraction": spec.heldout_fraction,
            "seeds": spec.seeds, "budget_tokens": first["tokens"], "model": spec.model.model_dump(),
            "parameters": first["parameters"], "device": first["device"], "dtype": first["dtype"],
            "tokenizer": {"path": tokenizer_path, "sha256": tk.file_hash(tokenizer_path),
                          "vocab_size": first["vocab_size"]},
            "eval_sets": {name: {**info, "windows": first["eval_sets"][name]["windows"]}
                          for name, info in eval_sets.items()},
            "variants": variants, "ordering": ordering, "seconds": seconds}


def plot_curves(spec: AblationSpec, runs: dict, path: Path) -> None:
    """Held-out bits per byte against tokens, one panel per eval set, one line per variant (the
    mean over seeds; the band spans the seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e.name for e in spec.eval]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for variant in spec.variants:
            curves = [runs[(variant.name, seed)]["curve"] for seed in spec.seeds]
            tokens = [p["tokens"] for p in curves[0]]
            values = np.array([[p[name] for p in curve] for curve in curves])
            line, = ax.plot(tokens, values.mean(axis=0), marker="o", ms=2.5, lw=1.2, label=variant.name)
            if len(curves) > 1:
                ax.fill_between(tokens, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2)
        ax.set(title=name, xlabel="tokens trained", ylabel="bits per byte")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{spec.name}: held-out bits per byte (lower is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_markdown(spec: AblationSpec, result: dict) -> str:
    sets = list(result["eval_sets"])
    several = len(spec.seeds) > 1
    noise = ("mean over seeds ± their standard deviation, then the standard error over eval batches" if several
             else "± the standard error over eval batches")
    lines = [
        f"# Ablation: {spec.name}", "",
        f"Every variant comes from the same inputs (`{', '.join(spec.input or ['the base config inputs'])}`) "
        f"through `{spec.base}` with some of its stages. Each trains the same "
        f"{result['parameters']:,}-parameter Falcon ({spec.model.layers} layers, width {spec.model.hidden_size}, "
        f"{spec.model.heads} heads, context {spec.model.seq_len}) on **{result['budget_tokens']:,} tokens** "
        f"(seeds {', '.join(map(str, spec.seeds))}) with one shared {result['tokenizer']['vocab_size']:,}-token "
        f"tokenizer, on {result['device']} in {result['dtype']}. Bits per byte (lower is better; {noise}):", "",
        "| variant | stages | train docs | train tokens | epochs | steps | final train loss | "
        + " | ".join(f"{s} bpb" for s in sets) + " | wall time |",
        "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(sets) + "---:|",
    ]
    for name, v in result["variants"].items():
        cells = []
        for s in sets:
            e = v["eval"][s]
            cells.append(f"{e['bits_per_byte']:.4f} ± {e['seed_std']:.4f} (s.e. {e['stderr']:.3f})" if several
                         else f"{e['bits_per_byte']:.4f} ± {e['stderr']:.4f}")
        stages = " → ".join(v["stages"] + v["dedup"])
        lines.append(f"| **{name}** | {stages} | {v['train_documents']:,} | {v['train_tokens']:,} | {v['epochs']:.2f} | "
                     f"{v['steps']} | {v['final_train_loss']:.4f} | " + " | ".join(cells)
                     + f" | {v['seconds']:.0f} s ({v['seconds'] - v['train_seconds']:.0f} s data, "
                       f"{v['train_seconds']:.0f} s training) |")
    lines += ["", "Ordering, best first: " + "; ".join(f"{s}: {' < '.join(order)}"
                                                        for s, order in result["ordering"].items()), ""]
    for s, order in result["ordering"].items():
        best, worst = (result["variants"][order[i]]["eval"][s] for i in (0, -1))
        gap, noise_bar = worst["bits_per_byte"] - best["bits_per_byte"], 2 * max(best["stderr"], worst["stderr"])
        lines.append(f"- {s}: {order[0]} is {gap:.4f} bpb better than {order[-1]}; "
                     + ("more than" if gap > noise_bar else "within") + f" twice the eval standard error ({noise_bar:.4f}).")
    lines += ["",
              "Eval sets (never trained on by any variant):", ""]
    for name, info in result["eval_sets"].items():
        lines.append(f"- **{name}**: {info['source']}; {info['documents']:,} documents, {info['tokens']:,} tokens, "
                     f"{info['windows']} windows of {spec.model.seq_len + 1} tokens, spread evenly over the set, evaluated.")
    lines += ["", f"Documents are held out by a hash of their normalised text in `{spec.variants[0].name}` "
              f"({spec.heldout_fraction:.0%}), so exact copies fall on the same side; near-duplicates can "
              "fall on both.", "",
              "Epochs above 1 mean the variant's train part is smaller than the budget and is repeated.", "",
              "![validation curves](ablation.png)", "", f"Total wall time {result['seconds']:.0f} s.", ""]
    return "\n".join(lines)
