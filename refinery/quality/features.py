"""What a fastText quality model learned: the weight of each word bigram toward the positive label.

fastText keeps no bigram strings: a bigram is a row of the input matrix, found by hashing its two
words (FNV-1a over bytes read as signed chars, combined with 116049371, modulo ``bucket``, after
the vocabulary). A document's logits are the output matrix times the mean of its rows, so a row's
contribution to (positive - negative) is its dot product with the difference of the two output
rows. ``tests/test_quality.py`` checks the hashing against ``get_sentence_vector``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

MASK64 = (1 << 64) - 1


def word_hash(word: str) -> int:
    """fastText's Dictionary::hash: 32-bit FNV-1a over the UTF-8 bytes taken as signed chars."""
    h = 2166136261
    for byte in word.encode("utf-8"):
        h ^= (byte - 256 if byte > 127 else byte) & 0xFFFFFFFF
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def _signed64(h32: int) -> int:
    return (h32 - (1 << 32) if h32 >= 1 << 31 else h32) & MASK64  # int32 -> uint64, sign-extended


def ngram_rows(words: list[str], n: int, nwords: int, bucket: int) -> list[int]:
    """The input-matrix rows of the word n-grams (2..n) of ``words``, in fastText's order."""
    hashes = [_signed64(word_hash(w)) for w in words]
    rows = []
    for i in range(len(hashes)):
        h = hashes[i]
        for j in range(i + 1, min(len(hashes), i + n)):
            h = (h * 116049371 + hashes[j]) & MASK64
            rows.append(nwords + h % bucket)
    return rows


def sentence_rows(model, text: str) -> list[int]:
    """All input rows fastText averages for ``text`` (words in the vocabulary, n-grams, end of line)."""
    args = model.f.getArgs()
    words = text.split() + ["</s>"]
    rows = [i for i in (model.get_word_id(w) for w in words) if i >= 0]
    return rows + ngram_rows(words, args.wordNgrams, len(model.get_words()), args.bucket)


def bigram_weights(model, lines_file: Path, positive_label: str, negative_label: str, top: int = 10,
                   min_count: int = 5, max_bytes: int = 50_000_000) -> dict:
    """The ``top`` bigrams pushing most toward each label, among those seen ``min_count`` times in
    the first ``max_bytes`` of the training lines (bounded memory). Bigrams that share a hash row
    share its weight; only the most frequent of them is shown."""
    args = model.f.getArgs()
    labels = list(model.get_labels())
    output = model.get_output_matrix()
    direction = output[labels.index(positive_label)] - output[labels.index(negative_label)]
    counts: Counter = Counter()
    read = 0
    with open(lines_file, encoding="utf-8") as handle:
        for line in handle:
            read += len(line)
            if read > max_bytes:
                break
            words = line.split()[1:]  # the label first
            counts.update(zip(words, words[1:]))
    nwords = len(model.get_words())
    by_row: dict[int, tuple] = {}  # bigrams hashed to one row share its weight: keep the most frequent
    for pair, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if count >= min_count:
            by_row.setdefault(ngram_rows(list(pair), 2, nwords, args.bucket)[0], pair)
    if not by_row:
        return {"positive": [], "negative": [], "bigrams_considered": 0}
    rows = np.array(list(by_row))
    frequent = list(by_row.values())
    weights = model.get_input_matrix()[rows] @ direction
    order = np.argsort(-weights, kind="mergesort")

    def entry(i: int) -> dict:
        return {"bigram": " ".join(frequent[i]), "weight": round(float(weights[i]), 4), "count": counts[frequent[i]]}

    return {"positive": [entry(i) for i in order[:top]], "negative": [entry(i) for i in order[::-1][:top]],
            "bigrams_considered": len(frequent)}
