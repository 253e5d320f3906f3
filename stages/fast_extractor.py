"""refinery's fast main-text extractor (`extract.extractor: fast`), used by stages/html_extract.py.

resiliparse parses the page and does the text conversion in C; this module only decides what to skip
and which output lines to keep. Each rule was measured with benchmarks/extraction_quality.py:

1. Article container. The first element, in selector order, that matches a common article marker
   (schema.org articleBody, entry-content, article, main, ...) and holds at least 30% of the page's
   text becomes the container; everything beside it and its ancestors is skipped.
2. Boilerplate elements. nav/aside/footer/figure/form and elements whose class or id names a
   boilerplate part (related, comment, newsletter, caption, author, ...) are skipped, but never the
   container or its ancestors. If the class rules cost more than 35% of the text, the page is kept
   without them: a page-wide wrapper class such as "has-sidebar" must not cost the article.
3. Block rules, in the spirit of jusText's context-sensitive classification, on resiliparse's
   minimal-HTML lines: a line is bad (over 30% link text, or a short credit or caption line), good (10 or more words,
   or 5 ending like a sentence), a heading, a list item or short. Good lines stay; short lines stay
   only between good ones, list items next to one, headings only before one.

All selection goes through CSS (`query_selector`, `skip_elements`) and attributes set on a handful of
nodes: indexing a resiliparse node collection costs time in proportion to the whole document.
"""

from __future__ import annotations

import html as html_entities
import re


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
MIN_KEPT_BY_NAME_RULES = 0.65
MAX_LINK_SHARE = 0.3
GOOD_WORDS = 10

CONTAINER, ON_PATH = "data-refinery-container", "data-refinery-path"
_OUTSIDE = f":not([{ON_PATH}]):not([{CONTAINER}])"
_ANY_ARTICLE = ", ".join(ARTICLE_SELECTORS)
_BESIDE_CONTAINER = f"[{ON_PATH}] > {_OUTSIDE}"
_TAG_SKIPS = [tag + _OUTSIDE for tag in BOILERPLATE_TAGS]
_NAME_SKIPS = [f"[class*={name} i]{_OUTSIDE}, [id*={name} i]{_OUTSIDE}" for name in BOILERPLATE_NAMES]

_TAG = re.compile(r"<[^>]+>")
_LINK = re.compile(r"<a\b[^>]*>(.*?)</a>", re.S)
_SENTENCE_END = re.compile(r"[.!?:;\"”»。！？…)]$")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_CREDIT = re.compile(r"^(©|\(c\)|copyright\b|fotos?\b|bild\b|photo\b|image\b|credits?\b|quelle\b|source\b"
                     r"|abbildung\b|abb\.|fig\.|figure\b)", re.I)  # credits and captions outside <figure>
_MAX_CREDIT_WORDS = 15


def extract_fast(html: str) -> str:
    """Main text of one page, lines joined by newlines; "" when the page has no body."""
    from resiliparse.parse.html import HTMLTree  # here, so that listing the stages loads no parser

    try:
        tree = HTMLTree.parse(html)
    except UnicodeEncodeError:  # lone surrogates from a broken decode: replace them, as a browser would
        tree = HTMLTree.parse(html.encode("utf-8", "replace").decode("utf-8"))
    body = tree.body
    if body is None:
        return ""
    skips = []
    if _mark_container(body):
        skips.append(_BESIDE_CONTAINER)
    skips += _TAG_SKIPS
    text = _keep_lines(_minimal_html(tree, skips + _NAME_SKIPS))
    without_name_rules = _keep_lines(_minimal_html(tree, skips))
    if len(text) < MIN_KEPT_BY_NAME_RULES * len(without_name_rules):
        return without_name_rules
    return text


def _mark_container(body) -> bool:
    """Marks the article container and its ancestors; False when the page has none."""
    if body.query_selector(_ANY_ARTICLE) is None:  # one pass over the page instead of one per selector
        return False
    min_chars = max(MIN_CONTAINER_CHARS, MIN_CONTAINER_SHARE * len(body.text or ""))
    for selector in ARTICLE_SELECTORS:
        element = body.query_selector(selector)
        if element is not None and len(element.text or "") >= min_chars:
            element.setattr(CONTAINER, "")
            parent = element.parent
            while parent is not None and parent.tag not in ("html", "#document"):
                parent.setattr(ON_PATH, "")
                parent = parent.parent
            return True
    return False


def _minimal_html(tree, skips: list[str]) -> str:
    from resiliparse.extract.html2text import extract_plain_text

    return extract_plain_text(tree, preserve_formatting="minimal_html", main_content=True, alt_texts=False,
                              links=True, list_bullets=True, comments=False, skip_elements=skips) or ""


def _keep_lines(minimal_html: str) -> str:
    blocks = [block for line in minimal_html.split("\n") if (block := _classify(line)) is not None]
    kinds = [kind for _, kind in blocks]
    before = _nearest_decided(kinds)
    after = _nearest_decided(kinds[::-1])[::-1]
    kept = []
    for (text, kind), previous, following in zip(blocks, before, after):
        if kind == "good":
            kept.append(text)
        elif kind == "short" and previous == "good" == following:
            kept.append(text)
        elif kind == "item" and "good" in (previous, following):
            kept.append(text)
        elif kind == "heading" and following == "good":
            kept.append(text)
    return "\n".join(kept)


def _nearest_decided(kinds: list[str]) -> list[str | None]:
    """For each line, the kind of the nearest good or bad line before it (None if there is none).
    One pass, so a page of many short lines costs linear time."""
    nearest, last = [], None
    for kind in kinds:
        nearest.append(last)
        if kind in ("good", "bad"):
            last = kind
    return nearest


def _classify(line: str) -> tuple[str, str] | None:
    text = html_entities.unescape(_TAG.sub("", line)).strip()
    if not text:
        return None
    link_chars = sum(len(html_entities.unescape(_TAG.sub("", link))) for link in _LINK.findall(line))
    words = len(text.split())
    if link_chars > MAX_LINK_SHARE * len(text) or (words < _MAX_CREDIT_WORDS and _CREDIT.match(text)):
        return text, "bad"
    markup = line.lstrip()
    if markup.startswith("<h"):
        return text, "heading"
    size = max(words, len(_CJK.findall(text)) // 2)  # CJK has no spaces; two characters count as a word
    if size >= GOOD_WORDS or (size >= GOOD_WORDS // 2 and _SENTENCE_END.search(text)):
        return text, "good"
    return text, "item" if markup.startswith("<li") or "\t" in text else "short"
