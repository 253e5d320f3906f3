"""Gopher repetition removal (Rae et al. 2021, Table A1), as datatrove's GopherRepetitionFilter.

A document is dropped when too much of it repeats: whole lines or paragraphs, the most
frequent 2-, 3- or 4-gram, or the n-grams (5 to 10 words) that occur more than once.
Every fraction is measured against the document's length in characters, except the two
count fractions (duplicate lines, duplicate paragraphs). See docs/FILTERS.md.
"""

from __future__ import annotations

import re
from collections import Counter
from itertools import accumulate
from typing import ClassVar, Sequence

from pydantic import Field

from refinery.document import Document, Drop
from refinery.stage import PerLanguageThresholds, Stage, StageConfig
from refinery.text import cached_words

TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)

DUP_PARA_FRAC = "dup_para_frac"
DUP_PARA_CHAR_FRAC = "dup_para_char_frac"
DUP_LINE_FRAC = "dup_line_frac"
DUP_LINE_CHAR_FRAC = "dup_line_char_frac"
EMPTY_TEXT = "empty_text"
# The rules in datatrove's order; a document is dropped for the first one it breaks.
RULES = (DUP_PARA_FRAC, DUP_PARA_CHAR_FRAC, DUP_LINE_FRAC, DUP_LINE_CHAR_FRAC,
         *(f"top_{n}_gram" for n in TOP_NGRAMS), *(f"dup_{n}_gram" for n in DUP_NGRAMS))

_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
_LINE_BREAK = re.compile(r"\n+")


class RepetitionThresholds(StageConfig):
    """The largest fraction each rule allows (Gopher's values); None turns a rule off."""

    dup_line_frac: float | None = Field(0.30, ge=0.0, le=1.0)
    dup_para_frac: float | None = Field(0.30, ge=0.0, le=1.0)
    dup_line_char_frac: float | None = Field(0.20, ge=0.0, le=1.0)
    dup_para_char_frac: float | None = Field(0.20, ge=0.0, le=1.0)
    top_2_gram: float | None = Field(0.20, ge=0.0, le=1.0)
    top_3_gram: float | None = Field(0.18, ge=0.0, le=1.0)
    top_4_gram: float | None = Field(0.16, ge=0.0, le=1.0)
    dup_5_gram: float | None = Field(0.15, ge=0.0, le=1.0)
    dup_6_gram: float | None = Field(0.14, ge=0.0, le=1.0)
    dup_7_gram: float | None = Field(0.13, ge=0.0, le=1.0)
    dup_8_gram: float | None = Field(0.12, ge=0.0, le=1.0)
    dup_9_gram: float | None = Field(0.11, ge=0.0, le=1.0)
    dup_10_gram: float | None = Field(0.10, ge=0.0, le=1.0)


class GopherRepetitionConfig(PerLanguageThresholds, RepetitionThresholds):
    Thresholds: ClassVar[type[RepetitionThresholds]] = RepetitionThresholds

    # Language whose word-splitting rules apply; default: the document's (from language_id).
    language: str | None = None
    # Thresholds that differ for some languages, e.g. {de: {top_2_gram: 0.22}}.
    per_language: dict[str, dict[str, float | None]] = {}


def _duplicates(items: list[str]) -> tuple[int, int]:
    """How many items repeat an earlier one, and their characters (datatrove's find_duplicates)."""
    unique = set(items)
    return len(items) - len(unique), sum(map(len, items)) - sum(map(len, unique))


def _ngrams(words: Sequence[str], n: int):
    return zip(*(words[i:] for i in range(n)))


def _duplicate_ngram_chars(words: Sequence[str]) -> dict[int, int]:
    """For n in 5..10, the characters of n-grams that repeat an earlier one, scanning left to
    right and jumping past each repeat so overlapping repeats count once (datatrove's
    find_all_duplicate). Only positions whose n-gram occurs twice or more can be repeats, and
    a repeated (n+1)-gram starts with a repeated n-gram, so each n scans fewer positions."""
    cum = [0, *accumulate(map(len, words))]  # cum[j] - cum[i]: characters of words[i:j]
    grams = dict(enumerate(_ngrams(words, DUP_NGRAMS[0])))
    chars = {}
    for n in DUP_NGRAMS:
        if n > DUP_NGRAMS[0]:
            grams = {i: tuple(words[i:i + n]) for i in grams if i + n <= len(words)}
        counts = Counter(grams.values())
        grams = {i: gram for i, gram in grams.items() if counts[gram] > 1} if len(counts) < len(grams) else {}
        seen: set[tuple[str, ...]] = set()
        repeated = resume = 0
        for i, gram in grams.items():  # in text order
            if i < resume:
                continue
            if gram in seen:
                repeated += cum[i + n] - cum[i]
                resume = i + n
            else:
                seen.add(gram)
        chars[n] = repeated
    return chars


def repetition_stats(text: str, words: Sequence[str]) -> dict[str, float]:
    """Each rule's measure for a non-empty `text`, split into `words`: a fraction in [0, 1]."""
    stats: dict[str, float] = {}
    length = len(text)
    paragraphs = _PARAGRAPH_BREAK.split(text.strip())
    count, chars = _duplicates(paragraphs)
    stats[DUP_PARA_FRAC], stats[DUP_PARA_CHAR_FRAC] = count / len(paragraphs), chars / length
    lines = _LINE_BREAK.split(text)
    count, chars = _duplicates(lines)
    stats[DUP_LINE_FRAC], stats[DUP_LINE_CHAR_FRAC] = count / len(lines), chars / length
    for n in TOP_NGRAMS:  # characters of the most frequent n-gram, spaces between words included
        top = Counter(_ngrams(words, n)).most_common(1)  # the first seen, among equally frequent
        stats[f"top_{n}_gram"] = (sum(map(len, top[0][0])) + n - 1) * top[0][1] / length if top else 0.0
    for n, chars in _duplicate_ngram_chars(words).items():
        stats[f"dup_{n}_gram"] = chars / length
    return stats


def first_broken_rule(stats: dict[str, float], thresholds: RepetitionThresholds) -> str | None:
    """The first rule (in datatrove's order) whose measure exceeds its threshold, if any."""
    for rule in RULES:
        limit = getattr(thresholds, rule)
        if limit is not None and stats[rule] > limit:
            return rule
    return None


class GopherRepetition(Stage):
    name: ClassVar[str] = "gopher_repetition"
    reasons: ClassVar[tuple[str, ...]] = (EMPTY_TEXT, *RULES)
    Config = GopherRepetitionConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._thresholds: dict[str, RepetitionThresholds] = {}

    def process_doc(self, doc: Document) -> Document | Drop:
        if not doc.text:
            return Drop(doc, EMPTY_TEXT)
        language = self.config.language or doc.language or "en"
        thresholds = self._thresholds.get(language)
        if thresholds is None:
            thresholds = self._thresholds[language] = self.config.thresholds(language)
        rule = first_broken_rule(repetition_stats(doc.text, cached_words(doc.text, language)), thresholds)
        return doc if rule is None else Drop(doc, rule)
