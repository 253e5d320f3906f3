"""An ablation's results: ``ablation.json`` (`summarize`), ``ablation.png`` and ``ablation.md``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from refinery.ablate.spec import AblationSpec


def paired_comparisons(spec: AblationSpec, scores: dict) -> dict:
    """Per eval set, every pair of variants (in config order) compared document by document."""
    from refinery.ablate.paired import compare

    names = [v.name for v in spec.variants]
    paired = {}
    for reference in spec.eval:
        per_variant = {v: [scores[(v, seed, reference.name)].bits_per_byte for seed in spec.seeds] for v in names}
        paired[reference.name] = {f"{a} vs {b}": {"a": a, "b": b, **compare(per_variant[a], per_variant[b], seed=0)}
                                  for i, a in enumerate(names) for b in names[i + 1:]}
    return paired


def control_verdict(spec: AblationSpec, paired: dict) -> dict | None:
    """Whether the ablation told the positive control from the variant it degrades, per eval set."""
    if not spec.control.enabled:
        return None
    from refinery.ablate.spec import control_variants

    of, _ = control_variants(spec)
    told = {name: comparisons[f"{of} vs {spec.control.name}"]["verdict"] == "A better"
            for name, comparisons in paired.items()}
    return {"of": of, "name": spec.control.name, "told_apart": told, "all": all(told.values())}


def summarize(spec: AblationSpec, out: Path, pipelines: dict, data: dict, eval_sets: dict, runs: dict,
              tokenizer_path: str, seconds: float, scores: dict | None = None) -> dict:
    from refinery import tokenizer as tk

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
            "variants": variants, "ordering": ordering, "seconds": seconds, "preset": spec.preset,
            "document_tokens": spec.document_tokens,
            **({"paired": (paired := paired_comparisons(spec, scores)),
                "control": {**(control_verdict(spec, paired) or {}),
                            **pipelines.get(spec.control.name, {}).get("control", {})} if spec.control.enabled else None}
               if scores else {})}


def plot_curves(spec: AblationSpec, runs: dict, path: Path, result: dict | None = None) -> None:
    """Held-out bits per byte against tokens, one panel per eval set, one line per variant (the
    mean over seeds; the band spans the seeds); below, with paired results, a forest plot per eval
    set: each pair's mean paired difference and its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e.name for e in spec.eval]
    paired = (result or {}).get("paired")
    rows = 2 if paired else 1
    fig, axes = plt.subplots(rows, len(names), figsize=(4.2 * len(names), 3.6 * rows), squeeze=False)
    if paired:
        for ax, name in zip(axes[1], names):
            pairs = list(paired[name].items())
            for y, (label, c) in enumerate(pairs):
                colour = "#2a7" if c["verdict"] == "A better" else "#c33" if c["verdict"] == "B better" else "#888"
                ax.errorbar(c["mean_difference"], y, xerr=[[c["mean_difference"] - c["ci_low"]],
                                                           [c["ci_high"] - c["mean_difference"]]],
                            fmt="o", color=colour, capsize=3)
            ax.axvline(0, color="black", lw=0.8)
            ax.set_yticks(range(len(pairs)), [label for label, _ in pairs], fontsize=7)
            ax.set(title=f"{name}: B - A, bits per byte", xlabel="positive: A better (95% interval)")
            ax.grid(alpha=0.3, axis="x")
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


REPEATED_EPOCHS = 4  # "Scaling Data-Constrained Language Models": up to ~4 epochs, repeats are nearly as good as new data


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
    headlines: list[str] = []  # under the title, in this order
    control = result.get("control")
    if control and "told_apart" in control:
        told = [s for s, ok in control["told_apart"].items() if ok]
        if control["all"]:
            headlines += ["", f"**Positive control: told apart on every eval set.** `{control['name']}` ({control['of']} with "
                          f"{control['achieved_share']:.1%} of its training text replaced by documents the pipeline "
                          f"removed) is worse than `{control['of']}` with a 95% interval that excludes zero, so this "
                          "budget can see an effect of that size."]
        else:
            missed = [s for s, ok in control["told_apart"].items() if not ok]
            headlines += ["", f"**The budget is too small to judge the filters.** The positive control `{control['name']}` "
                          f"({control['of']} with {control['achieved_share']:.1%} of its training text replaced by "
                          f"documents the pipeline removed) was not told from `{control['of']}` on "
                          f"{', '.join(missed)}" + (f" (it was on {', '.join(told)})" if told else "") + ". Raise the "
                          "preset (`--preset cpu-large`), the seeds or the eval sets before reading the other rows."]
    epochs = [v["epochs"] for v in result["variants"].values()]
    if max(epochs) > REPEATED_EPOCHS:
        headlines += ["", f"**Repeated data.** The variants are seen {min(epochs):.1f} to {max(epochs):.1f} times. "
                      f"Past about {REPEATED_EPOCHS} epochs a repeated token is worth much less than a new one "
                      "(Muennighoff et al. 2023), so a variant with more distinct tokens is favoured for that alone. "
                      f"Give the ablation more input until every variant is under {REPEATED_EPOCHS} epochs before "
                      "ranking variants of different sizes."]
    lines[1:1] = headlines
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
    if result.get("paired"):
        lines += ["", "## Paired comparisons, document by document", "",
                  "Each eval document's bits per byte under A's and B's models (first "
                  f"{result['document_tokens']:,} tokens of each document), averaged over seeds; B - A > 0 means A "
                  "is better. 95% interval: bootstrap over documents (seeded, 4,000 resamples), widened by the "
                  "seeds' spread; the verdict follows it. Sign test: exact, two-sided, on the seed-averaged differences. MDE: the smallest mean difference this run detects with 80% power (documents' spread, "
                  "plus the seeds' when there are several).", ""]
        for set_name, comparisons in result["paired"].items():
            lines += [f"**{set_name}**", "",
                      "| A vs B | documents | B - A, bpb | 95% interval | A wins / B wins | sign-test p | seeds' means | MDE | verdict | documents / seeds needed |",
                      "|---|---:|---:|---|---:|---:|---|---:|---|---:|"]
            for label, c in comparisons.items():
                seeds = ", ".join(f"{m:+.4f}" for m in c["seed_means"])
                needed = (f"{c['documents_needed']:,}" if c["documents_needed"] else "-") + " / " + \
                    (f"{c['seeds_needed']:,}" if c.get("seeds_needed") else "-")
                lines.append(f"| {label} | {c['documents']} | {c['mean_difference']:+.4f} | "
                             f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | {c['a_wins']} / {c['b_wins']} | "
                             f"{c['sign_p']:.3g} | {seeds} | {c['mde']:.4f} | {c['verdict']} | {needed} |")
            lines.append("")
        lines += ["\"documents / seeds needed\": for the observed difference to be detected at 80% power, the eval "
                  "documents the documents' term alone needs, and the seeds the seeds' term alone needs (both must "
                  "hold). A difference under the MDE is not evidence of no effect: this run could not have seen it.", ""]
    lines += ["",
              "Eval sets (never trained on by any variant):", ""]
    for name, info in result["eval_sets"].items():
        lines.append(f"- **{name}**: {info['source']}; {info['documents']:,} documents, {info['tokens']:,} tokens, "
                     f"{info['windows']} windows of {spec.model.seq_len + 1} tokens, spread evenly over the set, evaluated"
                     + "".join(f"; {count:,} records dropped ({reason})" for reason, count in sorted(info.get("dropped", {}).items()))
                     + ".")
    lines += ["", f"Documents are held out by a hash of their normalised text in `{spec.variants[0].name}` "
              f"({spec.heldout_fraction:.0%}), so exact copies fall on the same side; near-duplicates can "
              "fall on both.", "",
              "Epochs above 1 mean the variant's train part is smaller than the budget and is repeated.", "",
              "![validation curves](ablation.png)", "", f"Wall time {result['seconds']:,.0f} s; the variants' pipelines and trainings "
              f"{sum(v['seconds'] for v in result['variants'].values()):,.0f} s, counted where they ran "
              "(a resumed run reuses what an interrupted one finished).", ""]
    return "\n".join(lines)
