"""MODEL_CARD.md of a trained quality classifier: its data, counts, metrics, seed and features."""

from __future__ import annotations

import json
from pathlib import Path


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def write_card(spec, out: Path, metrics: dict) -> Path:
    from refinery import __version__
    from refinery.io import write_text_atomic

    features = json.loads((out / "features.json").read_text())
    held = metrics["heldout"]
    docs = metrics["documents"]
    pos, neg = spec.positive_label, spec.negative_label
    lines = [
        f"# Quality classifier `{spec.name}`", "",
        f"A fastText classifier (DCLM's recipe: word bigrams, lowercased text with punctuation spaced and "
        f"newlines folded), trained by refinery {__version__} with seed {spec.seed}.",
        f"It gives the probability of `{pos}` (reference text) against `{neg}` (crawl text); the stage "
        "`quality_classifier` reads `model.bin` with `positive_label: " + pos + "`.", "",
        "## Data", "",
        "| side | sources | available | train | held out |", "|---|---|---:|---:|---:|",
        f"| positive (`{pos}`) | {', '.join(metrics['sources']['positives'])} | {docs['available'].get(pos, 0):,} | "
        f"{docs['train'].get(pos, 0):,} | {docs['heldout'].get(pos, 0):,} |",
        f"| negative (`{neg}`) | {', '.join(metrics['sources']['negatives'])} | {docs['available'].get(neg, 0):,} | "
        f"{docs['train'].get(neg, 0):,} | {docs['heldout'].get(neg, 0):,} |", "",
        f"At most {spec.max_per_class:,} documents per side (a seeded sample), each up to {spec.max_chars:,} "
        f"characters; {spec.heldout_fraction:.0%} held out by a seeded hash.", "",
        "## Held-out metrics", "",
        f"- AUC: **{held['auc']}** over {held['documents']:,} documents ({held['positives']:,} positive)",
        f"- at threshold {held['threshold']}: precision {held['precision']}, recall {held['recall']}, "
        f"F1 {held['f1']}, accuracy {held['accuracy']}", "",
        "## fastText settings", "", "```json", json.dumps(metrics["fasttext"], indent=2), "```", "",
        "## What it learned: the bigrams that weigh most", "",
        "| toward reference | weight | seen | toward crawl | weight | seen |", "|---|---:|---:|---|---:|---:|",
    ]
    for p, n in zip(features["positive"], features["negative"]):
        lines.append(f"| `{_clip(p['bigram'], 40)}` | {p['weight']:+.3f} | {p['count']} | "
                     f"`{_clip(n['bigram'], 40)}` | {n['weight']:+.3f} | {n['count']} |")
    for name, title in (("top_decile", "top"), ("bottom_decile", "bottom")):
        lines += ["", f"## Held-out documents from the {title} decile", "", "| score | reference? | text (normalised) |",
                  "|---:|---|---|"]
        for s in features["heldout_samples"][name]:
            lines.append(f"| {s['score']:.3f} | {'yes' if s['reference'] else 'no'} | {_clip(s['text'])} |")
    path = out / "MODEL_CARD.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
