"""Gopher document quality rules (Rae et al. 2021, section A.1.1), as datatrove's GopherQualityFilter.

Drops documents that are too short or too long, whose words are too short or too long on
average, that are mostly symbols, bullet lists or trailing ellipses, or that lack the stop
words any running text has. See docs/FILTERS.md.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

from pydantic import Field

from refinery.document import Document, Drop
from refinery.stage import PerLanguageThresholds, Stage, StageConfig
from refinery.text import cached_words, is_word, stop_words

TOO_FEW_WORDS = "too_few_words"
TOO_MANY_WORDS = "too_many_words"
MEAN_WORD_LENGTH_LOW = "mean_word_length_low"
MEAN_WORD_LENGTH_HIGH = "mean_word_length_high"
TOO_MANY_HASHES = "too_many_hashes"
TOO_MANY_ELLIPSES = "too_many_ellipses"
TOO_MANY_BULLET_LINES = "too_many_bullet_lines"
TOO_MANY_ELLIPSIS_LINES = "too_many_ellipsis_lines"
TOO_FEW_ALPHA_WORDS = "too_few_alpha_words"
TOO_FEW_STOP_WORDS = "too_few_stop_words"


class QualityThresholds(StageConfig):
    """Gopher's limits; None turns a rule off."""

    min_words: int | None = Field(50, ge=0)
    max_words: int | None = Field(100_000, ge=0)
    min_mean_word_length: float | None = Field(3, ge=0)
    max_mean_word_length: float | None = Field(10, ge=0)
    max_hash_word_ratio: float | None = Field(0.1, ge=0)
    max_ellipsis_word_ratio: float | None = Field(0.1, ge=0)
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1)
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1)
    min_alpha_words_ratio: float | None = Field(0.8, ge=0, le=1)
    min_stop_words: int | None = Field(2, ge=0)


# (reason, measure, threshold, True when the measure must not exceed it), in datatrove's order
RULES = (
    (TOO_FEW_WORDS, "words", "min_words", False),
    (TOO_MANY_WORDS, "words", "max_words", True),
    (MEAN_WORD_LENGTH_LOW, "mean_word_length", "min_mean_word_length", False),
    (MEAN_WORD_LENGTH_HIGH, "mean_word_length", "max_mean_word_length", True),
    (TOO_MANY_HASHES, "hash_word_ratio", "max_hash_word_ratio", True),
    (TOO_MANY_ELLIPSES, "ellipsis_word_ratio", "max_ellipsis_word_ratio", True),
    (TOO_MANY_BULLET_LINES, "bullet_lines_ratio", "max_bullet_lines_ratio", True),
    (TOO_MANY_ELLIPSIS_LINES, "ellipsis_lines_ratio", "max_ellipsis_lines_ratio", True),
    (TOO_FEW_ALPHA_WORDS, "alpha_words_ratio", "min_alpha_words_ratio", False),
    (TOO_FEW_STOP_WORDS, "stop_words", "min_stop_words", False),
)


class GopherQualityConfig(PerLanguageThresholds, QualityThresholds):
    Thresholds: ClassVar[type[QualityThresholds]] = QualityThresholds

    # Language whose word-splitting rules and stop words apply; default: the document's.
    language: str | None = None
    # Stop-word lists replacing or adding to refinery.text.STOP_WORDS, e.g. {en: [the, and]}.
    # The stop-word rule is skipped for a language with no list.
    stop_words: dict[str, list[str]] = {}
    # Thresholds that differ for some languages, e.g. {de: {max_mean_word_length: 12}}.
    per_language: dict[str, dict[str, float | None]] = {}


def quality_stats(text: str, words: Sequence[str], stop_words: frozenset[str] | None) -> dict[str, float]:
    """Gopher's quality measures of `text`, split into `words` (punctuation tokens included).

    As in datatrove: "words" and the mean word length count only tokens with a character
    that is not punctuation; the hash, ellipsis and alphabetic ratios divide by all tokens.
    """
    n_tokens = len(words) or 1
    real_words = [w for w in words if is_word(w)]
    lines = text.splitlines() or [""]
    with_letter = sum(1 for w in words if w.isalpha() or any(map(str.isalpha, w)))
    return {
        "words": len(real_words),
        "mean_word_length": sum(map(len, real_words)) / len(real_words) if real_words else 0.0,
        "hash_word_ratio": text.count("#") / n_tokens,
        "ellipsis_word_ratio": (text.count("...") + text.count("…")) / n_tokens,
        "bullet_lines_ratio": sum(line.lstrip().startswith(("•", "-")) for line in lines) / len(lines),
        "ellipsis_lines_ratio": sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines),
        "alpha_words_ratio": with_letter / n_tokens,
        "stop_words": len(stop_words.intersection(words)) if stop_words is not None else float("inf"),
    }


def first_broken_rule(stats: dict[str, float], thresholds: QualityThresholds) -> str | None:
    """The first rule (in datatrove's order) that `stats` break, if any."""
    for reason, measure, name, is_max in RULES:
        limit = getattr(thresholds, name)
        if limit is not None and (stats[measure] > limit if is_max else stats[measure] < limit):
            return reason
    return None


class GopherQuality(Stage):
    name: ClassVar[str] = "gopher_quality"
    reasons: ClassVar[tuple[str, ...]] = tuple(rule[0] for rule in RULES)
    Config = GopherQualityConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._by_language: dict[str, tuple[QualityThresholds, frozenset[str] | None]] = {}

    def _for(self, language: str) -> tuple[QualityThresholds, frozenset[str] | None]:
        if language not in self._by_language:
            words = self.config.stop_words.get(language)
            self._by_language[language] = (self.config.thresholds(language),
                                           frozenset(words) if words is not None else stop_words(language))
        return self._by_language[language]

    def process_doc(self, doc: Document) -> Document | Drop:
        language = self.config.language or doc.language or "en"
        thresholds, stops = self._for(language)
        stats = quality_stats(doc.text, cached_words(doc.text, language), stops)
        rule = first_broken_rule(stats, thresholds)
        return doc if rule is None else Drop(doc, rule)
