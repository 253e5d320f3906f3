"""refinery's fast main-text extractor (`extract.extractor: fast`), used by stages/html_extract.py.

resiliparse parses the page and converts it to text blocks in C (refinery/extract/blocks.py); a
logistic model over cheap block features (refinery/extract/model.py, shipped as
refinery/models/fast_blocks.json) keeps each block whose probability of being main text reaches
the model's threshold. The model is trained by benchmarks/train_extractor.py on trafilatura's
evaluation set; docs/EXTRACTION.md has its provenance and its site-held-out scores.

`extract.extractor: union` keeps a block when the model or trafilatura keeps it, and runs
trafilatura only on pages where the model is unsure: where blocks whose probability lies inside
``band`` hold at least ``unsure_share`` of the page's text.
"""

from __future__ import annotations

from refinery.text import collapse_spaces

MIN_SUBSTRING_CHARS = 40  # a shorter block must be a whole line of trafilatura's text to count as kept by it


def scored_blocks(html: str):
    """(page, each block's probability of being main text, the model's threshold); None when
    the page has no body or no text."""
    from refinery.extract.blocks import parse_page
    from refinery.extract.model import load_model

    page = parse_page(html)
    if page is None or not len(page):
        return None
    model = load_model()
    return page, model.probabilities(page), model.threshold


def extract_fast(html: str) -> str:
    """Main text of one page, blocks joined by newlines; "" when the page has no body."""
    scored = scored_blocks(html)
    if scored is None:
        return ""
    page, probabilities, threshold = scored
    return page.kept_text(probabilities >= threshold)


def extract_union(html: str, url: str, favor_precision: bool, include_tables: bool, include_comments: bool,
                  band: tuple[float, float], unsure_share: float) -> str:
    """The learned model's blocks, plus trafilatura's on pages where the model is unsure."""
    scored = scored_blocks(html)
    if scored is None:
        return ""
    page, probabilities, threshold = scored
    keep = probabilities >= threshold
    if is_unsure(page.chars, probabilities, band, unsure_share):
        keep |= kept_by(page.texts, trafilatura_text(html, url, favor_precision, include_tables, include_comments))
    return page.kept_text(keep)


def kept_by(texts: list[str], theirs: str):
    """Which blocks another extractor's text keeps: a whole line of it, or (40 characters or
    more) a part of it, after whitespace is normalised."""
    import numpy as np

    lines = {collapse_spaces(line) for line in theirs.splitlines()}
    whole = collapse_spaces(theirs)
    mine = [collapse_spaces(text) for text in texts]
    return np.array([m in lines or (len(m) >= MIN_SUBSTRING_CHARS and m in whole) for m in mine], dtype=bool)


def is_unsure(chars, probabilities, band: tuple[float, float], unsure_share: float) -> bool:
    """Blocks with a probability inside ``band`` hold at least ``unsure_share`` of the page's text."""
    unsure = (probabilities >= band[0]) & (probabilities <= band[1])
    return chars[unsure].sum() >= unsure_share * max(int(chars.sum()), 1)


def trafilatura_text(html: str, url: str, favor_precision: bool, include_tables: bool, include_comments: bool) -> str:
    """trafilatura's main text; deduplicate off (its cache spans documents: output would depend on order)."""
    import trafilatura

    return trafilatura.extract(html, url=url or None, favor_precision=favor_precision, include_comments=include_comments,
                               include_tables=include_tables, deduplicate=False, with_metadata=False) or ""
