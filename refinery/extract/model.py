"""The learned block classifier: logistic regression over one-hot feature templates.

Each template maps every block of a page to a small integer (its own features, a conjunction of
two or three, or a neighbour's); the model is one weight per (template, value) and a bias, so a
page is scored with a few numpy gathers, and the whole model is a few kilobytes
(refinery/models/fast_blocks.json, trained by benchmarks/train_extractor.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from refinery.extract.blocks import KINDS, Page

MODEL_PATH = Path(__file__).resolve().parents[1] / "models" / "fast_blocks.json"


def _bucket(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right").astype(np.int32)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    return part / np.maximum(whole, 1)


def _shifted(codes: np.ndarray, offset: int, none: int) -> np.ndarray:
    """Each block's neighbour ``offset`` blocks away (``none`` past either end)."""
    out = np.full_like(codes, none)
    if offset > 0:
        out[:-offset] = codes[offset:]
    else:
        out[-offset:] = codes[:offset]
    return out


def _window_count(flags: np.ndarray, radius: int) -> np.ndarray:
    """How many of the ``radius`` blocks on each side are flagged."""
    total = np.zeros(len(flags), dtype=np.int32)
    for offset in range(1, radius + 1):
        total += _shifted(flags, offset, 0) + _shifted(flags, -offset, 0)
    return total


def _distance(flags: np.ndarray, cap: int, reverse: bool) -> np.ndarray:
    """Blocks to the nearest flagged block before (or after) each, capped at ``cap`` (none: cap)."""
    n = len(flags)
    out = np.full(n, cap, dtype=np.int32)
    last = None
    order = range(n - 1, -1, -1) if reverse else range(n)
    for i in order:
        if last is not None:
            out[i] = min(abs(i - last), cap)
        if flags[i]:
            last = i
    return out


WORD_EDGES = (1, 2, 3, 5, 10, 20, 40, 80)
CHAR_EDGES = (10, 20, 40, 80, 160, 320, 640, 1280)
LINK_EDGES = (0.001, 0.1, 0.3, 0.6, 0.9)
STOP_EDGES = (0.001, 0.1, 0.2, 0.3, 0.4, 0.5)
DIGIT_EDGES = (0.001, 0.1, 0.3)
UPPER_EDGES = (0.001, 0.05, 0.15, 0.4)
PUNCT_EDGES = (0.001, 0.03, 0.08, 0.15, 0.3)
SHARE_EDGES = (0.2, 0.4, 0.6, 0.8)
LINES_EDGES = (5, 10, 20, 50, 100, 200)


def feature_codes(page: Page) -> dict[str, tuple[np.ndarray, int]]:
    """Template name -> (each block's value, how many values the template has)."""
    n = len(page)
    kind = page.kind
    words = _bucket(page.words, WORD_EDGES)
    chars = _bucket(page.chars, CHAR_EDGES)
    link = _bucket(_share(page.link_chars, page.chars), LINK_EDGES)
    stop = np.where(page.words > 0, _bucket(_share(page.stop, page.words), STOP_EDGES), 0)
    digits = _bucket(_share(page.digits, page.chars), DIGIT_EDGES)
    upper = _bucket(_share(page.upper, page.chars), UPPER_EDGES)
    punct = _bucket(_share(page.punct, page.chars), PUNCT_EDGES)
    rules = page.rules.astype(np.int32)
    position = np.minimum(np.arange(n) * 10 // max(n, 1), 9).astype(np.int32)
    edge = np.zeros(n, dtype=np.int32)
    if n:
        edge[-1], edge[0] = 2, 1
    total = max(int(page.chars.sum()), 1)
    rules_share = int(_bucket(np.array([page.chars[page.rules == 1].sum() / total]), SHARE_EDGES)[0])
    lines = int(_bucket(np.array([n]), LINES_EDGES)[0])
    container = int(page.has_container)
    coarse_words = np.minimum(_bucket(page.words, (3, 10, 20)), 3)
    coarse_link = _bucket(_share(page.link_chars, page.chars), (0.1, 0.6))
    coarse = rules * 12 + coarse_words * 3 + coarse_link  # 24 values
    good = ((page.words >= 10) & (link <= 2) & (rules == 1)).astype(np.int32)
    ones = np.ones(n, dtype=np.int32)
    codes = {
        "kind": (kind, len(KINDS)),
        "words": (words, 9),
        "chars": (chars, 9),
        "link": (link, 6),
        "stop": (stop, 7),
        "digits": (digits, 4),
        "upper": (upper, 5),
        "punct": (punct, 6),
        "sentence_end": (page.sentence_end, 2),
        "credit": (page.credit, 2),
        "date": (page.date, 2),
        "separators": (np.minimum(page.separators, 3), 4),
        "position": (position, 10),
        "edge": (edge, 3),
        "lines": (ones * lines, 7),
        "kind*words": (kind * 9 + words, len(KINDS) * 9),
        "words*link": (words * 6 + link, 54),
        "rules*words": (rules * 9 + words, 18),
        "rules*kind": (rules * len(KINDS) + kind, 2 * len(KINDS)),
        "stop*words": (stop * 9 + words, 63),
        "sentence_end*words": (page.sentence_end * 9 + words, 18),
        "container*rules": (container * 2 + rules, 4),
        "rules*share": (rules * 5 + rules_share, 10),  # rules that remove nearly everything are wrong
        "good_within_3": (_window_count(good, 3), 7),
        "good_before": (_distance(good, 4, reverse=False), 5),
        "good_after": (_distance(good, 4, reverse=True), 5),
    }
    for offset in (-2, -1, 1, 2):
        codes[f"coarse[{offset:+d}]"] = (_shifted(coarse, offset, 24), 25)
    for offset in (-1, 1):
        codes[f"kind[{offset:+d}]"] = (_shifted(kind.astype(np.int32), offset, len(KINDS)), len(KINDS) + 1)
    return codes



def template_sizes() -> dict[str, int]:
    """Every template's name and size, from a one-block page (the layout a model is stored with)."""
    page = Page(texts=["x"], **{f: np.zeros(1, dtype=np.int32) for f in (
        "kind", "words", "chars", "link_chars", "stop", "digits", "upper", "punct", "sentence_end", "credit",
        "date", "separators", "rules")}, has_container=False)
    return {name: size for name, (_, size) in feature_codes(page).items()}


def design(page: Page, sizes: dict[str, int]) -> np.ndarray:
    """Each block's row of global weight indices: (blocks, templates)."""
    codes = feature_codes(page)
    offsets = np.cumsum([0] + list(sizes.values()))[:-1]
    return np.stack([codes[name][0].astype(np.int64) + offset for name, offset in zip(sizes, offsets)], axis=1) \
        if len(page) else np.zeros((0, len(sizes)), dtype=np.int64)


FORMAT = "refinery-fast-blocks/1"


@dataclass(frozen=True)
class BlockModel:
    """Weights per (template, value), a bias and the probability at which a block is kept."""

    sizes: dict[str, int]
    weights: np.ndarray
    bias: float
    threshold: float
    provenance: dict = field(default_factory=dict)

    def probabilities(self, page: Page) -> np.ndarray:
        rows = design(page, self.sizes)
        return 1.0 / (1.0 + np.exp(-(self.weights[rows].sum(axis=1) + self.bias)))

    def to_json(self) -> str:
        """The model file: plain JSON, so the same weights are the same bytes and a diff is readable."""
        offsets = np.cumsum([0] + list(self.sizes.values()))
        weights = {name: [float(w) for w in self.weights[start:end]]
                   for name, start, end in zip(self.sizes, offsets[:-1], offsets[1:])}
        return json.dumps({"format": FORMAT, "bias": float(self.bias), "threshold": self.threshold,
                           "sizes": self.sizes, "weights": weights, "provenance": self.provenance},
                          indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, origin: str = "model") -> BlockModel:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"{origin}: not a {FORMAT} model")
        sizes = {name: int(size) for name, size in data["sizes"].items()}
        if sizes != template_sizes():
            raise ValueError(f"{origin}: its feature layout is not this version's; retrain it "
                             "(benchmarks/train_extractor.py)")
        weights = np.concatenate([np.asarray(data["weights"][name], dtype=np.float64) for name in sizes])
        return cls(sizes, weights, float(data["bias"]), float(data["threshold"]), data.get("provenance", {}))


@lru_cache(maxsize=4)
def load_model(path: str = str(MODEL_PATH)) -> BlockModel:
    return BlockModel.from_json(Path(path).read_text(), origin=path)


def fit(rows: np.ndarray, labels: np.ndarray, size: int, l2: float = 1e-3, steps: int = 600,
        rate: float = 0.1) -> tuple[np.ndarray, float]:
    """Logistic regression by full-batch Adam from zeros: deterministic, the same bytes every run."""
    weights = np.zeros(size)
    bias = 0.0
    m, v = np.zeros(size + 1), np.zeros(size + 1)
    b1, b2, eps = 0.9, 0.999, 1e-8
    n = len(labels)
    flat = rows.ravel()
    width = rows.shape[1]
    for step in range(1, steps + 1):
        z = weights[rows].sum(axis=1) + bias
        error = 1.0 / (1.0 + np.exp(-z)) - labels
        grad = np.bincount(flat, weights=np.repeat(error, width), minlength=size) / n + l2 * weights
        grad = np.append(grad, error.mean())
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        update = rate * (m / (1 - b1 ** step)) / (np.sqrt(v / (1 - b2 ** step)) + eps)
        weights -= update[:-1]
        bias -= update[-1]
    return weights, bias
