"""Reports of a training run: the loss plot and the model card."""

from __future__ import annotations

import json
from pathlib import Path

from refinery.io import write_text_atomic
from refinery.train.spec import TrainSpec


def plot_metrics(records: list[dict], path: Path, title: str) -> None:
    """Train loss and held-out bits per byte against tokens seen, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot([r["tokens"] for r in records], [r["train_loss"] for r in records], lw=1)
    left.set(xlabel="tokens", ylabel="train loss (nats/token)", title=title)
    names = list(dict.fromkeys(name for r in records for name in r.get("eval", {})))  # sets have their own steps
    for name in names:
        points = [r for r in records if name in r.get("eval", {})]
        right.errorbar([r["tokens"] for r in points], [r["eval"][name]["bits_per_byte"] for r in points],
                       yerr=[r["eval"][name]["bpb_stderr"] for r in points], marker="o", ms=3, capsize=2, label=name)
    right.set(xlabel="tokens", ylabel="held-out bits per byte", title="held-out sets")
    if names:
        right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_model_card(spec: TrainSpec, summary: dict, model_dir: Path) -> None:
    """README.md in the model folder, following the Hugging Face model-card template, every
    field taken from this run."""
    import platform

    import torch
    import transformers

    from refinery import tokenizer as tk

    data = Path(spec.data)
    manifest_path = data / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    dataset_card = data.parent / "README.md"
    sources = manifest.get("sources", {})
    cfg, m = spec.train, spec.model
    hours = summary["seconds"] / 3600
    hardware = (torch.cuda.get_device_name(0) if summary["device"].startswith("cuda")
                else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads")
    eval_rows = [f"| {name} | `{summary['eval_sets'][name]['data']}` | {summary['eval_sets'][name]['windows']} | "
                 f"{e['tokens']:,} | {e['bytes']:,} | **{e['bits_per_byte']:.4f}** | {e['bpb_stderr']:.4f} | "
                 f"{e['loss']:.4f} |" for name, e in summary["eval"].items()]
    windows = sum(s["windows"] for s in summary["eval_sets"].values())
    tail = (f"The last {cfg.heldout_fraction:.0%} of each token file is held out for evaluation (set `heldout`)."
            if cfg.heldout_fraction else "Every token of the training files is trained on; the held-out sets are "
            "separate folders.")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation", "license: other",
        "tags:", "- falcon", "- refinery", "- ablation", "---", "",
        f"# {spec.name}", "",
        "## Model details", "",
        f"A {summary['parameters']:,}-parameter Falcon (transformers `FalconForCausalLM`: multi-query attention, "
        f"parallel attention and MLP, rotary embeddings, no biases) trained by `refinery train` to compare "
        f"training data, not for use. {m.layers} layers, hidden size {m.hidden_size}, {m.heads} heads, "
        f"context {m.seq_len} tokens, vocabulary {summary['vocab_size']:,}.", "",
        "## Uses", "",
        "Direct use: comparing data-curation choices (ablations) at a fixed token budget, as RefinedWeb did.", "",
        "Out-of-scope use: any application. The model is tiny and trained on "
        f"{summary['tokens']:,} tokens; it does not produce reliable or useful text.", "",
        "## Bias, risks, and limitations", "",
        "It reproduces whatever its web and curated sources contain, including their biases and errors; "
        f"the held-out figures below come from {windows} windows of {m.seq_len + 1} tokens and carry "
        "the stated noise.", "",
        "## How to get started with the model", "",
        "```python", "from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast",
        f'model = AutoModelForCausalLM.from_pretrained("{model_dir}")',
        f'tokenizer = PreTrainedTokenizerFast.from_pretrained("{model_dir}")',
        'ids = tokenizer("The river", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=20)[0]))", "```", "",
        "## Training details", "", "### Training data", "",
        f"Token shards from `{spec.data}` (dataset card: `{dataset_card}`), tokenizer `{spec.tokenizer}` "
        f"(sha256 `{tk.file_hash(spec.tokenizer)[:16]}`)"
        + (f", mix seed {manifest['seed']}." if "seed" in manifest else "."),
        "",
        "| source | tokens in the mix | share |", "|---|---:|---:|",
        *[f"| {name} | {s['tokens']:,} | {s['achieved_share']:.2%} |" for name, s in sources.items()],
        "", tail, "",
        "### Training procedure", "",
        f"AdamW (betas 0.9/0.95, weight decay {cfg.weight_decay} on matrices), learning rate {cfg.lr} with "
        f"{cfg.warmup_steps} warmup steps and cosine decay to {cfg.min_lr}, gradient clipping {cfg.clip}, "
        f"batch {cfg.batch_size} x {cfg.grad_accum} accumulation x {m.seq_len} tokens = "
        f"{summary['tokens_per_step']:,} tokens per step, {summary['steps']} steps, seed {cfg.seed}, "
        f"precision {summary['dtype']}.", "",
        "### Speeds, sizes, times", "",
        f"{summary['tokens']:,} tokens in {summary['seconds']:.0f} s ({summary['tokens'] / summary['seconds']:.0f} "
        f"tokens/s) on {summary['device']}, of which {summary['eval_seconds']:.0f} s evaluation "
        f"({summary['eval_share']:.0%} of the steps' and evaluations' time); {summary['parameters']:,} parameters.", "",
        "## Evaluation", "",
        "Bits per byte (a tokenizer-independent loss: summed NLL / ln 2 / UTF-8 bytes of the predicted "
        "tokens) on each held-out set, with its standard error over eval batches:", "",
        "| set | tokens from | windows | predicted tokens | bytes | bits per byte | std. error | loss (nats/token) |",
        "|---|---|---:|---:|---:|---:|---:|---:|", *eval_rows, "",
        f"Final train loss {summary['final_train_loss']:.4f} nats/token.", "",
        "## Environmental impact", "",
        f"Hardware: {hardware}. Hours used: {hours:.3f}. Cloud provider and region: not applicable "
        "(local machine); carbon emitted: not measured.", "",
        "## Technical specifications", "",
        f"Decoder-only transformer, {m.layers} layers, multi-query attention (1 key/value head), parallel "
        f"attention/MLP blocks, rotary position embeddings. Software: PyTorch {torch.__version__}, "
        f"transformers {transformers.__version__}, refinery.", "",
        "## Citation", "",
        "Penedo et al. 2023, *The RefinedWeb Dataset for Falcon LLM*, arXiv:2306.01116.", "",
    ]
    write_text_atomic(model_dir / "README.md", "\n".join(lines))
