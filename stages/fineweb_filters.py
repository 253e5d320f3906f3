"""FineWeb's quality filter (Penedo et al. 2024), as datatrove's ``FineWebQualityFilter`` applies it.

Over the non-blank lines (``text.split("\\n")``), in this order, a document is dropped when:
- fewer than ``line_punct_thr`` of them end in terminal punctuation (``line_punct_ratio``);
- more than ``short_line_thr`` of them are at most ``short_line_length`` characters (``short_line_ratio``);
- lines repeating an earlier line hold more than ``char_duplicates_ratio`` of the characters
  other than newlines (``char_dup_ratio``);
- newlines per word exceed ``new_line_ratio`` (``list_ratio``; words as spaCy splits them,
  ``refinery.text.split_words``).
A text with no non-blank line is ``empty``. Parity: docs/FILTERS.md, "FineWeb".
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from refinery.document import Document, Drop
from refinery.stage import Stage, StageConfig
from refinery.text import cached_words

# datatrove's TERMINAL_PUNCTUATION, escaped: sentence terminators of every script (159 characters)
TERMINAL_PUNCTUATION = tuple(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964"
    "\u0965\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da"
    "\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e"
    "\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002"
    "\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e"
    "\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57"
    "\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88"
    "\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1\U00011141"
    "\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238"
    "\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3"
    "\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0"
    "\U000115d1\U000115d2\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641"
    "\U00011642\U0001173c\U0001173d\U0001173e\U00011944\U00011946\U00011a42\U00011a43"
    "\U00011a9b\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8\U00011f43\U00011f44"
    "\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f"
    "\U0001da88")
RULES = ("empty", "line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio")


class FineWebFiltersConfig(StageConfig):
    line_punct_thr: float = Field(default=0.12, ge=0.0, le=1.0)
    line_punct_exclude_zero: bool = False  # true: a document with no punctuated line passes this rule
    short_line_thr: float = Field(default=0.67, ge=0.0, le=1.0)
    short_line_length: int = Field(default=30, ge=0)
    char_duplicates_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    new_line_ratio: float = Field(default=0.3, ge=0.0)
    language: str | None = None  # word splitting rules; default: the document's language


class FineWebFilters(Stage):
    name: ClassVar[str] = "fineweb_filters"
    reasons: ClassVar[tuple[str, ...]] = RULES
    Config = FineWebFiltersConfig

    def process_doc(self, doc: Document) -> Document | Drop:
        reason = self.broken_rule(doc.text, self.config.language or doc.language or "en")
        return doc if reason is None else Drop(doc, reason)

    def broken_rule(self, text: str, language: str) -> str | None:
        cfg = self.config
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            return "empty"
        ratio = sum(line.endswith(TERMINAL_PUNCTUATION) for line in lines) / len(lines)
        if ratio < cfg.line_punct_thr and not (ratio == 0 and cfg.line_punct_exclude_zero):
            return "line_punct_ratio"
        if sum(len(line) <= cfg.short_line_length for line in lines) / len(lines) > cfg.short_line_thr:
            return "short_line_ratio"
        seen, duplicate_chars = set(), 0
        for line in lines:
            if line in seen:
                duplicate_chars += len(line)
            else:
                seen.add(line)
        if duplicate_chars / max(len(text) - text.count("\n"), 1) > cfg.char_duplicates_ratio:
            return "char_dup_ratio"
        words = cached_words(text, language)
        if text.count("\n") / max(len(words), 1) > cfg.new_line_ratio:
            return "list_ratio"
        return None
