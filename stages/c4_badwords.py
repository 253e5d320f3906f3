"""C4's bad-words filter (datatrove's ``C4BadWordsFilter``): a document containing a word of its
language's list, flanked by non-word characters (anywhere, for ja, th and zh), is dropped
(``bad_words``), except for a seeded ``keep_fraction`` of them.

Nothing is downloaded: the lists are local files, one word or phrase a line, e.g. the "List of
Dirty, Naughty, Obscene, and Otherwise Bad Words" (LDNOOBW, CC BY 4.0), which refinery does not
ship. A document whose language has no list passes, counted in the funnel's ``extra``."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from refinery.document import Document, Drop
from refinery.stage import Stage, StageConfig

BAD_WORDS = "bad_words"
_NON_WORD = re.compile(r"\W")
UNSPACED = ("ja", "th", "zh")  # no word boundaries needed
ALLOWLIST = {"ja": {"sm", "グロ", "女の子"}, "zh": {"性"}}  # C4's: common subwords of these languages


def read_word_list(path: str) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


class C4BadWordsConfig(StageConfig):
    word_lists: dict[str, str] = Field(min_length=1)  # language -> a local file, one word a line
    keep_fraction: float = Field(default=0.0, ge=0.0, le=1.0)  # of the documents with bad words
    seed: int = 0
    default_language: str = "en"  # for documents without one

    @field_validator("word_lists")
    @classmethod
    def _readable(cls, value: dict[str, str]) -> dict[str, str]:
        for language, path in value.items():
            if not Path(path).is_file():
                raise ValueError(f"{language}: no word list at {path!r}")
            try:
                words = read_word_list(path)
            except (OSError, UnicodeDecodeError) as err:
                raise ValueError(f"{language}: cannot read {path!r}: {err}") from None
            if not words:
                raise ValueError(f"{language}: {path!r} holds no words")
        return value


class C4BadWords(Stage):
    name: ClassVar[str] = "c4_badwords"
    reasons: ClassVar[tuple[str, ...]] = (BAD_WORDS,)
    Config = C4BadWordsConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._patterns: dict = {}  # language -> Aho-Corasick automaton of its words
        self._counts: Counter = Counter()

    def setup(self) -> None:
        import ahocorasick

        for language, path in self.config.word_lists.items():
            automaton = ahocorasick.Automaton()
            for word in set(read_word_list(path)) - ALLOWLIST.get(language, set()):
                automaton.add_word(word, len(word))
            automaton.make_automaton()
            self._patterns[language] = automaton

    def process_doc(self, doc: Document) -> Document | Drop:
        language = doc.language or self.config.default_language
        pattern = self._patterns.get(language)
        if pattern is None:
            self._counts[f"no_word_list_{language}"] += 1
            return doc
        if not self._found(pattern, doc.text.lower(), language in UNSPACED):
            return doc
        self._counts["documents_with_bad_words"] += 1
        if self.config.keep_fraction and self._draw(doc) < self.config.keep_fraction:
            self._counts["kept_with_bad_words"] += 1
            return doc
        return Drop(doc, BAD_WORDS)

    @staticmethod
    def _found(automaton, text: str, anywhere: bool) -> bool:
        """A list word in ``text``, between non-word characters unless ``anywhere``: what C4's
        regular expression ``(?:\\W|^)(w1|w2|…)(?:\\W|$)`` finds, in one Aho-Corasick pass
        instead of trying every word at every position."""
        for end, length in automaton.iter(text):
            start = end - length + 1
            if anywhere or ((start == 0 or _NON_WORD.match(text, start - 1)) and
                            (end + 1 == len(text) or _NON_WORD.match(text, end + 1))):
                return True
        return False

    def _draw(self, doc: Document) -> float:
        """A uniform draw from the seed and the document (the same on any shard, in any order)."""
        digest = hashlib.blake2b(f"{self.config.seed}\x00{doc.id}\x00{doc.text}".encode("utf-8", "surrogatepass"),
                                 digest_size=8).digest()
        return int.from_bytes(digest, "little") / 2**64

    def extra_stats(self) -> dict:
        return dict(self._counts)
