#!/usr/bin/env python
"""Trainer throughput: `refinery train`'s loop against a plain Hugging Face `Trainer`, same model,
same batch, same data, same device.

Both train the same tiny `FalconForCausalLM` (configs/train/tiny-falcon.yaml's size, or --layers,
--hidden-size, --heads, --seq-len) on random windows of a token folder (a mix run's
OUTPUT/tokens), with AdamW, the same learning-rate warmup and batch size, for --steps steps after
--warmup-steps untimed ones. Each engine runs in a fresh process. tokens/s counts the
`batch * seq_len` predicted tokens of the timed steps.

Usage:  .venv/bin/python benchmarks/train_throughput.py --data runs/falcon180b-mix/tokens \\
            --tokenizer runs/falcon180b-mix/tokenizer [--steps 20] [--json benchmarks/results/train.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child(engine: str, args) -> dict:
    import numpy as np
    import torch

    from refinery import tokenizer as tk
    from refinery.train import (ModelSettings, TokenWindows, TrainSettings, build_model, build_optimizer,
                                learning_rate, train_step)

    torch.manual_seed(1)
    settings = ModelSettings(layers=args.layers, hidden_size=args.hidden_size, heads=args.heads, seq_len=args.seq_len)
    model = build_model(settings, tk.load(args.tokenizer))
    windows = TokenWindows(args.data, args.seq_len, 0.05)
    rng = np.random.default_rng(1)
    total = args.warmup_steps + args.steps
    batches = [windows.train_batch(rng, args.batch_size) for _ in range(total)]
    cfg = TrainSettings(batch_size=args.batch_size)

    if engine == "refinery":  # the step refinery train runs
        optimizer = build_optimizer(model, cfg)
        model.train()
        for step, batch in enumerate(batches):
            if step == args.warmup_steps:
                started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, cfg)
            train_step(model, optimizer, [batch], torch.device("cpu"), torch.float32, cfg.clip)
        seconds = time.perf_counter() - started
    else:
        from transformers import Trainer, TrainerCallback, TrainingArguments

        class Windows(torch.utils.data.Dataset):
            def __len__(self):
                return total * args.batch_size

            def __getitem__(self, i):
                row = torch.as_tensor(batches[i // args.batch_size][i % args.batch_size])
                return {"input_ids": row[:-1], "labels": row[1:]}

        class Clock(TrainerCallback):
            started = None

            def on_step_begin(self, _args, state, control, **kwargs):
                if state.global_step == args.warmup_steps:
                    Clock.started = time.perf_counter()

        def loss_fn(outputs, labels, num_items_in_batch=None):  # next-token loss on pre-shifted labels
            logits = outputs.logits
            return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1))

        training = TrainingArguments(
            output_dir=os.path.join(args.out, "hf"), per_device_train_batch_size=args.batch_size, max_steps=total,
            learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, lr_scheduler_type="cosine", weight_decay=0.1,
            adam_beta2=0.95, max_grad_norm=cfg.clip, logging_strategy="no", save_strategy="no", report_to=[],
            use_cpu=True, dataloader_num_workers=0, seed=1, disable_tqdm=True)
        trainer = Trainer(model=model, args=training, train_dataset=Windows(), callbacks=[Clock()],
                          compute_loss_func=loss_fn)
        trainer.train()
        seconds = time.perf_counter() - Clock.started
    tokens = args.steps * args.batch_size * args.seq_len
    return {"engine": engine, "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "threads": torch.get_num_threads(), "parameters": sum(p.numel() for p in model.parameters())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default="/tmp/refinery-bench-train")
    parser.add_argument("--json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    runs: dict[str, list[dict]] = {"refinery": [], "hf-trainer": []}
    for round_ in range(args.repeat):
        for engine in (["refinery", "hf-trainer"] if round_ % 2 == 0 else ["hf-trainer", "refinery"]):
            cmd = [sys.executable, __file__, *sys.argv[1:], "--child", engine]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[engine].append(result)
            print(f"[{round_ + 1}/{args.repeat}] {engine:10s} {result['tokens_per_s']:8.0f} tokens/s", file=sys.stderr)
    best = {e: max(r["tokens_per_s"] for r in rs) for e, rs in runs.items()}
    print("| engine | tokens/s (best of runs) | runs | vs HF Trainer |")
    print("|---|---:|---|---:|")
    for engine, rs in runs.items():
        each = ", ".join(f"{r['tokens_per_s']:.0f}" for r in rs)
        print(f"| {engine} | {best[engine]:.0f} | {each} | {best[engine] / best['hf-trainer']:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]),
                                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
                                               "runs": runs, "best_tokens_per_s": best}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
