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
from refinery.train.spec import (TrainSettings, TrainSpec, check_trajectory, eval_plan, load_checkpoint, sets_due,
                                 trajectory)


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


PROGRESS_EVERY = 10.0  # seconds between plain progress lines when stderr is not a terminal


def train(spec: TrainSpec, out_dir: str, log=print, fresh: bool = False) -> dict:
    """Trains ``spec`` into ``out_dir``; resumes from ``OUT/checkpoint/state.pt`` when its settings
    match (else exit 2 naming the keys), or starts at step 0 with ``fresh`` (``--force``)."""
    import torch
    from tqdm import tqdm

    from refinery import tokenizer as tk

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = spec.train
    checkpoint = out / "checkpoint" / "state.pt"
    if fresh:
        remove_own(checkpoint.parent)
    device, dtype = pick_device(cfg.device)
    path = trajectory(spec, device.type)
    state = None
    if checkpoint.exists():  # checked first: a refused resume reads no data and writes nothing
        state = load_checkpoint(checkpoint)  # weights_only: a planted pickle never runs
        check_trajectory(state.get("trajectory"), path, checkpoint)
    tokenizer = tk.load(spec.tokenizer)
    data = TokenWindows(spec.data, spec.model.seq_len, cfg.heldout_fraction)
    plan = eval_plan(spec)
    eval_sets = eval_windows(spec, data)
    eval_bytes = {name: window_bytes(windows, tokenizer) for name, windows in eval_sets.items()}
    torch.manual_seed(cfg.seed)
    model = build_model(spec.model, tokenizer).to(device)
    optimizer = build_optimizer(model, cfg)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * spec.model.seq_len
    total_steps = max(1, cfg.tokens // tokens_per_step)
    rng = np.random.default_rng(cfg.seed)
    step, elapsed, clock = 0, 0.0, {"train": 0.0, "eval": 0.0}
    partial = checkpoint.with_name(checkpoint.name + temporary_suffix())
    if state is not None:  # resume: model, optimiser, data order and clocks
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        step, elapsed = state["step"], state["elapsed"]
        clock = {"train": state.get("train_seconds", 0.0), "eval": state.get("eval_seconds", 0.0)}
        kept = [line for line in (out / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= step]
        (out / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))  # drop steps after the checkpoint
    parameters = sum(p.numel() for p in model.parameters())
    log(f"train: {spec.name}: {parameters:,} parameters, {total_steps:,} steps x {tokens_per_step:,} tokens = "
        f"{total_steps * tokens_per_step:,} tokens, on {device} ({str(dtype).removeprefix('torch.')})"
        + (f", resumed at step {step}" if step else ""))
    metrics = open(out / "metrics.jsonl", "a" if step else "w")
    progress = tqdm(total=total_steps, initial=step, desc=spec.name, unit="step", disable=None, leave=False)
    model.train()
    started = time.perf_counter() - elapsed
    first_step, session, shown = step, time.perf_counter(), time.perf_counter()
    final = None
    while step < total_steps:
        tick = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total_steps, cfg)
        batches = [data.train_batch(rng, cfg.batch_size) for _ in range(cfg.grad_accum)]
        loss_sum = train_step(model, optimizer, batches, device, dtype, cfg.clip)
        step += 1
        seconds = time.perf_counter() - started
        clock["train"] += time.perf_counter() - tick
        record = {"step": step, "tokens": step * tokens_per_step, "train_loss": loss_sum,
                  "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                  "tokens_per_s": round(step * tokens_per_step / seconds, 1)}
        due = sets_due(plan, step, total_steps)
        if due:
            tick = time.perf_counter()
            record["eval"] = evaluate_sets(model, {name: eval_sets[name] for name in due}, tokenizer, device, dtype,
                                           cfg.batch_size, eval_bytes)
            clock["eval"] += time.perf_counter() - tick
            bpb = " ".join(f"{name} {e['bits_per_byte']:.4f}" for name, e in record["eval"].items())
            log(f"step {step}/{total_steps} loss {loss_sum:.3f} bpb: {bpb} {record['tokens_per_s']:.0f} tok/s")
            if step == total_steps:
                final = record["eval"]
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()
        progress.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
        progress.update()
        now = time.perf_counter()
        if progress.disable and now - shown >= PROGRESS_EVERY and step < total_steps:  # nohup, CI: plain lines
            shown, rate = now, (step - first_step) / (now - session)
            log(f"step {step}/{total_steps} loss {loss_sum:.3f} {rate:.2f} steps/s {rate * tokens_per_step:,.0f} "
                f"tokens/s ETA {_duration((total_steps - step) / rate)}")
        if step % cfg.checkpoint_every == 0 and step < total_steps:
            checkpoint.parent.mkdir(exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "rng": rng.bit_generator.state, "elapsed": seconds, "trajectory": path,
                        "train_seconds": clock["train"], "eval_seconds": clock["eval"]}, partial)
            partial.replace(checkpoint)
    metrics.close()
    progress.close()
    if final is None:  # the loop ran no step (a checkpoint at the last step): evaluate here
        tick = time.perf_counter()
        final = evaluate_sets(model, eval_sets, tokenizer, device, dtype, cfg.batch_size, eval_bytes)
        clock["eval"] += time.perf_counter() - tick
    model_dir = out / "model"
    model.save_pretrained(model_dir)
    tk.save(tokenizer, model_dir)
    summary = {"name": spec.name, "steps": total_steps, "tokens": total_steps * tokens_per_step,
               "tokens_per_step": tokens_per_step, "final_train_loss": loss_sum if step > first_step else None,
               "eval": final, "seconds": round(time.perf_counter() - started, 3), "device": str(device),
               "dtype": str(dtype).removeprefix("torch."), "parameters": parameters,
               "train_seconds": round(clock["train"], 3), "eval_seconds": round(clock["eval"], 3),
               "eval_share": _share(round(clock["eval"], 3), round(clock["train"], 3)),
               "model_dir": str(model_dir),
               "eval_sets": {name: {"windows": int(len(w)), "every": plan[name][0],
                                    "data": spec.data if name == "heldout" else
                                    next(e.data for e in spec.eval if e.name == name)} for name, w in eval_sets.items()},
               "spec": spec.model_dump(),
               "vocab_size": tokenizer.get_vocab_size()}
    write_json_atomic(out / "train.json", summary)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    plot_metrics(records, out / "loss.png", spec.name)
    write_model_card(spec, summary, model_dir)
    remove_own(out / "checkpoint")
    return summary


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _share(eval_seconds: float, train_seconds: float) -> float:
    """Evaluation's part of the time (from the rounded figures train.json shows, so they agree)."""
    return round(eval_seconds / max(eval_seconds + train_seconds, 1e-9), 4)
