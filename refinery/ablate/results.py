"""An ablation's results: ``ablation.json`` (`summarize`), ``ablation.png`` and ``ablation.md``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from refinery.ablate.spec import AblationSpec


def summarize(spec: AblationSpec, out: Path, pipelines: dict, data: dict, eval_sets: dict, runs: dict,
              tokenizer_path: str, seconds: float) -> dict:
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
