"""The model and its losses: the Falcon, the fused training loss and bits-per-byte evaluation."""

from __future__ import annotations

import math

import numpy as np

from refinery.train.data import window_bytes
from refinery.train.spec import ModelSettings


def build_model(settings: ModelSettings, tokenizer):
    """A tiny Falcon sized to ``tokenizer``'s vocabulary, whose end-of-text id it takes."""
    from transformers import FalconConfig, FalconForCausalLM

    from refinery import tokenizer as tk

    end = tk.eos_id(tokenizer)
    config = FalconConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=settings.hidden_size, num_hidden_layers=settings.layers,
        num_attention_heads=settings.heads, multi_query=True, parallel_attn=True, bias=False, alibi=False,
        new_decoder_architecture=False, max_position_embeddings=settings.seq_len, bos_token_id=end, eos_token_id=end,
    )
    return FalconForCausalLM(config)

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
