"""Tests for refinery.minhash: normalisation, determinism, shapes, accuracy, and ground truth."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from refinery.minhash import (
    MinHasher,
    band_keys_reference,
    normalize,
    shingle_hashes_reference,
    shingles,
    signatures_reference,
)
from support import REPO, shared_path

SAMPLE = [
    "The quick brown fox jumps over the lazy dog, again and again.",
    "Café résumé naïve — ÉCOLE Ångström!  Tabs\tand\nnewlines.",
    "",
    "two words",
    "日本語のテキスト 漢字 かな カナ と English mixed together here",
]


# --- normalisation and shingles --------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Hello, World!", "hello world"),
    ("  many   spaces\t\tand\nlines  ", "many spaces and lines"),
    ("Café résumé naïve", "cafe resume naive"),
    ("ÉCOLE Ångström", "ecole angstrom"),
    ("don't stop-believing", "dont stopbelieving"),
    ("snake_case & $100 + 5%", "snakecase 100 5"),
    ("", ""),
    ("...!!!", ""),
])
def test_normalize_examples(text, expected):
    assert normalize(text) == expected


def test_shingles_word_5grams():
    assert shingles("A b c d e f") == ["a b c d e", "b c d e f"]
    assert shingles("a b c", n=2) == ["a b", "b c"]


def test_short_and_empty_docs_are_one_shingle():
    assert shingles("Just four words here") == ["just four words here"]
    assert shingles("") == [""]
    assert len(shingle_hashes_reference("")) == 1
    mh = MinHasher(num_perm=40, bands=4, rows=10)
    sig = mh.signatures(["", "   ", "Just four words here", "just FOUR words, here!"])
    assert (sig[0] == sig[1]).all()       # both normalise to the empty document
    assert (sig[2] == sig[3]).all()       # same words after normalisation
    assert not (sig[0] == sig[2]).all()


# --- shapes and validation -------------------------------------------------------------------

def test_shapes_and_dtypes():
    mh = MinHasher()
    sig = mh.signatures(SAMPLE)
    assert sig.shape == (len(SAMPLE), 9000) and sig.dtype == np.uint32
    keys = mh.band_keys(sig)
    assert keys.shape == (len(SAMPLE), 450) and keys.dtype == np.uint64
    assert mh.signatures([]).shape == (0, 9000)
    assert mh.band_keys(mh.signatures([])).shape == (0, 450)


@pytest.mark.parametrize("kwargs", [
    dict(num_perm=9000, bands=450, rows=21),
    dict(num_perm=100, bands=10, rows=11),
    dict(num_perm=0, bands=0, rows=20),
    dict(num_perm=100, bands=10, rows=10, ngram=0),
])
def test_bad_shape_rejected(kwargs):
    with pytest.raises(ValueError):
        MinHasher(**kwargs)


def test_band_keys_rejects_wrong_input():
    mh = MinHasher(num_perm=40, bands=4, rows=10)
    with pytest.raises(ValueError):
        mh.band_keys(np.zeros((2, 41), dtype=np.uint32))
    with pytest.raises(ValueError):
        mh.band_keys(np.zeros((2, 40), dtype=np.uint64))


# --- the kernel against the pure-numpy reference ---------------------------------------------

def test_kernel_matches_reference():
    mh = MinHasher(num_perm=600, bands=30, rows=20, seed=7)
    texts = SAMPLE + [" ".join(f"w{i % 37}" for i in range(300))]
    sig = mh.signatures(texts)
    assert (sig == signatures_reference(texts, mh.a, mh.b)).all()
    assert (mh.band_keys(sig) == band_keys_reference(sig, 30, 20)).all()


def test_seed_and_ngram_change_output():
    a = MinHasher(num_perm=100, bands=10, rows=10, seed=1).signatures(SAMPLE[:1])
    b = MinHasher(num_perm=100, bands=10, rows=10, seed=2).signatures(SAMPLE[:1])
    c = MinHasher(num_perm=100, bands=10, rows=10, seed=1, ngram=3).signatures(SAMPLE[:1])
    assert not (a == b).all() and not (a == c).all()


def test_band_keys_differ_between_bands_with_equal_rows():
    mh = MinHasher(num_perm=40, bands=4, rows=10)
    keys = mh.band_keys(np.zeros((1, 40), dtype=np.uint32))
    assert len(set(keys[0].tolist())) == 4


# --- determinism across processes ------------------------------------------------------------

_CHILD = """
import sys, hashlib
from refinery.minhash import MinHasher
texts = {texts!r}
mh = MinHasher(seed=123)
sig = mh.signatures(texts)
print(hashlib.sha256(sig.tobytes()).hexdigest(), hashlib.sha256(mh.band_keys(sig).tobytes()).hexdigest())
"""


def test_deterministic_across_processes():
    code = _CHILD.format(texts=SAMPLE)
    outs = []
    for hashseed in ("1", "2"):  # different PYTHONHASHSEED: Python's hash() must play no part
        env = {"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"}
        res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                             capture_output=True, text=True, check=True, timeout=300)
        outs.append(res.stdout.strip())
    mh = MinHasher(seed=123)
    sig = mh.signatures(SAMPLE)
    import hashlib
    here = f"{hashlib.sha256(sig.tobytes()).hexdigest()} {hashlib.sha256(mh.band_keys(sig).tobytes()).hexdigest()}"
    assert outs[0] == outs[1] == here


# --- accuracy of the Jaccard estimate --------------------------------------------------------

def _true_jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = set(shingles(a, n)), set(shingles(b, n))
    return len(sa & sb) / len(sa | sb)


def _pairs(seed: int = 0):
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    pairs = []
    for frac in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.97, 1.0):
        base = [rng.choice(vocab) for _ in range(400)]
        other = [rng.choice(vocab) if rng.random() < frac / 5 else w for w in base]  # ~frac of 5-grams touched
        if frac == 0.0:
            other = [rng.choice(vocab) for _ in range(400)]
        pairs.append((" ".join(base), " ".join(other)))
    return pairs


def test_jaccard_estimate_accuracy():
    mh = MinHasher()
    for a, b in _pairs():
        true = _true_jaccard(a, b)
        sig = mh.signatures([a, b])
        est = MinHasher.jaccard(sig[0], sig[1])
        sd = max((true * (1 - true) / mh.num_perm) ** 0.5, 1e-4)
        assert abs(est - true) <= 5 * sd + 1e-3, (true, est)


def test_jaccard_agrees_with_datasketch():
    datasketch = pytest.importorskip("datasketch")
    mh = MinHasher(num_perm=1024, bands=64, rows=16)
    for a, b in _pairs(1)[::2]:
        true = _true_jaccard(a, b)
        sig = mh.signatures([a, b])
        ours = MinHasher.jaccard(sig[0], sig[1])
        m1, m2 = datasketch.MinHash(num_perm=1024, seed=1), datasketch.MinHash(num_perm=1024, seed=1)
        m1.update_batch([s.encode() for s in set(shingles(a))])
        m2.update_batch([s.encode() for s in set(shingles(b))])
        theirs = m1.jaccard(m2)
        tol = 5 * max((true * (1 - true) / 1024) ** 0.5, 1e-3)
        assert abs(ours - true) <= tol and abs(theirs - true) <= tol
        assert abs(ours - theirs) <= 2 * tol


def test_estimates_are_unbiased_over_many_pairs():
    """Mean error over many pairs near J=0.5 is ~0: the permutations are not correlated."""
    rng = random.Random(3)
    mh = MinHasher(num_perm=2000, bands=100, rows=20)
    errs = []
    for _ in range(30):
        base = [f"t{rng.randrange(10**6)}" for _ in range(200)]
        other = base[:100] + [f"u{rng.randrange(10**6)}" for _ in range(100)]
        a, b = " ".join(base), " ".join(other)
        sig = mh.signatures([a, b])
        errs.append(MinHasher.jaccard(sig[0], sig[1]) - _true_jaccard(a, b))
    errs = np.array(errs)
    assert abs(errs.mean()) < 3 * 0.0112 / 30 ** 0.5 + 1e-3  # sd of one estimate ~ sqrt(.25/2000)
    assert errs.std() < 2 * 0.0112


# --- ground truth: planted near-duplicates ---------------------------------------------------

def _read_articles(path):
    ids, texts = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc_id, _, text = line.partition(" ")
            ids.append(doc_id)
            texts.append(text)
    return ids, texts


@pytest.mark.shared
@pytest.mark.parametrize("size", [1000, 2500])
def test_ground_truth_articles(size):
    train = shared_path("dedup", "minhash-articles", f"articles_{size}.train")
    truth_path = shared_path("dedup", "minhash-articles", f"articles_{size}.truth")
    ids, texts = _read_articles(train)
    index = {doc_id: i for i, doc_id in enumerate(ids)}
    truth = set()
    for line in truth_path.read_text().splitlines():
        if line.strip():
            x, y = line.split()
            truth.add(tuple(sorted((index[x], index[y]))))

    mh = MinHasher()
    keys = mh.band_keys(mh.signatures(texts))
    buckets = defaultdict(list)
    for d in range(keys.shape[0]):
        for band, key in enumerate(keys[d].tolist()):
            buckets[(band, key)].append(d)
    candidates = set()
    for docs in buckets.values():
        if len(docs) > 1:
            candidates.update(itertools.combinations(sorted(docs), 2))

    shingle_sets = [set(shingles(t)) for t in texts]
    def jac(i, j):
        return len(shingle_sets[i] & shingle_sets[j]) / len(shingle_sets[i] | shingle_sets[j])
    false = [p for p in candidates if jac(*p) < 0.5]
    found = truth & candidates
    recall = len(found) / len(truth)
    precision = len(truth & candidates) / len(candidates) if candidates else 1.0
    print(f"\narticles_{size}: {len(texts)} docs, {len(truth)} planted pairs, {len(candidates)} candidates, "
          f"recall {recall:.3f}, precision vs planted {precision:.3f}, "
          f"false (J<0.5) {len(false)} = {len(false) / max(len(candidates), 1):.3%}")
    assert recall == 1.0, sorted(truth - candidates)
    assert len(false) <= 0.01 * len(candidates)
