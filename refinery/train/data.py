"""Token data: Megatron ``.bin``/``.idx`` files memory-mapped, train windows and fixed held-out windows."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from refinery.tokens import MEGATRON_HEADER
from refinery.train.spec import TrainSpec, eval_plan


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
    """Each held-out set's fixed windows (its ``batches`` times ``batch_size``): ``heldout`` (the
    data's tail), then the ``eval`` folders."""
    plan = eval_plan(spec)
    sets = {"heldout": data.heldout_windows(plan["heldout"][1] * spec.train.batch_size)} if "heldout" in plan else {}
    for eval_set in spec.eval:
        files = open_token_folder(eval_set.data)
        count = plan[eval_set.name][1] * spec.train.batch_size
        sets[eval_set.name] = fixed_windows(files, [0] * len(files), spec.model.seq_len, count)
    return sets


def window_bytes(windows: np.ndarray, tokenizer) -> np.ndarray:
    """UTF-8 bytes of each window's predicted tokens (all but the first): bits per byte's denominator."""
    return np.array([len(tokenizer.decode(row[1:].tolist(), skip_special_tokens=False).encode("utf-8"))
                     for row in windows], dtype=np.int64)
