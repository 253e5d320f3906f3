"""Word splitting and stop words for the Gopher filters.

`split_words` reproduces the spaCy blank-language tokenizer that datatrove's Gopher filters
use (split on whitespace, peel prefixes and suffixes, keep URLs and special cases whole, split
on infixes) with the same rules written as a few `re` patterns, and without spaCy's cost
(~0.5 ms instead of ~10 ms for a 5 KB page). docs/FILTERS.md, "Word splitting", lists where it
differs and the measured verdict parity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
import unicodedata
from functools import lru_cache

# Gopher's list (Rae et al. 2021, appendix A) and, for the other RefinedWeb-Europe languages,
# the same words translated: the article's common forms, "be" (with its third-person present,
# the form running text uses), "to", "of", "and", "that", "have", "with". Where a language has
# no article or no "of" (pl, cs), its most frequent prepositions in the Leipzig Wortschatz web
# sentences stand in. Romanian "și" is listed in both spellings (comma and cedilla). Matching is
# case-sensitive, as in Gopher and datatrove.
STOP_WORDS: dict[str, frozenset[str]] = {lang: frozenset(words.split()) for lang, words in {
    "en": "the be to of and that have with",
    "de": "der die das sein ist zu von und dass haben mit",
    "es": "el la los ser es a de y que haber con",
    "fr": "le la les être est à de et que avoir avec",
    "it": "il la essere è a di e che avere con",
    "pt": "o a os ser é para de e que ter com",
    "pl": "być jest do w i że mieć z na",
    "nl": "de het zijn is te van en dat hebben met",
    "ro": "fi este la de și şi că avea cu în",
    "cs": "být je do v a že mít s na",
    "sv": "den det vara är att till av och som ha med",
}.items()}


def stop_words(language: str) -> frozenset[str] | None:
    """The stop words of `language` (ISO 639-1), or None where refinery has no list for it."""
    return STOP_WORDS.get(language)


# Characters that do not make a word (datatrove.utils.text.PUNCTUATION_SET): ASCII and CJK
# punctuation, C0/C1 control characters (tab, newline and space excepted), and the sentence
# terminators of every script. A token made only of these is a symbol, not a word.
PUNCTUATION = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(map(chr, (*range(0, 9), 11, 12, *range(13, 32), *range(127, 160))))
    + "\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965"
    "\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809"
    "\u1944\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e"
    "\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\ua4ff\ua60e\ua60f\ua6f3\ua6f7"
    "\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56"
    "\ufe57\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86"
    "\U00010f87\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1"
    "\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238"
    "\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9"
    "\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2"
    "\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d"
    "\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42"
    "\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38"
    "\U00016b44\U00016e98\U0001bc9f\U0001da88"
)


def is_word(token: str) -> bool:
    """True when `token` has a character that is not punctuation (Gopher counts only these)."""
    return bool(token.strip(PUNCTUATION))


# ---- spaCy's character classes and affix rules (spacy/lang/char_classes.py, punctuation.py)

def _char_class(predicate, ranges=((0, 0x10000),)) -> str:
    """A regex character-class body holding every code point that satisfies `predicate`."""
    parts = []
    for lo, hi in ranges:
        start = None
        for code in range(lo, hi + 1):
            if code < hi and predicate(chr(code)):
                start = code if start is None else start
            elif start is not None:
                parts.append(re.escape(chr(start)) + (f"-{re.escape(chr(code - 1))}" if code - 1 > start else ""))
                start = None
    return "".join(parts)


# Letters: what str.isalpha accepts (but not ª µ º), plus, as in spaCy, the whole blocks of
# the uncased scripts (CJK with its punctuation, Indic scripts with their marks and digits, ...).
_UNCASED = (
    r"\u1200-\u137F\u0980-\u09FF\u0591-\u05F4\uFB1D-\uFB4F\u0620-\u064A\u066E-\u06D5\u06E5-\u06FF"
    r"\u0750-\u077F\u08A0-\u08BD\uFB50-\uFBB1\uFBD3-\uFD3D\uFD50-\uFDC7\uFDF0-\uFDFB\uFE70-\uFEFC"
    r"\U0001EE00-\U0001EEBB\u0D80-\u0DFF\u0900-\u097F\u0C80-\u0CFF\u0B80-\u0BFF\u0C00-\u0C7F\uAC00-\uD7AF"
    r"\u1100-\u11FF\u3040-\u309F\u30A0-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\U00020000-\U0002EBEF\u2E80-\u2FDF"
    r"\u2FF0-\u303F\u31C0-\u31EF\u3200-\u33FF\uF900-\uFAFF\uFE30-\uFE4F\U0001F200-\U0001F2FF"
    r"\U0002F800-\U0002FA1F"
)
_P = re.escape("…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪")
_Q = re.escape("'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉\u2329\u232a⟦⟧")
_CURRENCY = r"[$£€¥฿₽﷼\u20a0-\u20bf]|US\$|C\$|A\$"
_UNITS = "|".join(map(re.escape, (
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz "
    "m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb TB T G M K %").split()))


@dataclass(frozen=True)
class _Patterns:
    alpha: str
    prefix: re.Pattern
    suffix: str  # with "{digit}" to fill per language
    infix: str
    hyphen_infix: str
    url: re.Pattern


@lru_cache(maxsize=None)
def _patterns() -> _Patterns:
    """The affix patterns, built on first use: the character classes test every code point (70 ms),
    which a process that only normalises or extracts text (the extractor's sandbox) never needs."""
    alpha = _char_class(lambda c: c.isalpha() and c not in "ªµº") + _UNCASED
    lower = _char_class(lambda c: c.isalpha() and not c.isupper() and c not in "ªµº") + _UNCASED
    upper = _char_class(lambda c: c.isalpha() and not c.islower() and c not in "ªµº") + _UNCASED
    icons = _char_class(lambda c: unicodedata.category(c) == "So", ((0, 0x10000), (0x1F000, 0x1FB00)))
    return _Patterns(
        alpha=alpha,
        prefix=re.compile(rf"[§%=—–{_P}{_Q}{icons}]|\+(?![0-9])|\.\.+|{_CURRENCY}"),
        # {digit}: whether "." after a digit is split off ("1." is one token in German)
        suffix=(rf"(?:[{_P}{_Q}{icons}—–]|……|\.\.+|['’][sS]|(?<=[0-9])\+|(?<=°[FfCcKk])\.|(?<=[0-9])(?:{_CURRENCY})"
                rf"|(?<=[0-9])(?:{_UNITS})|(?<=[{{digit}}{lower}%²\-+{_P}|(?:){_Q}])\.|(?<=[{upper}][{upper}])\.)$"),
        hyphen_infix=rf"|(?<=[{alpha}0-9])(?:-|–|—|--|---|——|~)(?=[{alpha}])",
        infix=(rf"\.\.+|…|[{icons}]|(?<=[0-9])[+\-*^](?=[0-9-])|(?<=[{lower}{_Q}])\.(?=[{upper}{_Q}])"
               rf"|(?<=[{alpha}]),(?=[{alpha}])|(?<=[{alpha}0-9])[:<>=/](?=[{alpha}])"),
        # spaCy's URL_MATCH (after https://gist.github.com/dperini/729294): public IPv4 or host name.
        url=re.compile(
            r"(?:[\w+\-.]{2,}://)?(?:\S+(?::\S*)?@)?(?:"
            r"(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})"
            r"(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])"
            r"(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))|"
            r"(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\.)+"
            rf"[{lower}]{{2,63}})(?::\d{{2,5}})?(?:[/?#]\S*)?$"),
    )


# ---- special cases (spacy/lang/tokenizer_exceptions.py, en/); in the English lists "|" marks a split

_BASE_SPECIALS = r"""
:) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-) (; (-;
:( :-( :(( :-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ =| :| :-| ]= =[ :1 :P :-P :p
:-p :O :-O :o :-o :0 :-0 :() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D ;-D =D xD XD xDD
XDD 8D 8-D ^_^ ^__^ ^___^ >.< >.> <.< ._. ;_; -_- -__- v.v V.V v_v V_V o_o o_O O_o O_O 0_o o_0 0_0
o.O O.o O.O o.o 0.0 o.0 0.o @_@ <3 <33 <333 </3 (^_^) (-_-) (._.) (>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ (ಠ_ಠ)
¯\(ツ)/¯ (╯°□°）╯︵┻━┻ ><(((*> ' '' C++ \") <space> — \t \n
""".split() + [c + "." for c in "abcdefghijklmnopqrstuvwxyzäöü"]
_EN_SPECIALS = """
'S 's ‘S ‘s 're 'll ll and/or w/o 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am o'clock O'clock
lovin' Lovin' lovin Lovin havin' Havin' havin Havin 'em em 'nuff nuff 'd a.m. p.m. Mt. Ak. Ala. Apr.
Ariz. Ark. Aug. Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. Jul. Jun. Kan. Kans.
Ky. La. Mar. Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct. Okla.
Ore. Pa. S.C. Sep. Sept. Tenn. Va. Wash. Wis. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen.
Gov. i.e. I.e. I.E. Inc. Jr. Ltd. Md. Messrs. Mo. Mont. Mr. Mrs. Ms. Ph.D. Prof. Rep. Rev. Sen. St.
vs. v.s. y'|all y|all how|'d|'y How|'d|'y not|'ve not|ve Not|'ve Not|ve can|not Can|not gon|na Gon|na
got|ta Got|ta let|'s Let|'s c'm|on C'm|on
""".split()
# words that look like contractions but are not split ("its" is not "it|s", "ill" not "i|ll")
_EN_NOT_SPLIT = set("Ill ill Its its Hell hell Shell shell Shed shed were Were Well well Whore whore".split())


def _en_generated() -> list[str]:
    """spaCy's generated English contractions: pronouns, w-words, verbs with n't, times."""
    out: list[str] = []

    def add(bases: str, *endings: str) -> None:
        for base in bases.split():
            out.extend(f"{form}|{ending}" for form in (base, base.title()) for ending in endings)

    add("i", "'m", "m", "'m|a", "m|a")
    add("i you he she it we they who what when where why how there that this these those",
        "'ll", "ll", "'ll|'ve", "ll|ve", "'d", "d", "'d|'ve", "d|ve")
    add("i you we they", "'ve", "ve")
    add("who what when where why how there these those", "'ve", "ve")
    add("you we they who what when where why how there these those", "'re", "re")
    add("he she it who what when where why how there that this", "'s", "s")
    add("ca could do does did had may might must need ought sha should wo would",
        "n't", "nt", "n't|'ve", "nt|ve")
    add("could might must should would", "'ve", "ve")
    add("ai are is was were have has dare", "n't", "nt")
    for word in "doin goin nothin nuthin ol somethin".split():
        out += [word, word + "'", word.title(), word.title() + "'"]
    out += [f"{h}|{p}" for h in range(1, 13) for p in ("a.m.", "am", "p.m.", "pm")]
    return out


@lru_cache(maxsize=None)
def specials(language: str) -> dict[str, tuple[str, ...]]:
    """Strings tokenized by table, not by rule: emoticons, abbreviations, English contractions."""
    entries = [(entry,) for entry in _BASE_SPECIALS] + [("°", unit, ".") for unit in "CFKcfk"]
    if language == "en":
        entries += [tuple(entry.split("|")) for entry in _EN_SPECIALS + _en_generated()]
    table: dict[str, tuple[str, ...]] = {}
    for parts in entries:
        for form in (parts, tuple(part.replace("'", "’") for part in parts)):
            orth = "".join(form)
            if language != "en" or orth not in _EN_NOT_SPLIT:
                table[orth] = form
    return table


class _Rules:
    """The compiled rules for one language (spaCy's blank-language tokenizer settings)."""

    def __init__(self, language: str):
        self.specials = specials(language)
        patterns = _patterns()
        self.prefix, self.url = patterns.prefix, patterns.url
        # de, nl, sv, es and ro keep letter-hyphen-letter words whole ("E-Mail"); en, fr, it,
        # pt, cs and the rest split them, as spaCy's per-language infix lists do.
        hyphens = "" if language in ("de", "nl", "sv", "es", "ro") else patterns.hyphen_infix
        alpha = patterns.alpha
        elision = rf"|(?<=[{alpha}]['’])(?=[{alpha}])" if language in ("fr", "it") else ""
        self.infix = re.compile(patterns.infix + hyphens + elision)
        german = language == "de"  # German also splits off "/" and keeps ordinals ("1.") whole
        self.suffix = re.compile(("/$|" if german else "") + patterns.suffix.replace("{digit}", "" if german else "0-9"))
        # spaCy also merges runs of tokens that spell a special case split by the affix rules
        # ("z.B." -> "z" "." "B." -> "z." "B."): its Tokenizer._apply_special_cases.
        self.merges: dict[tuple[str, ...], tuple[str, ...]] = {}
        for orth, parts in self.specials.items():
            pieces = self._split_affixes(orth, {})
            if len(pieces) > 1 and pieces != parts:
                self.merges[pieces] = parts
        self.merge_starts = {pieces[0] for pieces in self.merges}
        self.longest_merge = max(map(len, self.merges))
        self.split = lru_cache(maxsize=1 << 16)(self._split_chunk)

    def _split_chunk(self, chunk: str) -> tuple[str, ...]:
        tokens = self._split_affixes(chunk, self.specials)
        if len(tokens) < 2 or not self.merge_starts.intersection(tokens):
            return tokens
        matches = [(i, j) for i in range(len(tokens)) if tokens[i] in self.merge_starts
                   for j in range(i + 1, min(i + self.longest_merge, len(tokens)) + 1)
                   if tokens[i:j] in self.merges]
        kept, seen = {}, set()
        for i, j in sorted(matches, key=lambda m: (m[0] - m[1], m[0])):  # longest, then first
            if i not in seen and j - 1 not in seen:
                kept[i] = j
            seen.update(range(i, j))
        out, i = [], 0
        while i < len(tokens):
            if i in kept:
                out.extend(self.merges[tokens[i:kept[i]]])
                i = kept[i]
            else:
                out.append(tokens[i])
                i += 1
        return tuple(out)

    def _split_affixes(self, chunk: str, specials: dict) -> tuple[str, ...]:
        """spaCy's Tokenizer._split_affixes and _attach_tokens for one whitespace-free chunk."""
        prefixes: list[str] = []
        suffixes: list[str] = []
        string, last = chunk, -1
        while string and len(string) != last and string not in specials:
            last = len(string)
            pre = self.prefix.match(string)
            pre_len = pre.end() if pre else 0
            if pre_len and string[pre_len:] in specials:
                prefixes.append(string[:pre_len])
                string = string[pre_len:]
                break
            rest = string[pre_len:]  # a new string, so that lookbehinds cannot see the prefix
            suf = self.suffix.search(rest)
            suf_len = len(rest) - suf.start() if suf else 0
            if suf_len and string[:-suf_len] in specials:
                suffixes.append(string[-suf_len:])
                string = string[:-suf_len]
                break
            if pre_len and suf_len and pre_len + suf_len <= len(string):
                prefixes.append(string[:pre_len])
                suffixes.append(string[-suf_len:])
                string = string[pre_len:-suf_len]
            elif pre_len:
                prefixes.append(string[:pre_len])
                string = string[pre_len:]
            elif suf_len:
                suffixes.append(string[-suf_len:])
                string = string[:-suf_len]
        tokens = prefixes
        if string in specials:
            tokens.extend(specials[string])
        elif string and self.url.match(string):
            tokens.append(string)
        elif string:
            start = 0
            for match in self.infix.finditer(string):
                if match.start() == 0:
                    continue
                if match.start() != start:
                    tokens.append(string[start:match.start()])
                if match.end() != match.start():
                    tokens.append(match.group())
                start = match.end()
            if string[start:]:
                tokens.append(string[start:])
        tokens.extend(reversed(suffixes))
        return tuple(tokens)


@lru_cache(maxsize=None)
def _rules(language: str) -> _Rules:
    return _Rules(language)


def split_words(text: str, language: str = "en") -> list[str]:
    """The words and punctuation tokens of `text`, as spaCy's blank `language` tokenizer splits them."""
    rules = _rules(language)
    specials, split = rules.specials, rules.split
    words: list[str] = []
    for chunk in text.split():
        if chunk.isalpha() and chunk not in specials:
            words.append(chunk)
        else:
            words.extend(split(chunk))
    return words


@lru_cache(maxsize=8)
def cached_words(text: str, language: str) -> tuple[str, ...]:
    """`split_words`, remembered for the last few texts, so that consecutive Gopher stages
    split a document once (the same `str` object hashes and compares at no cost)."""
    return tuple(split_words(text, language))


_STRIP_RE = re.compile(r"[^\w\s]|_")
_SPACES_RE = re.compile(r"\s+")


def collapse_spaces(text: str) -> str:
    """Every run of whitespace as one space, none at either end (how extraction snippets compare)."""
    return _SPACES_RE.sub(" ", text).strip()


def normalize(text: str) -> str:
    """RefinedWeb normalisation.

    The text is NFD-decomposed and lowercased. Punctuation, symbols, ``_`` and combining marks
    (accents) are removed rather than replaced by a space, so "don't" becomes "dont". Runs of
    whitespace become a single space, and leading and trailing whitespace is dropped.

    >>> normalize("  Héllo,   WORLD!\\n Ça va? ")
    'hello world ca va'
    """
    text = unicodedata.normalize("NFD", text).lower()
    return " ".join(_STRIP_RE.sub("", text).split())


# ---- sentences, as spaCy's `sentencizer` pipe splits a blank pipeline's tokens (datatrove's
# split_into_sentences): a sentence starts at the first token that is neither punctuation nor a
# sentence-final character after one that is sentence-final (spacy/pipeline/sentencizer.pyx)
SENTENCE_FINAL = frozenset(
    "!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？"
    "𐩖𐩗𑁇𑁈𑂾𑂿𑃀𑃁𑅁𑅂𑅃𑇅𑇆𑇍𑇞𑇟𑈸𑈹𑈻𑈼𑊩𑑋𑑌𑗂𑗃𑗉𑗊𑗋𑗌𑗍𑗎𑗏𑗐𑗑𑗒𑗓𑗔𑗕𑗖𑗗𑙁𑙂𑜼𑜽𑜾𑩂𑩃𑪛𑪜𑱁𑱂𖩮𖩯𖫵𖬷𖬸𖭄𛲟𝪈｡。")


def _is_punct(token: str) -> bool:
    """spaCy's lexical is_punct: every character of Unicode category P*."""
    import unicodedata

    return all(unicodedata.category(c).startswith("P") for c in token)


def count_sentences(text: str, language: str = "en", at_most: int | None = None) -> int:
    """How many sentences spaCy's sentencizer finds in ``text`` (0 for no tokens); counting
    stops at ``at_most``."""
    tokens = split_words(text, language)
    if not tokens:
        return 0
    count, seen_final = 1, False
    for token in tokens:
        final = token in SENTENCE_FINAL
        if seen_final and not final and not _is_punct(token):
            count += 1
            seen_final = False
            if at_most is not None and count >= at_most:
                return count
        elif final:
            seen_final = True
    return count
