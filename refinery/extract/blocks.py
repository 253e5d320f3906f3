"""A page as text blocks with cheap features, for the learned block classifier (``extractor: fast``).

resiliparse parses the page and converts it to text in C, in two passes over the same tree:

- the blocks: resiliparse's main-content text (its own boilerplate heuristics), one per line;
- the rules: the page without nav/aside/footer/figure/form, without whatever stands beside the
  page's article container (schema.org articleBody, entry-content, article, main, ...), and
  without elements whose class or id names a boilerplate part (comment, related, share, ...).

Whether the rules pass keeps a block carries the DOM's evidence (tag path, class and id names)
into its features without a Python walk over the tree, which would cost more than the whole
extraction (about 5 us a node). The rest of a block's
features come from its own text and markup (heading, list item, paragraph; length, link share,
stop-word and punctuation shares), its position, and its neighbours' (Web2Text's and jusText's
context, BoilerNet's sequence view). Every feature is a small integer, so a page is a few numpy
arrays and a model is one weight table per feature template (refinery/extract/model.py).
"""

from __future__ import annotations

import html as html_entities
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

ARTICLE_SELECTORS = (
    "[itemprop=articleBody]", "[class*=entry-content]", "[class*=post-content]", "[class*=article-body]",
    "[class*=article__body]", "[class*=articleBody]", "[class*=article-content]", "[class*=story-body]",
    "[class*=post-body]", "[class*=story-content]", "[class*=blog-content]", "[class*=post-entry]",
    "[class*=main-content]", "article", "main", "[role=main]", "#content", "[id*=content]",
)
MIN_CONTAINER_SHARE = 0.3
MIN_CONTAINER_CHARS = 200
BOILERPLATE_TAGS = ("nav", "aside", "footer", "figure", "form", "[role=navigation]", "[role=complementary]",
                    "[role=contentinfo]")
BOILERPLATE_NAMES = (
    "related", "share", "sharing", "social", "comment", "newsletter", "subscribe", "sidebar", "widget",
    "breadcrumb", "tags", "promo", "advert", "cookie", "paywall", "caption", "credit", "author", "byline",
    "teaser", "recommend", "popular", "footer", "menu", "banner", "recirc", "readmore", "read-more", "outbrain",
    "taboola", "disqus", "rating", "print", "toolbar", "pagination", "pager", "copyright", "disclaimer",
    "infobox", "signup", "login", "donate", "follow", "gallery", "carousel",
)
CONTAINER, ON_PATH = "data-refinery-container", "data-refinery-path"
_OUTSIDE = f":not([{ON_PATH}]):not([{CONTAINER}])"
_ANY_ARTICLE = ", ".join(ARTICLE_SELECTORS)
_ARTICLE_GROUPS = [(", ".join(group), group) for group in (ARTICLE_SELECTORS[:6], ARTICLE_SELECTORS[6:13],
                                                            ARTICLE_SELECTORS[13:])]
_BESIDE_CONTAINER = f"[{ON_PATH}] > {_OUTSIDE}"
_TAG_SKIPS = [tag + _OUTSIDE for tag in BOILERPLATE_TAGS]
# Class names for all; ids for three only: every selector costs a check of each element, and ids for
# all the names bought nothing under site cross-validation (0.07 / 0.17 points) for 17% of the time.
ID_NAMES = ("comment", "sidebar", "footer")
_NAME_SKIPS = ([f"[class*={name} i]{_OUTSIDE}" for name in BOILERPLATE_NAMES]
               + [f"[id*={name} i]{_OUTSIDE}" for name in ID_NAMES])

_TAG = re.compile(r"<[^>]+>")
_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>", re.DOTALL)
_SENTENCE_END = frozenset('.!?"”»。！？…)')
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_DATE = re.compile(r"\b\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b|\b\d{1,2}\.? (jan|feb|mär|mar|apr|mai|may|jun|jul|aug|sep|okt|oct|nov|dez|dec)", re.IGNORECASE)
_CREDIT = re.compile(r"^(©|\(c\)|copyright\b|fotos?\b|bild\b|photo\b|image\b|credits?\b|quelle\b|source\b"
                     r"|abbildung\b|abb\.|fig\.|figure\b)", re.IGNORECASE)
_WORD = re.compile(r"\w+")
STOPLIST_LANGUAGES = ("English", "German", "French", "Spanish", "Italian", "Dutch", "Portuguese", "Polish",
                      "Russian", "Czech", "Swedish", "Danish", "Turkish")


@lru_cache(maxsize=1)
def stop_words() -> frozenset[str]:
    """jusText's stop-word lists of the crawl's commonest languages, as one set."""
    import justext

    return frozenset(word for language in STOPLIST_LANGUAGES for word in justext.get_stoplist(language))


# Markup that opens a line of resiliparse's minimal HTML, as a block kind.
KINDS = ("text", "p", "heading", "item", "pre", "quote", "link", "other")
_KIND_OF_TAG = {"p": 1, "h1": 2, "h2": 2, "h3": 2, "h4": 2, "h5": 2, "h6": 2, "li": 3, "pre": 4,
                "blockquote": 5, "a": 6}
_OPENING = re.compile(r"<([a-zA-Z][a-zA-Z0-9]*)")


@dataclass
class Page:
    """The blocks of one page, in order, with what the features need."""

    texts: list[str]
    kind: np.ndarray  # index into KINDS
    words: np.ndarray
    chars: np.ndarray
    link_chars: np.ndarray
    stop: np.ndarray  # stop words among the words
    digits: np.ndarray
    upper: np.ndarray
    punct: np.ndarray  # characters that are neither letters, digits nor spaces
    sentence_end: np.ndarray
    credit: np.ndarray
    date: np.ndarray
    separators: np.ndarray  # "|", "»", "·" and the like: menus and breadcrumbs
    rules: np.ndarray  # kept by the rules pass
    has_container: bool

    def __len__(self) -> int:
        return len(self.texts)

    def kept_text(self, keep) -> str:
        """The kept blocks, one a line."""
        return "\n".join(text for text, kept in zip(self.texts, keep) if kept)


def parse_page(html: str) -> Page | None:
    """The blocks of a page; None when it has no body."""
    from resiliparse.parse.html import HTMLTree  # here, so that listing the stages loads no parser

    try:
        tree = HTMLTree.parse(html)
    except UnicodeEncodeError:  # lone surrogates from a broken decode: replace them, as a browser would
        tree = HTMLTree.parse(html.encode("utf-8", "replace").decode("utf-8"))
    body = tree.body
    if body is None:
        return None
    lines = _lines(_minimal_html(tree, None))
    has_container = _mark_container(body, sum(len(text) for _, text in lines))
    skips = ([_BESIDE_CONTAINER] if has_container else []) + _TAG_SKIPS + _NAME_SKIPS
    return _page(lines, _kept(lines, _minimal_html(tree, skips)), has_container)


def _minimal_html(tree, skips: list[str] | None) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(tree, preserve_formatting="minimal_html", main_content=True, alt_texts=False,
                              links=True, list_bullets=True, comments=False, skip_elements=skips) or ""


def _lines(minimal_html: str) -> list[tuple[str, str]]:
    """(markup, text) of each line that has text."""
    out = []
    for line in minimal_html.split("\n"):
        if not line.strip():
            continue
        text = html_entities.unescape(_TAG.sub("", line)).strip() if "<" in line or "&" in line else line.strip()
        if text:
            out.append((line, text))
    return out


def _kept(lines: list[tuple[str, str]], other_pass: str) -> np.ndarray:
    """Which of ``lines`` another pass's minimal HTML has too, markup and all (as a multiset: a
    repeated line counts each time)."""
    left = Counter(line.strip() for line in other_pass.split("\n"))
    kept = np.zeros(len(lines), dtype=np.int8)
    for i, (markup, _) in enumerate(lines):
        markup = markup.strip()
        if left[markup] > 0:
            left[markup] -= 1
            kept[i] = 1
    return kept


def _mark_container(body, text_chars: int) -> bool:
    """Marks the article container and its ancestors; False when the page has none. The container
    is the first selector's element, in ARTICLE_SELECTORS order, holding at least 30% of the page's
    main-content text (``text_chars``)."""
    if body.query_selector(_ANY_ARTICLE) is None:  # one pass over the page instead of one per selector
        return False
    min_chars = max(MIN_CONTAINER_CHARS, MIN_CONTAINER_SHARE * text_chars)
    for group, selectors in _ARTICLE_GROUPS:
        if body.query_selector(group) is None:  # none of this group's selectors matches: skip them
            continue
        for selector in selectors:
            element = body.query_selector(selector)
            if element is not None and len(element.text or "") >= min_chars:
                element.setattr(CONTAINER, "")
                parent = element.parent
                while parent is not None and parent.tag not in ("html", "#document"):
                    parent.setattr(ON_PATH, "")
                    parent = parent.parent
                return True
    return False


def _char_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digit, capital and letter-or-digit flags for the first 0x250 code points (Latin scripts);
    above that every character counts as a letter, except general and CJK punctuation."""
    size = 0x250
    digit = np.array([chr(c).isdigit() for c in range(size)], dtype=np.int32)
    upper = np.array([chr(c).isupper() for c in range(size)], dtype=np.int32)
    alnum = np.array([chr(c).isalnum() for c in range(size)], dtype=np.int32)
    return digit, upper, alnum


_DIGIT, _UPPER, _ALNUM = _char_tables()
_SEPARATORS = np.array([ord(c) for c in "|»·•›"], dtype=np.uint32)


def _char_counts(texts: list[str]) -> tuple[np.ndarray, ...]:
    """Per text: digits, capitals, letters or digits, separators; counted for all texts at once."""
    codes = np.frombuffer("\n".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    low = np.minimum(codes, len(_ALNUM) - 1)
    high = codes >= len(_ALNUM)
    punctuation = ((codes >= 0x2000) & (codes < 0x2070)) | ((codes >= 0x3000) & (codes < 0x3040))
    alnum = np.where(high, ~punctuation, _ALNUM[low]).astype(np.int32)
    digit = np.where(high, 0, _DIGIT[low])
    upper = np.where(high, 0, _UPPER[low])
    separators = np.zeros(len(codes), dtype=np.int32)
    for separator in _SEPARATORS:
        separators += codes == separator
    return tuple(np.add.reduceat(values, starts) for values in (digit, upper, alnum, separators))


def _page(lines: list[tuple[str, str]], rules: np.ndarray, has_container: bool) -> Page:
    texts = [text for _, text in lines]
    n = len(lines)
    columns = np.zeros((8, n), dtype=np.int32)
    stops = stop_words()
    for i, (markup, text) in enumerate(lines):
        opening = _OPENING.match(markup.lstrip())
        kind = _KIND_OF_TAG.get(opening.group(1).lower(), 7) if opening else 0
        words = _WORD.findall(text.lower())
        word_count = len(words)
        if word_count * 12 < len(text):  # few spaces: CJK has none, two characters count as a word
            word_count = max(word_count, len(_CJK.findall(text)) // 2)
        link_chars = min(sum(len(_TAG.sub("", link)) for link in _LINK.findall(markup)), len(text)) \
            if "<a" in markup else 0
        if kind == 6 and link_chars < len(text):  # opens with a link but holds more: plain text
            kind = 0
        columns[:, i] = (
            kind, word_count, link_chars, sum(map(stops.__contains__, words)),
            text.count(" "), text[-1] in _SENTENCE_END,
            (word_count < 15 and _CREDIT.match(text) is not None) or "©" in text,
            word_count < 20 and _DATE.search(text) is not None,  # a dateline, not a date in a paragraph
        )
    kind, words, link_chars, stop, spaces, sentence_end, credit, date = columns
    chars = np.array([len(t) for t in texts], dtype=np.int32)
    if n:
        digits, upper, alnum, separators = _char_counts(texts)
    else:
        digits = upper = alnum = separators = np.zeros(0, dtype=np.int32)
    return Page(texts, kind=kind, words=words, chars=chars, link_chars=link_chars, stop=stop, digits=digits,
                upper=upper, punct=np.maximum(chars - alnum - spaces, 0), sentence_end=sentence_end, credit=credit,
                date=date, separators=separators, rules=rules, has_container=has_container)
