"""Exact-substring dedup (Lee et al. 2022; RefinedWeb's last dedup stage): cut every span of
``min_tokens`` or more whitespace tokens that occurs more than once in a group of documents.

Tokens are whitespace-separated words (``\\S+``), so a span of 50 tokens is about 300 bytes of
English. Per group (see `refinery/dedup.py`), the documents' tokens become integer ids joined
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

Memory: about 30 bytes per token (ids, suffix array, LCP, token offsets), plus the texts. A group
is processed in parts of at most ``max_part_bytes`` bytes of text (default 100 MB, about 1 GB at
peak); repeats are only found within a part, so a bigger part dedups more and costs more memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from refinery.stage import DedupStage, StageConfig

_TOKEN = re.compile(r"\S+")
_BLANK_RUNS = re.compile(r"[ \t]*\n(?:[ \t]*\n)+")


@dataclass
class Repeats:
    """What :func:`find_repeats` found in one part: character ranges to cut, per document."""

    cuts: list[list[tuple[int, int]]]  # per document, sorted, non-overlapping [start, end)
    cut_tokens: list[int]  # per document


def find_repeats(texts: list[str], min_tokens: int = 50, keep_first: bool = True) -> Repeats:
    """The ranges of ``texts`` covered by a ``min_tokens``-token window that occurs more than once."""
    from pydivsufsort import divsufsort, kasai

    vocab: dict[str, int] = {}
    token_ids, starts, ends, doc_of = [], [], [], []
    for d, text in enumerate(texts):
        for match in _TOKEN.finditer(text):
            token_ids.append(vocab.setdefault(match.group(), len(vocab)))
            starts.append(match.start())
            ends.append(match.end())
            doc_of.append(d)
        token_ids.append(-1)  # separator, made unique below
        starts.append(-1)
        ends.append(-1)
        doc_of.append(d)
    empty = Repeats(cuts=[[] for _ in texts], cut_tokens=[0] * len(texts))
    n = len(token_ids)
    if n == 0:
        return empty
    seq = np.asarray(token_ids, dtype=np.int64)
    separators = np.flatnonzero(seq < 0)
    seq[separators] = len(vocab) + np.arange(len(separators))
    if seq.max() < 2**31 - 1:
        seq = seq.astype(np.int32)
    sa = np.asarray(divsufsort(seq))
    lcp = np.asarray(kasai(seq, sa))  # lcp[i] = common prefix of suffixes sa[i] and sa[i + 1]

    linked = lcp[:-1] >= min_tokens  # sa[i] and sa[i + 1] share their first min_tokens tokens
    if not linked.any():
        return empty
    run_start = np.ones(n, dtype=bool)
    run_start[1:] = ~linked
    run = np.cumsum(run_start) - 1
    in_repeat = np.zeros(n, dtype=bool)
    in_repeat[:-1] |= linked
    in_repeat[1:] |= linked
    if keep_first:  # the earliest occurrence of each window stays
        first = np.full(run[-1] + 1, n, dtype=np.int64)
        np.minimum.at(first, run[in_repeat], sa[in_repeat])
        window_starts = sa[in_repeat & (sa != first[run])]
    else:
        window_starts = sa[in_repeat]

    cover = np.zeros(n + 1, dtype=np.int64)
    np.add.at(cover, window_starts, 1)
    np.add.at(cover, np.minimum(window_starts + min_tokens, n), -1)
    cut = np.cumsum(cover[:-1]) > 0

    cuts: list[list[tuple[int, int]]] = [[] for _ in texts]
    cut_tokens = [0] * len(texts)
    starts_a, ends_a, doc_a = np.asarray(starts), np.asarray(ends), np.asarray(doc_of)
    edges = np.diff(np.concatenate(([0], cut.astype(np.int8), [0])))
    for first_token, end_token in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        d = int(doc_a[first_token])
        cuts[d].append((int(starts_a[first_token]), int(ends_a[end_token - 1])))
        cut_tokens[d] += int(end_token - first_token)
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


class SubstringDedup(DedupStage):
    name = "substring_dedup"
    reason = "too_short_after_cut"
    method = "substring"

    class Config(StageConfig):
        min_tokens: int = Field(default=50, ge=2)  # whitespace tokens (Lee et al. and RefinedWeb: 50)
        keep_first: bool = True  # False: cut every occurrence, the first included
        min_words_after_cut: int = Field(default=50, ge=0)  # Gopher's lower bound on document length
        shards_per_group: int | None = Field(default=None, ge=1)  # None: one group for the whole run
        max_part_bytes: int = Field(default=100_000_000, ge=1)  # text per suffix array; bounds memory
        sample_spans: int = Field(default=100, ge=0)  # cut spans kept for inspection, per group
