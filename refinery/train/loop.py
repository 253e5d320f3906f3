"""The training loop: optimiser, learning-rate schedule, device, one step, and `train`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from refinery.engine.output import remove_own
from refinery.io import temporary_suffix, write_json_atomic
from refinery.train.card import plot_metrics, write_model_card
from refinery.train.data import TokenWindows, eval_windows, window_bytes
from refinery.train.loss import build_model, evaluate_sets, train_loss
from refinery.train.spec import TrainSettings, TrainSpec, load_checkpoint


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


def train(spec: TrainSpec, out_dir: str, log=print) -> dict:
    import torch
    from tqdm import tqdm

    from refinery import tokenizer as tk

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = spec.train
    tokenizer = tk.load(spec.tokenizer)
    data = TokenWindows(spec.data, spec.model.seq_len, cfg.heldout_fraction)
    eval_sets = eval_windows(spec, data)
    eval_bytes = {name: window_bytes(windows, tokenizer) for name, windows in eval_sets.items()}
    device, dtype = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(spec.model, tokenizer).to(device)
    optimizer = build_optimizer(model, cfg)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * spec.model.seq_len
    total_steps = max(1, cfg.tokens // tokens_per_step)
    rng = np.random.default_rng(cfg.seed)
    step, elapsed = 0, 0.0
    checkpoint = out / "checkpoint" / "state.pt"
    partial = checkpoint.with_name(checkpoint.name + temporary_suffix())
    if checkpoint.exists():  # resume: model, optimiser, data order and clock
        state = load_checkpoint(checkpoint)  # weights_only: a planted pickle never runs
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
                        "rng": rng.bit_generator.state, "elapsed": seconds}, partial)
            partial.replace(checkpoint)
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
    remove_own(out / "checkpoint")
    return summary
