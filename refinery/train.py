"""A tiny Falcon trained on refinery's token shards (`refinery train CONFIG`).

- **Data:** the Megatron ``.bin``/``.idx`` files of a token folder, memory-mapped. Training draws
  random windows of ``seq_len + 1`` tokens from the first ``1 - heldout_fraction`` of each
  file. Evaluation uses fixed windows from the last part, which training never sees.
- **Model:** transformers' ``FalconForCausalLM``: multi-query attention, parallel attention and
  MLP, rotary embeddings, no biases. The size comes from the config.
- **Training:** AdamW (weight decay 0.1 on matrices only), linear warmup then cosine decay to
  ``min_lr``, gradient clipping and accumulation, a seed and a token budget.
- **Device:** ``auto`` is CUDA with bf16 where there is a GPU, else CPU in fp32.
- **Evaluation:** bits per byte, ``sum(NLL) / ln 2 / bytes``, where the bytes are those of the
  decoded eval windows. It therefore compares across tokenizers. The standard error over eval
  batches is reported with it.
- **Outputs:** ``OUTPUT/metrics.jsonl``, checkpoints in ``OUTPUT/checkpoint/`` (resume
  continues from the last one), and the final model with ``save_pretrained`` plus
  ``tokenizer.json``, loadable with ``AutoModelForCausalLM.from_pretrained`` offline.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, ValidationError

from refinery.config import ConfigError, _first_error, _Strict
from refinery.io import write_json_atomic, write_text_atomic
from refinery.tokens import MEGATRON_HEADER


class ModelSettings(_Strict):
    layers: int = Field(default=2, ge=1)
    hidden_size: int = Field(default=128, ge=8)
    heads: int = Field(default=4, ge=1)
    seq_len: int = Field(default=128, ge=8)


class TrainSettings(_Strict):
    tokens: int = Field(default=1_000_000, gt=0)  # the token budget
    batch_size: int = Field(default=16, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    min_lr: float = Field(default=2e-4, ge=0)
    warmup_steps: int = Field(default=20, ge=0)
    weight_decay: float = Field(default=0.1, ge=0)
    clip: float = Field(default=1.0, gt=0)
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_every: int = Field(default=50, ge=1)
    eval_batches: int = Field(default=8, ge=1)
    heldout_fraction: float = Field(default=0.05, ge=0, lt=0.5)  # 0: no `heldout` set from the data's tail
    checkpoint_every: int = Field(default=100, ge=1)


class EvalSet(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    data: str  # a token folder never trained on, e.g. a mix's OUTPUT/heldout/NAME


class TrainSpec(_Strict):
    name: str = Field(min_length=1)
    data: str  # a token folder (refinery's OUTPUT/tokens)
    tokenizer: str  # a folder with tokenizer.json, or the file
    output: str | None = None
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    eval: list[EvalSet] = []  # more held-out sets, besides `heldout` (the data's tail)


def parse_train(raw: dict) -> TrainSpec:
    try:
        spec = TrainSpec.model_validate(raw)
    except ValidationError as err:
        raise _first_error(err) from None
    if spec.model.hidden_size % spec.model.heads:
        raise ConfigError("model.heads", f"must divide hidden_size {spec.model.hidden_size}")
    if not list(Path(spec.data).glob("*.idx")):
        raise ConfigError("data", f"no Megatron .idx/.bin token files in {spec.data!r}")
    for index, eval_set in enumerate(spec.eval):
        if not list(Path(eval_set.data).glob("*.idx")):
            raise ConfigError(f"eval[{index}].data", f"no Megatron .idx/.bin token files in {eval_set.data!r}")
    names = [e.name for e in spec.eval] + (["heldout"] if spec.train.heldout_fraction else [])
    if not names:
        raise ConfigError("eval", "no held-out set: give `eval` sets or a train.heldout_fraction above 0")
    if len(set(names)) != len(names):
        raise ConfigError("eval", f"eval set names repeat: {names}")
    tok = Path(spec.tokenizer)
    if not (tok / "tokenizer.json" if tok.is_dir() else tok).is_file():
        raise ConfigError("tokenizer", f"no tokenizer.json at {spec.tokenizer!r}")
    return spec


# --- data ----------------------------------------------------------------------------------------

def open_megatron(prefix: Path) -> np.ndarray:
    """The token array of a ``.bin`` file, memory-mapped, with the dtype its ``.idx`` declares."""
    codes = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
    with open(f"{prefix}.idx", "rb") as idx:  # not with_suffix: shard names can hold dots
        head = idx.read(18)
    if head[:9] != MEGATRON_HEADER or struct.unpack_from("<Q", head, 9)[0] != 1:
        raise ValueError(f"{prefix}.idx is not a Megatron indexed dataset (version 1)")
    return np.memmap(f"{prefix}.bin", dtype=codes[head[17]], mode="r")


def open_token_folder(folder: str) -> list[np.ndarray]:
    """Every Megatron token file of a folder, in name order, memory-mapped."""
    return [open_megatron(p.with_suffix("")) for p in sorted(Path(folder).glob("*.idx"))]


class TokenWindows:
    """Windows of ``seq_len + 1`` tokens from a token folder, split into train and held-out parts."""

    def __init__(self, folder: str, seq_len: int, heldout_fraction: float):
        self.seq_len = seq_len
        self.files = open_token_folder(folder)
        self.train_ends = [int(len(f) * (1 - heldout_fraction)) for f in self.files]
        usable = [end - seq_len - 1 for end in self.train_ends]
        if max(usable, default=0) <= 0:
            raise ValueError(f"the token files in {folder} are shorter than one window of {seq_len + 1}")
        self.weights = np.clip(np.asarray(usable, dtype=np.float64), 0, None)
        self.weights /= self.weights.sum()

    def train_batch(self, rng: np.random.Generator, batch_size: int) -> np.ndarray:
        out = np.empty((batch_size, self.seq_len + 1), dtype=np.int64)
        for row, f in enumerate(rng.choice(len(self.files), size=batch_size, p=self.weights)):
            start = int(rng.integers(0, self.train_ends[f] - self.seq_len - 1))
            out[row] = self.files[f][start:start + self.seq_len + 1]
        return out

    def heldout_windows(self, count: int) -> np.ndarray:
        """Up to ``count`` consecutive windows from the held-out tails, the same every time."""
        return fixed_windows(self.files, self.train_ends, self.seq_len, count)


def fixed_windows(files: list[np.ndarray], starts: list[int], seq_len: int, count: int) -> np.ndarray:
    """Up to ``count`` non-overlapping windows of ``seq_len + 1`` tokens, spread evenly over the
    files (each read from its start offset), so a set is sampled across all of its documents."""
    slots = [(f, start) for f, begin in zip(files, starts) for start in range(begin, len(f) - seq_len, seq_len + 1)]
    if not slots:
        raise ValueError(f"the held-out tokens are shorter than one window of {seq_len + 1}")
    picked = np.unique(np.linspace(0, len(slots) - 1, num=min(count, len(slots))).round().astype(np.int64))
    return np.stack([np.asarray(slots[i][0][slots[i][1]:slots[i][1] + seq_len + 1], dtype=np.int64) for i in picked])


def eval_windows(spec: TrainSpec, data: TokenWindows) -> dict[str, np.ndarray]:
    """Each held-out set's fixed windows: ``heldout`` (the data's tail), then the ``eval`` folders."""
    count = spec.train.eval_batches * spec.train.batch_size
    sets = {"heldout": data.heldout_windows(count)} if spec.train.heldout_fraction else {}
    for eval_set in spec.eval:
        files = open_token_folder(eval_set.data)
        sets[eval_set.name] = fixed_windows(files, [0] * len(files), spec.model.seq_len, count)
    return sets


# --- model and schedule --------------------------------------------------------------------------

def build_model(settings: ModelSettings, vocab_size: int):
    from transformers import FalconConfig, FalconForCausalLM

    config = FalconConfig(
        vocab_size=vocab_size, hidden_size=settings.hidden_size, num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads, multi_query=True, parallel_attn=True, bias=False, alibi=False,
        new_decoder_architecture=False, max_position_embeddings=settings.seq_len, bos_token_id=11, eos_token_id=11,
    )
    return FalconForCausalLM(config)


def learning_rate(step: int, total: int, cfg: TrainSettings) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def pick_device(choice: str):
    import torch

    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def window_loss(model, batch, device, dtype):
    """Summed next-token NLL (nats) of a batch of windows through the model's own forward (as
    ``AutoModelForCausalLM`` computes it), and the number of predicted tokens. For evaluation."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(batch, device=device)
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits = model(input_ids=x[:, :-1]).logits
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum")
    return loss, x[:, 1:].numel()


def train_loss(model, batch, device, dtype):
    """``window_loss`` for training: the output layer and the cross-entropy are fused
    (`linear_cross_entropy`), so the [tokens, vocab] logits are never held whole."""
    import torch

    x = torch.as_tensor(batch, device=device)
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
        hidden = model.transformer(input_ids=x[:, :-1]).last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1])
    return linear_cross_entropy(hidden, model.lm_head.weight, x[:, 1:].reshape(-1)), x[:, 1:].numel()


LOGIT_CHUNK_ELEMENTS = 1 << 23  # 32 MB of fp32 logits per chunk


def linear_cross_entropy(hidden, weight, targets):
    """``cross_entropy(hidden @ weight.T, targets, reduction="sum")`` computed a chunk of rows at a
    time, with the gradients made in the same pass (the idea of Liger-Kernel's fused linear
    cross-entropy). With a 65k vocabulary the logits of a 2k-token batch are 0.5 GB; writing and
    re-reading them is most of a tiny model's step on a CPU. tests/test_train.py checks it
    against the plain loss and its gradients."""
    import torch

    class _LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets):
            w = weight.to(hidden.dtype)
            grad_hidden = torch.empty_like(hidden)
            wide = torch.promote_types(hidden.dtype, torch.float32)  # bf16 logits are summed in fp32
            grad_weight = torch.zeros_like(weight, dtype=wide)
            total = torch.zeros((), dtype=wide, device=hidden.device)
            chunk = max(64, LOGIT_CHUNK_ELEMENTS // weight.shape[0])
            for start in range(0, hidden.shape[0], chunk):
                h, t = hidden[start:start + chunk], targets[start:start + chunk]
                logits = (h @ w.T).to(wide)
                log_norm = torch.logsumexp(logits, dim=-1)
                total += (log_norm - logits.gather(1, t[:, None]).squeeze(1)).sum()
                grad_logits = logits.sub_(log_norm[:, None]).exp_()  # softmax - one_hot(target)
                grad_logits[torch.arange(len(t), device=t.device), t] -= 1
                grad_logits = grad_logits.to(h.dtype)
                grad_hidden[start:start + chunk] = grad_logits @ w
                grad_weight += (grad_logits.T @ h).to(wide)
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
            return total

        @staticmethod
        def backward(ctx, grad_total):
            grad_hidden, grad_weight = ctx.saved_tensors
            return grad_hidden * grad_total.to(grad_hidden.dtype), grad_weight * grad_total, None

    return _LinearCrossEntropy.apply(hidden, weight, targets)


def window_bytes(windows: np.ndarray, tokenizer) -> np.ndarray:
    """UTF-8 bytes of each window's predicted tokens (all but the first): bits per byte's denominator."""
    return np.array([len(tokenizer.decode(row[1:].tolist(), skip_special_tokens=False).encode("utf-8"))
                     for row in windows], dtype=np.int64)


def evaluate(model, windows: np.ndarray, tokenizer, device, dtype, batch_size: int,
             byte_counts: np.ndarray | None = None) -> dict:
    """Bits per byte of the windows' predicted tokens, with the standard error over batches."""
    import torch

    if byte_counts is None:
        byte_counts = window_bytes(windows, tokenizer)
    model.eval()
    per_batch = []
    nats_total, bytes_total, tokens_total = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(windows), batch_size):
            batch = windows[start:start + batch_size]
            nats, tokens = window_loss(model, batch, device, dtype)
            text_bytes = int(byte_counts[start:start + batch_size].sum())
            per_batch.append(nats.item() / math.log(2) / max(text_bytes, 1))
            nats_total += nats.item()
            bytes_total += text_bytes
            tokens_total += tokens
    model.train()
    spread = float(np.std(per_batch, ddof=1) / math.sqrt(len(per_batch))) if len(per_batch) > 1 else 0.0
    return {"bits_per_byte": nats_total / math.log(2) / max(bytes_total, 1), "bpb_stderr": spread,
            "loss": nats_total / max(tokens_total, 1), "tokens": tokens_total, "bytes": bytes_total,
            "batches": len(per_batch)}


def evaluate_sets(model, sets: dict[str, np.ndarray], tokenizer, device, dtype, batch_size: int,
                  byte_counts: dict[str, np.ndarray]) -> dict:
    return {name: evaluate(model, windows, tokenizer, device, dtype, batch_size, byte_counts[name])
            for name, windows in sets.items()}


def build_optimizer(model, cfg: TrainSettings):
    """AdamW with weight decay on matrices only; the fused kernel where this build has it."""
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=True)


def train_step(model, optimizer, batches: list[np.ndarray], device, dtype, clip: float) -> float:
    """One optimiser step over ``batches`` (gradient accumulation); returns the mean train loss."""
    import torch

    loss_sum = 0.0
    for batch in batches:
        nats, tokens = train_loss(model, batch, device, dtype)
        (nats / tokens / len(batches)).backward()
        loss_sum += nats.item() / tokens / len(batches)
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


# --- the loop ------------------------------------------------------------------------------------

def train(spec: TrainSpec, out_dir: str, log=print) -> dict:
    import torch
    from tqdm import tqdm

    import tokenizer as tk

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = spec.train
    tokenizer = tk.load(spec.tokenizer)
    data = TokenWindows(spec.data, spec.model.seq_len, cfg.heldout_fraction)
    eval_sets = eval_windows(spec, data)
    eval_bytes = {name: window_bytes(windows, tokenizer) for name, windows in eval_sets.items()}
    device, dtype = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(spec.model, tokenizer.get_vocab_size()).to(device)
    optimizer = build_optimizer(model, cfg)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * spec.model.seq_len
    total_steps = max(1, cfg.tokens // tokens_per_step)
    rng = np.random.default_rng(cfg.seed)
    step, elapsed = 0, 0.0
    checkpoint = out / "checkpoint" / "state.pt"
    if checkpoint.exists():  # resume: model, optimiser, data order and clock
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        step, elapsed = state["step"], state["elapsed"]
        kept = [line for line in (out / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= step]
        (out / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))  # drop steps after the checkpoint
        log(f"train: resumed at step {step}")
    metrics = open(out / "metrics.jsonl", "a" if step else "w")
    progress = tqdm(total=total_steps, initial=step, desc=spec.name, unit="step", disable=None, leave=False)
    model.train()
    started = time.perf_counter() - elapsed
    while step < total_steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total_steps, cfg)
        batches = [data.train_batch(rng, cfg.batch_size) for _ in range(cfg.grad_accum)]
        loss_sum = train_step(model, optimizer, batches, device, dtype, cfg.clip)
        step += 1
        seconds = time.perf_counter() - started
        record = {"step": step, "tokens": step * tokens_per_step, "train_loss": loss_sum,
                  "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                  "tokens_per_s": round(step * tokens_per_step / seconds, 1)}
        if step % cfg.eval_every == 0 or step == total_steps:
            record["eval"] = evaluate_sets(model, eval_sets, tokenizer, device, dtype, cfg.batch_size, eval_bytes)
            bpb = " ".join(f"{name} {e['bits_per_byte']:.4f}" for name, e in record["eval"].items())
            log(f"step {step}/{total_steps} loss {loss_sum:.3f} bpb: {bpb} {record['tokens_per_s']:.0f} tok/s")
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        progress.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
        progress.update()
        if step % cfg.checkpoint_every == 0 and step < total_steps:
            checkpoint.parent.mkdir(exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "rng": rng.bit_generator.state, "elapsed": seconds}, checkpoint.with_suffix(".tmp"))
            checkpoint.with_suffix(".tmp").replace(checkpoint)
    metrics.close()
    progress.close()
    final = evaluate_sets(model, eval_sets, tokenizer, device, dtype, cfg.batch_size, eval_bytes)
    model_dir = out / "model"
    model.save_pretrained(model_dir)
    tk.save(tokenizer, model_dir)
    summary = {"name": spec.name, "steps": total_steps, "tokens": total_steps * tokens_per_step,
               "tokens_per_step": tokens_per_step, "final_train_loss": loss_sum if total_steps else None,
               "eval": final, "seconds": round(time.perf_counter() - started, 3), "device": str(device),
               "dtype": str(dtype).removeprefix("torch."), "parameters": sum(p.numel() for p in model.parameters()),
               "model_dir": str(model_dir),
               "eval_sets": {name: {"windows": int(len(w)), "data": spec.data if name == "heldout" else
                                    next(e.data for e in spec.eval if e.name == name)} for name, w in eval_sets.items()},
               "spec": spec.model_dump(),
               "vocab_size": tokenizer.get_vocab_size()}
    write_json_atomic(out / "train.json", summary)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    plot_metrics(records, out / "loss.png", spec.name)
    write_model_card(spec, summary, model_dir)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return summary


# --- reports -------------------------------------------------------------------------------------

def plot_metrics(records: list[dict], path: Path, title: str) -> None:
    """Train loss and held-out bits per byte against tokens seen, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.plot([r["tokens"] for r in records], [r["train_loss"] for r in records], lw=1)
    left.set(xlabel="tokens", ylabel="train loss (nats/token)", title=title)
    evals = [r for r in records if "eval" in r]
    for name in (evals[0]["eval"] if evals else {}):
        right.errorbar([r["tokens"] for r in evals], [r["eval"][name]["bits_per_byte"] for r in evals],
                       yerr=[r["eval"][name]["bpb_stderr"] for r in evals], marker="o", ms=3, capsize=2, label=name)
    right.set(xlabel="tokens", ylabel="held-out bits per byte", title="held-out sets")
    if evals:
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

    import tokenizer as tk

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
        f"tokens/s) on {summary['device']}; {summary['parameters']:,} parameters.", "",
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
