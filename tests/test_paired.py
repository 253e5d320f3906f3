"""Paired statistics of an ablation, on synthetic per-document scores with a known difference."""

from __future__ import annotations

import math

import numpy as np

from refinery.ablate.paired import compare, minimum_detectable_effect, paired_interval, sign_test


def test_the_bootstrap_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    true_difference, repeats, covered = 0.03, 300, 0
    for repeat in range(repeats):
        differences = true_difference + rng.standard_t(df=5, size=60) * 0.05  # heavy tails, like documents
        interval = paired_interval(differences, seed=repeat, resamples=2000)
        covered += interval.low <= true_difference <= interval.high
    # 95% nominal; a percentile bootstrap of 60 points runs a little narrow. Binomial error of 300
    # repeats at p = 0.95: sd 1.26 points, so 3 sd either side is 91.2% .. 98.8% (minus the bootstrap's own
    # small-sample shortfall of about 1 point)
    assert 0.90 <= covered / repeats <= 0.99, covered / repeats


def test_the_sign_test_is_exact_on_small_cases():
    assert sign_test(np.array([1.0, 1.0, 1.0])) == 0.25  # 2 x (1/8)
    assert sign_test(np.array([1.0, -1.0])) == 1.0
    assert sign_test(np.array([0.0, 0.0])) == 1.0  # ties are left out
    assert sign_test(np.array([1, 1, 1, 1, 1, -1, 0], dtype=float)) == 2 * (1 + 6) / 64  # n = 6, k = 1
    for n in range(1, 13):
        for k in range(n + 1):
            d = np.array([1.0] * k + [-1.0] * (n - k))
            expected = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n)
            assert sign_test(d) == expected
            # against the binomial distribution summed term by term from its probabilities
            probabilities = [math.comb(n, i) / 2 ** n for i in range(n + 1)]
            as_uneven = sum(p for i, p in enumerate(probabilities) if p <= probabilities[k] * (1 + 1e-12))
            assert abs(sign_test(d) - min(1.0, as_uneven)) < 1e-12


def test_compare_gives_a_verdict_only_outside_noise_and_is_deterministic():
    rng = np.random.default_rng(3)
    base = rng.normal(2.0, 0.3, size=80)
    better = [base + rng.normal(0, 0.01, 80) for _ in range(2)]
    worse = [base + 0.05 + rng.normal(0, 0.01, 80) for _ in range(2)]
    result = compare(better, worse, seed=1)
    assert result["verdict"] == "A better" and result["ci_low"] > 0 and result["sign_p"] < 1e-6
    assert result == compare(better, worse, seed=1)
    same = compare(better, [b + rng.normal(0, 0.01, 80) for b in better], seed=1)
    assert same["verdict"] == "no difference detected at this budget"
    assert compare(worse, better, seed=1)["verdict"] == "B better"


def test_the_minimum_detectable_effect_is_what_80_percent_power_needs():
    # with the documents' spread alone: 2.8 standard errors
    assert abs(minimum_detectable_effect(0.1, 100) - 2.8016 * 0.01) < 1e-4
    # a simulated check: an effect of that size is detected about 80% of the time
    rng = np.random.default_rng(9)
    mde, hits = minimum_detectable_effect(0.1, 100), 0
    for repeat in range(300):
        d = mde + rng.normal(0, 0.1, 100)
        interval = paired_interval(d, seed=repeat, resamples=1000)
        hits += interval.excludes_zero
    assert 0.70 <= hits / 300 <= 0.90
