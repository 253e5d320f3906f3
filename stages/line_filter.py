"""RefinedWeb's line-wise corrections (Penedo et al. 2023, appendix G.2), then a 5% word budget.

A line is removed when it is purely numeric, a social counter ("3 likes"), one word or fewer,
mostly uppercase, or, when short, navigation boilerplate ("Read more", "Sign in"). A document
that loses more than `max_removed_word_fraction` of its words is dropped; otherwise it keeps the
corrected text. Rules and choices: docs/FILTERS.md, "Line-wise corrections (RefinedWeb)".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from refinery.document import Document, Drop
from refinery.stage import Stage, StageConfig

TOO_MANY_LINES_REMOVED = "too_many_lines_removed"
EMPTY_AFTER_CORRECTIONS = "empty_after_corrections"

# Rule names, in the order they are tried: a removed line is counted under the first that matches.
NUMERIC, COUNTER, SINGLE_WORD, UPPERCASE, NAV = "numeric", "counter", "single_word", "uppercase", "nav"
RULES: tuple[str, ...] = (NUMERIC, COUNTER, SINGLE_WORD, UPPERCASE, NAV)
RuleName = Literal["numeric", "counter", "single_word", "uppercase", "nav"]

DEFAULT_COUNTER_WORDS = [
    # en
    "likes?", "shares?", "comments?", "views?", "followers?", "following", "retweets?", "reposts?",
    "repl(?:y|ies)", "votes?", "upvotes?", "downvotes?", "reactions?", "bookmarks?", "downloads?",
    "subscribers?", "reads?", "plays?", "pins?", "saves?", "answers?", "reviews?", "ratings?",
    "min(?:ute)? read",
    # de, fr, es
    "kommentare?", "aufrufe", "antworten", "abonnenten", "bewertungen", "gefällt mir",
    "commentaires?", "vues", "partages", "abonnés", "réponses", "j[’']aime",
    "comentarios?", "visitas", "seguidores", "respuestas", "me gusta",
]

# Regular expressions, searched case-insensitively in a short line once leading bullets and
# punctuation are stripped. Anchored on purpose: "Meta Outage Causes Login Problems" is a headline.
DEFAULT_NAV_PATTERNS: dict[str, list[str]] = {
    "en": [
        r"^read (?:more|the full (?:story|article))\b", r"\bread more\W*$", r"^(?:continue|keep) reading\b",
        r"^(?:sign|log)[ -]?(?:in|on|up|out)\b", r"^newsletter sign[ -]?up\b", r"^subscribe\b",
        r"\bitems? in (?:your |the )?(?:cart|basket|bag)\b", r"^(?:add to|view|your|shopping) (?:cart|basket|bag)\b",
        r"^share (?:this|on|via|to)\b", r"^(?:tweet|pin|email|print) this\b", r"^follow us\b",
        r"^skip to (?:the )?(?:main )?(?:content|navigation|search)\b", r"^(?:back|return|scroll) to top\b",
        r"^cookie (?:settings|preferences|policy|consent)\b", r"^(?:accept|reject|manage) (?:all )?cookies\b",
        r"^(?:view|see|load|show) (?:more|all)\b", r"^click here\b", r"^(?:previous|next) (?:post|article|story)\b",
        r"^related(?: (?:posts?|articles?|stories|coverage|content|recipes|reading|links|videos?))?\s*(?::|$)",
        r"^(?:leave|post|add|write) a (?:comment|reply)\b", r"^posted (?:on|in|by)\W*$",
        r"^(?:copyright\s*)?©", r"\ball rights reserved\b",
    ],
    "de": [
        r"^(?:zum )?weiterlesen\b", r"\bweiterlesen\W*$", r"^mehr zum thema\b", r"^lesen sie (?:auch|mehr)\b",
        r"^(?:anmelden|einloggen|abmelden|registrieren)\b", r"\bnewsletter (?:anmelden|abonnieren|bestellen)\b",
        r"^(?:jetzt )?abonnieren\b", r"^abonnieren sie\b", r"\bim warenkorb\b", r"^(?:in den )?warenkorb\b",
        r"^teilen (?:auf|über|per)\b", r"^(?:folgen sie uns|folge uns)\b", r"^zum inhalt springen\b",
        r"^(?:nach oben|zurück nach oben|zum seitenanfang)\b", r"^cookie-?einstellungen\b",
        r"^zur startseite\b", r"\balle rechte vorbehalten\b",
    ],
    "fr": [
        r"^lire (?:la suite|plus)\b", r"\blire la suite\W*$", r"^(?:lire|voir) aussi\b",
        r"^(?:se connecter|connexion|s[’']inscrire|inscription)\b", r"\bdans (?:le|votre) panier\b",
        r"^(?:mon |votre )?panier\b", r"^partager (?:sur|cet|l[’']article)\b", r"^aller au contenu\b",
        r"^retour en haut\b", r"^(?:paramètres|gestion) des cookies\b", r"^abonnez-vous\b", r"^suivez-nous\b",
        r"\btous droits réservés\b",
    ],
    "es": [
        r"^(?:leer|ver) más\b", r"\bleer más\W*$", r"^(?:iniciar sesión|registrarse|acceder)\b",
        r"\ben (?:el|tu|su) carrito\b", r"^(?:mi |tu |su )?carrito\b", r"^compartir (?:en|este|esta)\b",
        r"^saltar al contenido\b", r"^volver arriba\b", r"^(?:configuración|ajustes) de (?:las )?cookies\b",
        r"^suscríbete\b", r"^síguenos\b", r"\btodos los derechos reservados\b",
    ],
}


class LineFilterConfig(StageConfig):
    rules: list[RuleName] = Field(default=list(RULES), min_length=1)
    # uppercase: more than this fraction of the cased letters are capitals, with at least
    # uppercase_min_letters cased letters (fewer are left to the numeric and one-word rules)
    uppercase_max_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    uppercase_min_letters: int = Field(default=2, ge=1)
    single_word_max: int = Field(default=1, ge=0)  # lines with at most this many words go
    short_line_words: int = Field(default=10, ge=1)  # nav patterns apply to lines under this
    max_removed_word_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    counter_words: list[str] = Field(default_factory=lambda: list(DEFAULT_COUNTER_WORDS))
    # English patterns apply to every document; a language with its own list adds it
    nav_patterns: dict[str, list[str]] = Field(
        default_factory=lambda: {lang: list(patterns) for lang, patterns in DEFAULT_NAV_PATTERNS.items()})
    nav_action: Literal["line", "phrase"] = "line"  # drop the whole short line, or only the match

    @field_validator("counter_words")
    @classmethod
    def _counter_regexes(cls, value: list[str]) -> list[str]:
        for word in value:
            _compile(word, "counter_words")
        return value

    @field_validator("nav_patterns")
    @classmethod
    def _nav_regexes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for language, patterns in value.items():
            if not (2 <= len(language) <= 3 and language.isalpha() and language.islower()):
                raise ValueError(f"not an ISO 639 language code: {language!r}")
            for pattern in patterns:
                _compile(pattern, f"nav_patterns.{language}")
        return value


def _compile(pattern: str, where: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as err:
        raise ValueError(f"{where}: bad regular expression {pattern!r}: {err}") from None


_TOTALS = ("docs_corrected", "lines_modified", "words_removed", "words_removed_kept_docs", "words_seen")

_ALNUM = re.compile(r"[^\W_]")  # a word is a whitespace token holding a letter or a digit
_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")
_LEAD = re.compile(r"^[^\w©]+")  # bullets, dashes, quotes before the text: "- Read more"


def count_words(line: str) -> int:
    return sum(1 for token in line.split() if _ALNUM.search(token))


@dataclass
class Correction:
    text: str
    words_total: int
    words_removed: int
    lines_removed: Counter = field(default_factory=Counter)
    lines_modified: int = 0  # nav_action "phrase": lines that lost a phrase and stayed


class LineCorrector:
    """The rules compiled from a config; pure functions of a line and the document's language."""

    def __init__(self, config: LineFilterConfig):
        self.config = config
        self.rules = frozenset(config.rules)
        number, words = r"\d[\d.,]*\s*[kmb]?\+?", "|".join(f"(?:{w})" for w in config.counter_words)
        self._counter = re.compile(rf"^[\W_]*(?:{number}\s*(?:{words})|(?:{words})[\W_]*{number})[\W_]*$",
                                   re.IGNORECASE)
        self._nav_sources = {lang: [_compile(p, lang) for p in pats] for lang, pats in config.nav_patterns.items()}
        self._nav: dict[str, tuple[re.Pattern, ...]] = {}

    def nav_patterns(self, language: str) -> tuple[re.Pattern, ...]:
        if language not in self._nav:
            own = self._nav_sources.get(language, []) if language != "en" else []
            self._nav[language] = (*self._nav_sources.get("en", []), *own)
        return self._nav[language]

    def rule(self, line: str, language: str = "en", words: int | None = None) -> str | None:
        """The first rule that removes `line` (stripped, non-blank), or None to keep it."""
        words = count_words(line) if words is None else words
        rules = self.rules
        if NUMERIC in rules and _DIGIT.search(line) and not _LETTER.search(line):
            return NUMERIC
        if COUNTER in rules and words <= 6 and self._counter.match(line):
            return COUNTER
        if SINGLE_WORD in rules and words <= self.config.single_word_max:
            return SINGLE_WORD
        if UPPERCASE in rules:
            upper = sum(map(str.isupper, line))
            if upper:
                cased = upper + sum(map(str.islower, line))
                if cased >= self.config.uppercase_min_letters and upper > self.config.uppercase_max_fraction * cased:
                    return UPPERCASE
        if NAV in rules and words < self.config.short_line_words:
            body = _LEAD.sub("", line)
            if any(p.search(body) for p in self.nav_patterns(language)):
                return NAV
        return None

    def _strip_phrases(self, line: str, language: str) -> str:
        body = _LEAD.sub("", line)
        for pattern in self.nav_patterns(language):
            body = pattern.sub("", body)
        return " ".join(body.split())

    def correct(self, text: str, language: str = "en") -> Correction:
        out: list[str] = []
        result = Correction(text=text, words_total=0, words_removed=0)
        phrase_mode = self.config.nav_action == "phrase"
        for raw in text.split("\n"):
            line = raw.strip()
            if not line:
                if out and out[-1].strip():  # one blank line between paragraphs at most
                    out.append(raw)
                continue
            words = count_words(line)
            result.words_total += words
            rule = self.rule(line, language, words)
            if rule == NAV and phrase_mode:
                kept = self._strip_phrases(line, language)
                kept_words = count_words(kept)
                if kept_words:
                    result.words_removed += words - kept_words
                    result.lines_modified += 1
                    out.append(kept)
                    continue
            if rule is None:
                out.append(raw)
            else:
                result.lines_removed[rule] += 1
                result.words_removed += words
        if result.lines_removed or result.lines_modified:
            result.text = "\n".join(out).strip()
        return result


class LineFilter(Stage):
    name: ClassVar[str] = "line_filter"
    reasons: ClassVar[tuple[str, ...]] = (TOO_MANY_LINES_REMOVED, EMPTY_AFTER_CORRECTIONS)
    Config = LineFilterConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._lines_removed: Counter = Counter({rule: 0 for rule in RULES})
        self._totals: Counter = Counter(dict.fromkeys(_TOTALS, 0))

    def setup(self) -> None:
        self.corrector = LineCorrector(self.config)

    def process_doc(self, doc: Document) -> Document | Drop:
        fix = self.corrector.correct(doc.text, doc.language or "en")
        self._lines_removed.update(fix.lines_removed)
        self._totals.update(words_seen=fix.words_total, words_removed=fix.words_removed,
                            lines_modified=fix.lines_modified)
        if not fix.text:
            return Drop(doc, EMPTY_AFTER_CORRECTIONS)  # the dropped document keeps its text
        if fix.words_removed > self.config.max_removed_word_fraction * fix.words_total:
            return Drop(doc, TOO_MANY_LINES_REMOVED)
        if fix.lines_removed or fix.lines_modified:
            self._totals["docs_corrected"] += 1
            self._totals["words_removed_kept_docs"] += fix.words_removed
        doc.text = fix.text
        return doc

    def extra_stats(self) -> dict:
        return {"lines_removed": dict(self._lines_removed), **{k: int(v) for k, v in sorted(self._totals.items())}}
