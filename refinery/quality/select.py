"""The corpus-wide cut-off of a selection, found by radix select over per-shard histograms.

Each document kept by dedup gets a 128-bit rank key: 64 bits of its value (a float64 mapped to an
unsigned integer in the same order) and 64 bits of a hash of its id and text, which break ties
the same way however the corpus is sharded (two documents with the same id, text and score, which
exact dedup would have merged, rank as one: both are kept or both dropped). Eight rounds each fix 16 more bits of the key of the
last document kept: every shard counts, per 16-bit bin, the weight of its keys that share the bits
fixed so far, and the driver sums the histograms and walks down from the top. Each shard sends
65,536 counts a round and nothing else, so no process holds all the scores, and the result is
exact: the documents at or above the cut-off hold ``target`` weight, or (weights other than 1) the
least more than it, that is, within one document.

With several scores, each is first mapped to its corpus-wide percentile (the middle of its bin in
a 65,536-bin histogram of its float32 bits) and the value is their mean (Nemotron-CC's ensembles
work on ranks too)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

BIN_BITS = 16
BINS = 1 << BIN_BITS
ROUNDS = 128 // BIN_BITS


def order_bits(values: np.ndarray) -> np.ndarray:
    """float64 -> uint64 in the same order (NaN as the lowest value)."""
    values = np.where(np.isnan(values), -np.inf, np.asarray(values, dtype=np.float64)) + 0.0  # -0.0 -> 0.0
    bits = values.view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint64(1 << 63))


def value_of(bits: int) -> float:
    """The float64 whose order_bits are ``bits`` (the inverse of :func:`order_bits`)."""
    raw = bits ^ (1 << 63) if bits >> 63 else ~bits & ((1 << 64) - 1)
    return float(np.array([raw], dtype=np.uint64).view(np.float64)[0])


def order_bits32(values: np.ndarray) -> np.ndarray:
    values = np.where(np.isnan(values), -np.inf, values).astype(np.float32) + np.float32(0.0)
    bits = values.view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    return np.where(negative, ~bits, bits | np.uint32(1 << 31))


def tie_bits(docs) -> np.ndarray:
    """A 64-bit hash of each document's id and text: equal scores are ordered the same way however
    the corpus is cut into shards (the internal key names the shard, so it would not be)."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{d.id}\x00{d.text}".encode("utf-8", "surrogatepass"),
                                                    digest_size=8).digest(), "little") for d in docs], dtype=np.uint64)


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The percentile-histogram bin of each score: the top 16 of its float32 order bits."""
    return (order_bits32(scores) >> np.uint32(32 - BIN_BITS)).astype(np.int64)


def combined_values(scores: np.ndarray, percentiles: np.ndarray | None) -> np.ndarray:
    """The value ranked: the one score, or the mean of each score's corpus-wide percentile.
    ``scores`` has one column per score; ``percentiles`` one row of BINS mid-ranks per score."""
    if scores.shape[1] == 1 or percentiles is None:
        return scores[:, 0]
    return np.mean([percentiles[j][score_bins(scores[:, j])] for j in range(scores.shape[1])], axis=0)


def percentile_table(histograms: np.ndarray) -> np.ndarray:
    """Per score, each bin's mid-rank as a share of the documents: (below + half of it) / all."""
    counts = histograms.astype(np.float64)
    below = np.cumsum(counts, axis=1) - counts
    total = np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    return (below + counts / 2.0) / total


def round_bins(hi: np.ndarray, lo: np.ndarray, round_: int) -> np.ndarray:
    """The 16 bits of each 128-bit key (hi, lo) that round ``round_`` decides."""
    word, shift = (hi, 48 - BIN_BITS * round_) if round_ < 4 else (lo, 48 - BIN_BITS * (round_ - 4))
    return ((word >> np.uint64(shift)) & np.uint64(BINS - 1)).astype(np.int64)


def matches_prefix(hi: np.ndarray, lo: np.ndarray, prefix: list[int]) -> np.ndarray:
    """Which keys carry the bins decided so far."""
    mask = np.ones(len(hi), dtype=bool)
    for round_, value in enumerate(prefix):
        mask &= round_bins(hi, lo, round_) == value
    return mask


def histogram(hi: np.ndarray, lo: np.ndarray, weights: np.ndarray, prefix: list[int]) -> np.ndarray:
    """Weight per bin of the next round, over the keys that share ``prefix``."""
    mask = matches_prefix(hi, lo, prefix)
    return np.bincount(round_bins(hi[mask], lo[mask], len(prefix)), weights=weights[mask].astype(np.float64),
                       minlength=BINS).astype(np.int64)


def choose_bin(counts: np.ndarray, above: int, target: int) -> tuple[int, int]:
    """Walking down from the top bin: the bin where the weight kept reaches ``target``, and the
    weight strictly above that bin (including ``above``, the weight above this prefix)."""
    from_top = np.cumsum(counts[::-1])
    index = int(np.searchsorted(from_top, target - above, side="left"))
    index = min(index, BINS - 1)
    chosen = BINS - 1 - index
    return chosen, above + int(from_top[index] - counts[chosen])


@dataclass
class Cutoff:
    """The rank key of the last document kept (keep every key >= it), and what it keeps."""

    hi: int
    lo: int
    target: int
    total: int
    percentiles: np.ndarray | None = None  # several scores: each one's mid-rank table (combined_values)

    def keeps(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        return (hi > np.uint64(self.hi)) | ((hi == np.uint64(self.hi)) & (lo >= np.uint64(self.lo)))


def target_weight(total: int, keep_percent: float) -> int:
    """How much of ``total`` to keep: at least one unit of anything non-empty."""
    return min(total, max(1 if total else 0, int(round(total * keep_percent / 100.0))))


def key_from_bins(bins: list[int]) -> tuple[int, int]:
    hi = lo = 0
    for round_, value in enumerate(bins):
        if round_ < 4:
            hi |= value << (48 - BIN_BITS * round_)
        else:
            lo |= value << (48 - BIN_BITS * (round_ - 4))
    return hi, lo
