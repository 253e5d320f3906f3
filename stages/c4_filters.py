"""C4's heuristic filters (Raffel et al. 2020), as datatrove's ``C4QualityFilter`` applies them.

Line by line (``str.splitlines``, each line stripped), in this order:
- a line with a word longer than ``max_word_length`` characters is removed;
- Wikipedia-style citations (``[1]``, ``[edit]``, ``[citation needed]``) are cut from it;
- a line not ending in terminal punctuation (``. ? ! " '``), or ending in ``...``, is removed;
- a line of fewer than ``min_words_per_line`` words is removed;
- "lorem ipsum" anywhere drops the document (``lorem_ipsum``);
- a line mentioning "javascript" is removed;
- a ``{`` drops the document (``curly_bracket``);
- a line with a cookie or terms-of-use phrase is removed.

The document is then dropped when the kept lines hold fewer than ``min_num_sentences`` sentences
(``too_few_sentences``; spaCy's sentencizer rule, ``refinery.text.count_sentences``), and
otherwise keeps the kept lines. The rules are datatrove's, and so is the order in which a line meets
them: a line without terminal punctuation is removed before it is checked for "lorem ipsum".
Parity and the differences: docs/FILTERS.md, "C4".
"""

from __future__ import annotations

import re
from collections import Counter
from typing import ClassVar

from pydantic import Field

from refinery.document import Document, Drop
from refinery.stage import Stage, StageConfig
from refinery.text import count_sentences

LOREM_IPSUM, CURLY_BRACKET, TOO_FEW_SENTENCES = "lorem_ipsum", "curly_bracket", "too_few_sentences"
NO_LINES_LEFT = "no_lines_left"  # only without the sentence rule: datatrove would keep an empty text
CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


class C4FiltersConfig(StageConfig):
    remove_citations: bool = True
    filter_no_terminal_punct: bool = True  # FineWeb runs C4 with this off
    min_num_sentences: int | None = Field(default=5, ge=1)  # null: no sentence rule
    min_words_per_line: int | None = Field(default=3, ge=1)
    max_word_length: int | None = Field(default=1000, ge=1)
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    language: str | None = None  # sentence splitting rules; default: the document's language


class C4Filters(Stage):
    name: ClassVar[str] = "c4_filters"
    reasons: ClassVar[tuple[str, ...]] = (LOREM_IPSUM, CURLY_BRACKET, TOO_FEW_SENTENCES, NO_LINES_LEFT)
    Config = C4FiltersConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._lines_removed: Counter = Counter()

    def process_doc(self, doc: Document) -> Document | Drop:
        cfg = self.config
        kept, removed = [], Counter()
        for line in doc.text.splitlines():
            line = line.strip()
            words = line.split()
            if cfg.max_word_length is not None and any(len(word) > cfg.max_word_length for word in words):
                removed["too_long_word"] += 1
                continue
            if cfg.remove_citations:
                line = CITATION.sub("", line)
            if cfg.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                removed["no_terminal_punct"] += 1
                continue
            if cfg.min_words_per_line is not None and len(words) < cfg.min_words_per_line:
                removed["too_few_words"] += 1
                continue
            lower = line.lower()
            if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
                return Drop(doc, LOREM_IPSUM)
            if cfg.filter_javascript and "javascript" in lower:
                removed["javascript"] += 1
                continue
            if cfg.filter_curly_bracket and "{" in line:
                return Drop(doc, CURLY_BRACKET)
            if cfg.filter_policy and any(phrase in lower for phrase in POLICY_PHRASES):
                removed["policy"] += 1
                continue
            kept.append(line)
        if cfg.min_num_sentences is not None:
            language = cfg.language or doc.language or "en"
            sentences = 0
            for line in kept:  # per line, as datatrove counts; stop once there are enough
                sentences += count_sentences(line, language, at_most=cfg.min_num_sentences - sentences)
                if sentences >= cfg.min_num_sentences:
                    break
            if sentences < cfg.min_num_sentences:
                return Drop(doc, TOO_FEW_SENTENCES)
        if not kept:
            return Drop(doc, NO_LINES_LEFT)
        self._lines_removed.update(removed)
        doc.text = "\n".join(kept).strip()
        return doc

    def extra_stats(self) -> dict:
        return {"lines_removed": dict(self._lines_removed)} if self._lines_removed else {}
