"""Per-document bits per byte of a trained model on an eval set's token files: the unit of the
paired comparisons (refinery/ablate/paired.py).

Each document's tokens (its end-of-text token left out) are cut into windows of ``seq_len + 1``
that overlap by one token, so every token after the first is predicted once, with at most
``seq_len`` tokens of context. A document is scored on its first ``max_tokens`` tokens, which
bounds the cost of long ones (a State of the Union address is ~13,000 tokens)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from refinery.engine.task import Result

IDX_HEADER_BYTES = 9 + 8 + 1 + 8 + 8  # magic, version, dtype code, document count, count + 1


def document_tokens(folder: str | Path) -> list[np.ndarray]:
    """Every document of a folder's Megatron token files, in file and index order."""
    from refinery.train.data import open_megatron

    documents = []
    for idx in sorted(Path(folder).glob("*.idx")):
        prefix = idx.with_suffix("")
        tokens = open_megatron(prefix)
        raw = idx.read_bytes()
        count = struct.unpack_from("<Q", raw, 18)[0]
        lengths = np.frombuffer(raw, dtype="<i4", count=count, offset=IDX_HEADER_BYTES).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        documents += [np.asarray(tokens[s:s + n]) for s, n in zip(starts, lengths)]
    return documents


@dataclass
class DocumentScores(Result):
    """Bits and bytes of each document of one eval set under one model (lists, for the marker)."""

    set: str
    bits: list = field(default_factory=list)
    bytes: list = field(default_factory=list)

    @property
    def bits_per_byte(self) -> np.ndarray:
        return np.asarray(self.bits) / np.maximum(np.asarray(self.bytes), 1)


def score_documents(model_dir: str, folder: str, set_name: str, seq_len: int, max_tokens: int,
                    batch_size: int = 16, eos_id: int = 11) -> DocumentScores:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    from refinery import tokenizer as tk

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    tokenizer = tk.load(Path(model_dir) / "tokenizer.json")
    def nats(batch: list[np.ndarray]) -> float:
        x = torch.as_tensor(np.stack(batch))
        logits = model(input_ids=x[:, :-1]).logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="sum").item()

    bits, sizes = [], []
    with torch.no_grad():
        for tokens in document_tokens(folder):
            tokens = tokens[:-1] if len(tokens) and tokens[-1] == eos_id else tokens
            tokens = np.asarray(tokens[:max_tokens + 1], dtype=np.int64)
            if len(tokens) < 2:
                continue
            windows = [tokens[s:s + seq_len + 1] for s in range(0, len(tokens) - 1, seq_len)]
            full = [w for w in windows if len(w) == seq_len + 1]
            total = sum(nats(full[start:start + batch_size]) for start in range(0, len(full), batch_size))
            total += sum(nats([w]) for w in windows if len(w) < seq_len + 1)  # the last, shorter one
            bits.append(total / math.log(2))
            sizes.append(len(tokenizer.decode(tokens[1:].tolist(), skip_special_tokens=False).encode("utf-8")))
    return DocumentScores(set=set_name, bits=bits, bytes=sizes)
