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
benchmarks/substring_dedup.py). A group is processed in parts of at most ``max_part_bytes`` bytes
of text (default 100 MB, so about 1.3 GB at peak per task); repeats are only found within a part,
so a bigger part dedups more and costs more memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

    cover = np.zeros(n + 1, dtype=np.int32)
    np.add.at(cover, window_starts, 1)
    np.add.at(cover, np.minimum(window_starts + min_tokens, n), -1)
    cut = np.cumsum(cover[:-1], dtype=np.int32) > 0

    doc_start = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))  # first position of each document
    edges = np.diff(np.concatenate(([0], cut.astype(np.int8), [0])))
    cuts: list[list[tuple[int, int]]] = [[] for _ in texts]
    cut_tokens = [0] * len(texts)
    offsets: dict[int, list[tuple[int, int]]] = {}  # token character spans, only for documents with cuts
    for first_token, end_token in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        d = int(np.searchsorted(doc_start, first_token, side="right") - 1)
        if d not in offsets:
            offsets[d] = [m.span() for m in _TOKEN.finditer(texts[d])]
        a, b = int(first_token - doc_start[d]), int(end_token - doc_start[d])
        cuts[d].append((offsets[d][a][0], offsets[d][b - 1][1]))
        cut_tokens[d] += b - a
    return Repeats(cuts=cuts, cut_tokens=cut_tokens)


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
        max_part_bytes: int = Field(default=100_000_000, ge=1)  # text per suffix array; bounds memory
        sample_spans: int = Field(default=100, ge=0)  # cut spans kept for inspection, per group
