"""The mix plan, made on the driver from per-shard totals only: each source gets ``share * budget``
tokens: whole epochs, then the documents whose seeded key is below a threshold, found from a
token-weighted histogram of the keys. The budget is ``total_tokens``, or the most that every
source can give within its ``max_epochs``."""

from __future__ import annotations

import hashlib

import numpy as np

from refinery.config import ConfigError
from refinery.mix.spec import MixSpec

KEY_BINS = 4096


def doc_key(seed: int, doc_id: str, repetition: int = -1) -> float:
    """A deterministic uniform number in [0, 1) for a document (and a repetition of it)."""
    digest = hashlib.blake2b(f"{seed}:{repetition}:{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def key_histogram(keys: np.ndarray, lengths: np.ndarray) -> list[int]:
    """Tokens per key bin: what the threshold of a partial epoch is found from."""
    histogram, _ = np.histogram(keys, bins=KEY_BINS, range=(0.0, 1.0), weights=lengths)
    return histogram.astype(np.int64).tolist()


def key_threshold(histogram: np.ndarray, remainder: float) -> float:
    """The key below which the documents hold about ``remainder`` tokens (a bin edge)."""
    if remainder <= 0:
        return 0.0
    cumulative = np.cumsum(histogram)
    bins = int(np.searchsorted(cumulative, remainder, side="left"))
    threshold = min(bins + 1, KEY_BINS) / KEY_BINS
    if bins > 0 and abs(cumulative[bins - 1] - remainder) < abs(cumulative[min(bins, KEY_BINS - 1)] - remainder):
        threshold = bins / KEY_BINS  # the bin edge below is closer to the target
    return threshold


def plan_mix(spec: MixSpec, shard_results: list) -> dict:
    """Per source: target tokens, whole epochs and the key threshold of the partial epoch.
    ``shard_results`` are the tokenized shards (:class:`refinery.mix.tokenize.ShardTokens`)."""
    available = {s.name: 0 for s in spec.sources}
    histogram = {s.name: np.zeros(KEY_BINS, dtype=np.int64) for s in spec.sources}
    for r in shard_results:
        available[r.source] += r.tokens
        histogram[r.source] += np.asarray(r.key_histogram, dtype=np.int64)
    shares = spec.mix.shares
    empty = [name for name in shares if not available[name]]
    if empty and not spec.mix.allow_short:
        raise ConfigError("mix.shares", f"{empty[0]} has no documents, so its {shares[empty[0]]:.1%} share cannot be "
                                        "met (drop the source, or set mix.allow_short: true)")
    limits = {s.name: available[s.name] * s.max_epochs for s in spec.sources}
    if spec.mix.total_tokens:
        budget = spec.mix.total_tokens
    else:  # the most every source can give: the scarcest one, relative to its share, sets it
        budget = min(limits[name] / shares[name] for name in shares if available[name]) if len(empty) < len(shares) else 0
    plan, short = {}, []
    for source in spec.sources:
        name = source.name
        target = shares[name] * budget
        give = min(target, limits[name])
        if give < target * (1 - 1e-9):
            short.append(f"{name} has {available[name]:,} tokens x max_epochs {source.max_epochs:g} = "
                         f"{int(limits[name]):,}, short of its target {int(target):,}")
        epochs = int(give // available[name]) if available[name] else 0
        threshold = key_threshold(histogram[name], give - epochs * available[name])
        plan[name] = {"target_share": shares[name], "available_tokens": available[name], "target_tokens": int(target),
                      "epochs": epochs, "partial_key_threshold": threshold, "max_epochs": source.max_epochs}
    if short and not spec.mix.allow_short:
        raise ConfigError("mix.total_tokens", f"{int(budget):,} cannot be met: {short[0]} (raise its max_epochs, "
                                              "lower total_tokens, or set mix.allow_short: true)")
    return {"budget_tokens": int(budget), "sources": plan, "short": short}
