"""Paired statistics for an ablation: every model is scored on the same held-out documents, so two
variants are compared document by document (the difference of their bits per byte on each).

- ``paired_interval``: the mean paired difference and a seeded percentile bootstrap 95% interval
  over documents;
- ``sign_test``: the exact two-sided binomial p-value of how many documents favour each side;
- ``minimum_detectable_effect``: the smallest mean difference a two-sided 5% test detects with 80%
  power, from the paired standard error (documents) and the spread of the seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Z_95, Z_80 = 1.959963984540054, 0.8416212335729143  # two-sided 5% test, 80% power


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    spread: float = 0.0  # standard deviation of the bootstrap means

    def widened(self, extra_variance: float) -> Interval:
        """The same interval with another independent source of noise added (the seeds'): each
        side scaled by sqrt(1 + extra / bootstrap variance), so its shape is kept."""
        if extra_variance <= 0 or self.spread <= 0:
            return self
        scale = math.sqrt(1 + extra_variance / self.spread ** 2)
        return Interval(self.mean, self.mean - (self.mean - self.low) * scale,
                        self.mean + (self.high - self.mean) * scale, self.spread * scale)

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_interval(differences: np.ndarray, seed: int, resamples: int = 4000, level: float = 0.95) -> Interval:
    """Mean of ``differences`` and its percentile bootstrap interval (documents resampled with
    replacement, ``resamples`` times, from ``seed``)."""
    d = np.asarray(differences, dtype=np.float64)
    if len(d) == 0:
        return Interval(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(d.mean()), float(low), float(high), float(means.std(ddof=1)))


def sign_test(differences: np.ndarray) -> float:
    """Exact two-sided sign test: P(a split at least as uneven) under a fair coin; ties are left out."""
    d = np.asarray(differences, dtype=np.float64)
    positive, negative = int((d > 0).sum()), int((d < 0).sum())
    n = positive + negative
    if n == 0:
        return 1.0
    k = min(positive, negative)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def minimum_detectable_effect(document_sd: float, documents: int, seed_sd: float | None = None,
                              seeds: int = 1) -> float:
    """(z_0.975 + z_0.8) times the standard error of the mean paired difference: the documents'
    spread over their number, plus the seeds' spread over theirs when there are several."""
    variance = document_sd ** 2 / max(documents, 1)
    if seed_sd is not None and seeds > 1:
        variance += seed_sd ** 2 / seeds
    return (Z_95 + Z_80) * math.sqrt(variance)


def documents_needed(document_sd: float, effect: float) -> int | None:
    """Eval documents for the document term alone to detect ``effect`` at 80% power."""
    if effect == 0 or not math.isfinite(effect):
        return None
    return math.ceil(((Z_95 + Z_80) * document_sd / abs(effect)) ** 2)


def compare(a_scores: list[np.ndarray], b_scores: list[np.ndarray], seed: int) -> dict:
    """``a_scores`` and ``b_scores``: per seed, the bits per byte of each eval document under
    variant A's and B's model (the same documents in the same order). Positive differences mean A
    is worse (more bits). The interval is the bootstrap over documents of the seed-averaged
    differences, widened by the seeds' spread when there are several; the verdict follows it."""
    per_seed = [np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64) for a, b in zip(a_scores, b_scores)]
    mean_diff = np.mean(per_seed, axis=0)  # B - A per document: positive, A is better
    seed_means = [float(d.mean()) for d in per_seed]
    seed_sd = float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else None
    interval = paired_interval(mean_diff, seed).widened(seed_sd ** 2 / len(per_seed) if seed_sd else 0.0)
    document_sd = float(np.std(mean_diff, ddof=1)) if len(mean_diff) > 1 else math.nan
    mde = minimum_detectable_effect(document_sd, len(mean_diff), seed_sd, len(per_seed))
    if interval.low > 0:
        verdict = "A better"
    elif interval.high < 0:
        verdict = "B better"
    else:
        verdict = "no difference detected at this budget"
    return {"documents": len(mean_diff), "seeds": len(per_seed), "mean_difference": interval.mean, "ci_low": interval.low,
            "ci_high": interval.high, "sign_p": sign_test(mean_diff), "a_wins": int((mean_diff > 0).sum()),
            "b_wins": int((mean_diff < 0).sum()), "seed_means": seed_means, "seed_sd": seed_sd,
            "document_sd": document_sd, "mde": mde, "documents_needed": documents_needed(document_sd, interval.mean),
            "seeds_needed": documents_needed(seed_sd, interval.mean) if seed_sd else None,
            "verdict": verdict}
