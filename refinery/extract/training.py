"""Training the block classifier on trafilatura's evaluation set, and scoring it honestly.

A block is labelled by snippet containment: main text when a `with` snippet of its page falls in it
(or spans it), boilerplate when a `without` snippet does, and it is left out of training when
neither does or both do. Cross-validation is by site: every page of a registered domain is in the
same fold, so a site's template never appears in both the training and the test part.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from refinery.extract.blocks import Page, parse_page
from refinery.extract.model import BlockModel, design, fit, template_sizes
from refinery.text import collapse_spaces

FOLDS = 5
L2 = 1e-3
STEPS = 600
THRESHOLD = 0.5  # the logistic model's own even odds: not tuned on the evaluation pages


@lru_cache(maxsize=1)
def _domains():
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)  # the bundled suffix list: offline


def site_of(url: str) -> str:
    """The registered domain of a URL (www.zeit.de and blog.zeit.de are one site)."""
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    return _domains()(host).top_domain_under_public_suffix or host


def site_fold(site: str, folds: int = FOLDS) -> int:
    return zlib.crc32(site.encode()) % folds


def block_labels(page: Page, entry: dict) -> np.ndarray:
    """1 main text, 0 boilerplate, -1 unlabelled, for each block of ``page``."""
    norms = [collapse_spaces(text) for text in page.texts]
    starts = np.cumsum([0] + [len(t) + 1 for t in norms[:-1]]) if norms else np.zeros(0, dtype=np.int64)
    ends = starts + np.array([len(t) for t in norms], dtype=np.int64)
    joined = " ".join(norms)
    labels = np.full(len(norms), -1, dtype=np.int8)
    conflicted = np.zeros(len(norms), dtype=bool)
    for label, key in ((1, "with"), (0, "without")):
        for snippet in entry.get(key, []):
            snippet = collapse_spaces(snippet)
            at = joined.find(snippet) if snippet else -1
            if at < 0:
                continue
            spanned = (ends > at) & (starts < at + len(snippet))
            conflicted |= spanned & (labels >= 0) & (labels != label)
            labels[spanned] = label
    labels[conflicted] = -1
    return labels


@dataclass
class LabelledPage:
    url: str
    site: str
    page: Page | None
    rows: np.ndarray  # the design matrix: (blocks, templates)
    labels: np.ndarray


def labelled_pages(pages: list[tuple[str, str, dict]]) -> list[LabelledPage]:
    """(url, html, evaluation entry) -> parsed, featurised and labelled pages."""
    sizes = template_sizes()
    out = []
    for url, html, entry in pages:
        page = parse_page(html)
        if page is None or not len(page):
            out.append(LabelledPage(url, site_of(url), page, np.zeros((0, len(sizes)), dtype=np.int64),
                                    np.zeros(0, dtype=np.int8)))
            continue
        out.append(LabelledPage(url, site_of(url), page, design(page, sizes), block_labels(page, entry)))
    return out


def train_model(pages: list[LabelledPage], provenance: dict | None = None) -> BlockModel:
    """Logistic regression on every labelled block of ``pages`` (deterministic: same pages, same model)."""
    sizes = template_sizes()
    rows = np.concatenate([p.rows[p.labels >= 0] for p in pages])
    labels = np.concatenate([p.labels[p.labels >= 0] for p in pages]).astype(np.float64)
    weights, bias = fit(rows, labels, sum(sizes.values()), l2=L2, steps=STEPS)
    counts = {"pages": len(pages), "sites": len({p.site for p in pages}), "labelled_blocks": len(labels),
              "main_blocks": int(labels.sum()), "l2": L2, "steps": STEPS}
    return BlockModel(sizes, weights, bias, THRESHOLD, {**counts, **(provenance or {})})


def cross_validated(pages: list[LabelledPage], folds: int = FOLDS) -> list[np.ndarray]:
    """Each page's block probabilities from the model trained on the other folds' sites."""
    out: list[np.ndarray | None] = [None] * len(pages)
    fold_of = [site_fold(p.site, folds) for p in pages]
    for fold in range(folds):
        model = train_model([p for p, f in zip(pages, fold_of) if f != fold])
        for i, p in enumerate(pages):
            if fold_of[i] == fold:
                out[i] = model.probabilities(p.page) if p.page is not None and len(p.page) else np.zeros(0)
    return out


def fingerprint(pages: list[tuple[str, str, dict]]) -> str:
    """sha256 over the training pages' URLs, HTML and entries: what the model file says it saw."""
    digest = hashlib.sha256()
    for url, html, entry in pages:
        for part in (url, html, repr(sorted(entry.get("with", []))), repr(sorted(entry.get("without", [])))):
            digest.update(part.encode("utf-8", "surrogatepass"))
            digest.update(b"\0")
    return digest.hexdigest()
