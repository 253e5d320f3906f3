"""Exact-substring dedup (Lee et al. 2022; RefinedWeb's last dedup stage): cut every span of
``min_tokens`` or more whitespace tokens that occurs more than once in a group of documents.

Tokens are whitespace-separated words (``\\S+``), so a span of 50 tokens is about 300 bytes of
English. Per group (see `refinery/pipeline/substring.py`), the documents' tokens become integer ids joined
into one sequence, with a unique separator after each document so no match crosses documents.
A suffix array (pydivsufsort's divsufsort) and its LCP array (Kasai) give, for every position, the
other positions that share its next ``min_tokens`` tokens: suffixes that share that prefix are
neighbours in the suffix array, linked by LCP >= ``min_tokens``. Each such run is one repeated
``min_tokens``-window. With ``keep_first`` (the default) every window except its first
occurrence (in group order) is cut, so one copy of a repeated paragraph survives; without it,
every occurrence is cut, as in Lee et al.'s released code. A longer repeat is the union of its
overlapping windows, so it is cut whole. Runs of cut tokens become character ranges of the
document, which `cut_text` removes; a document left with fewer than ``min_words_after_cut`` words
is dropped.

Memory: about 100 bytes per token at peak, or 12 to 14 times the text's size: the vocabulary,
the token ids, the suffix array, the LCP array and the run labels (measured in
benchmarks/substring_dedup.py). So the suffix array serves a group whose text fits in
``max_part_bytes``; a bigger group goes through window hashes (:func:`window_hashes`, wired in
refinery/pipeline/windows.py): every ``min_tokens``-window's 64-bit hash, partitioned by value,
so that one task per hash range finds each window's first occurrence in the whole group. Both
give the same cuts (up to a 2**-64 hash collision per pair of windows), which the tests check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from refinery.stage import SpanCutStage, StageConfig

_TOKEN = re.compile(r"\S+")
_BLANK_RUNS = re.compile(r"[ \t]*\n(?:[ \t]*\n)+")


@dataclass
class Repeats:
    """What :func:`find_repeats` found in one part: character ranges to cut, per document."""

    cuts: list[list[tuple[int, int]]]  # per document, sorted, non-overlapping [start, end)
    cut_tokens: list[int]  # per document


def find_repeats(texts: list[str], min_tokens: int = 50, keep_first: bool = True) -> Repeats:
    """The ranges of ``texts`` covered by a ``min_tokens``-token window that occurs more than once."""
    from array import array
    from collections import defaultdict

    from pydivsufsort import divsufsort, kasai

    empty = Repeats(cuts=[[] for _ in texts], cut_tokens=[0] * len(texts))
    vocab: defaultdict[str, int] = defaultdict()
    vocab.default_factory = vocab.__len__  # a new token gets the next id, in C
    ids = array("i")  # 4 bytes a token; a list would hold a pointer and an int object per token
    lengths = np.empty(len(texts), dtype=np.int64)
    for d, text in enumerate(texts):
        tokens = text.split()
        ids.extend(map(vocab.__getitem__, tokens))
        ids.append(-1)  # separator, made unique below
        lengths[d] = len(tokens)
    n = len(ids)
    if n == len(texts):  # no tokens at all
        return empty
    if len(vocab) + len(texts) >= 2**31:
        raise ValueError("too many distinct tokens for one part; lower max_part_bytes")
    seq = np.frombuffer(ids, dtype=np.int32).copy()
    del ids, vocab
    separators = np.flatnonzero(seq < 0)
    seq[separators] = seq.max(initial=0) + 1 + np.arange(len(separators), dtype=np.int32)
    sa = np.asarray(divsufsort(seq))
    lcp = np.asarray(kasai(seq, sa))  # lcp[i] = common prefix of suffixes sa[i] and sa[i + 1]

    linked = lcp[:-1] >= min_tokens  # sa[i] and sa[i + 1] share their first min_tokens tokens
    if not linked.any():
        return empty
    run_start = np.ones(n, dtype=bool)
    run_start[1:] = ~linked
    run = np.cumsum(run_start, dtype=np.int32) - 1
    in_repeat = np.zeros(n, dtype=bool)
    in_repeat[:-1] |= linked
    in_repeat[1:] |= linked
    if keep_first:  # the earliest occurrence of each window stays
        first = np.full(run[-1] + 1, n, dtype=np.int64)
        np.minimum.at(first, run[in_repeat], sa[in_repeat])
        window_starts = sa[in_repeat & (sa != first[run])]
    else:
        window_starts = sa[in_repeat]

    doc_start = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))  # first position of each document
    doc_of = np.searchsorted(doc_start, window_starts, side="right") - 1
    cuts: list[list[tuple[int, int]]] = [[] for _ in texts]
    cut_tokens = [0] * len(texts)
    for d in np.unique(doc_of):
        cuts[d], cut_tokens[d] = cut_ranges(texts[d], window_starts[doc_of == d] - doc_start[d], min_tokens)
    return Repeats(cuts=cuts, cut_tokens=cut_tokens)


def cut_ranges(text: str, window_starts: np.ndarray, min_tokens: int) -> tuple[list[tuple[int, int]], int]:
    """Character ranges of ``text`` covered by its ``min_tokens``-token windows starting at the
    token positions ``window_starts`` (a window never passes the text's end), and their tokens."""
    spans = [m.span() for m in _TOKEN.finditer(text)]
    n = len(spans)
    cover = np.zeros(n + 1, dtype=np.int32)
    starts = np.asarray(window_starts, dtype=np.int64)
    np.add.at(cover, starts, 1)
    np.add.at(cover, np.minimum(starts + min_tokens, n), -1)
    cut = np.cumsum(cover[:-1], dtype=np.int32) > 0
    edges = np.diff(np.concatenate(([0], cut.astype(np.int8), [0])))
    ranges = [(spans[a][0], spans[b - 1][1]) for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]
    return ranges, int(cut.sum())


# --- window hashes: the same windows, found across parts ----------------------------------------

def window_hashes(text: str, min_tokens: int) -> np.ndarray:
    """uint64 hash of each ``min_tokens``-token window of ``text`` (tokens as :func:`find_repeats`
    takes them), in position order; empty when the text is shorter than one window."""
    from refinery.windowhash import window_hashes as compute  # numba: loaded when first used

    return compute(text, min_tokens)


def repeated_windows(hashes: np.ndarray, order_keys: tuple[np.ndarray, ...], keep_first: bool) -> np.ndarray:
    """Indices of the windows to cut among ``hashes``: each one whose hash occurs more than once,
    except (with ``keep_first``) the earliest occurrence, earliest by ``order_keys`` (most
    significant first, e.g. shard, row, position)."""
    order = np.lexsort((*reversed(order_keys), hashes))
    sorted_hashes = hashes[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_hashes[1:] != sorted_hashes[:-1]
    if keep_first:
        return order[~first]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = first[1:]
    return order[~(first & last)]  # every member of a group of two or more


def cut_text(text: str, ranges: list[tuple[int, int]]) -> str:
    """``text`` without ``ranges``; blank lines left where paragraphs were cut are merged."""
    if not ranges:
        return text
    pieces, last = [], 0
    for start, end in ranges:
        pieces.append(text[last:start])
        last = end
    pieces.append(text[last:])
    joined = "".join(pieces)
    return _BLANK_RUNS.sub("\n\n", "\n".join(line.rstrip() for line in joined.split("\n"))).strip()


class SubstringDedup(SpanCutStage):
    name = "substring_dedup"
    reason = "too_short_after_cut"

    class Config(StageConfig):
        min_tokens: int = Field(default=50, ge=2)  # whitespace tokens (Lee et al. and RefinedWeb: 50)
        keep_first: bool = True  # False: cut every occurrence, the first included
        min_words_after_cut: int = Field(default=50, ge=0)  # Gopher's lower bound on document length
        shards_per_group: int | None = Field(default=None, ge=1)  # None: one group for the whole run
        # Text per suffix array (about 13x it in memory); a bigger group goes through window hashes
        # in hash ranges of about this much text each, so it also bounds their memory.
        max_part_bytes: int = Field(default=50_000_000, ge=1)
        # auto: suffix array when the group's text fits in max_part_bytes, else window hashes;
        # suffix_array: parts of max_part_bytes, repeats found only within a part.
        method: Literal["auto", "suffix_array", "window_hash"] = "auto"
        sample_spans: int = Field(default=100, ge=0)  # cut spans kept for inspection, per group
