#!/usr/bin/env python
"""Extraction quality and cost: every extractor on the pages of ../shared/data/web/ that have an
entry in trafilatura's evaluation set (../shared/data/extraction/trafilatura-evaldata.json).

For each page the set lists `with` snippets (main text the extraction must contain) and `without`
snippets (boilerplate it must not contain). Reported per extractor, over all snippets of all pages:

  with     share of `with` snippets found in the extracted text (recall of the main text)
  without  share of `without` snippets absent from it (how much boilerplate is kept out)
  ms/doc   median milliseconds per page, one core, in this process (no sandbox), after a warm-up

The fast extractor's model was trained on these same pages (benchmarks/train_extractor.py), so its
row here is on pages it has seen. The row "fast, unseen sites" is what the method does on pages
it has not seen: 5-fold cross-validation by site (registered domain), each page's blocks scored by
a model trained on the other folds' sites only (refinery/extract/training.py), with each fold's
score beside the total. That is the figure to compare with trafilatura.

A snippet is found when it occurs in the text after both are whitespace-normalised (every run of
whitespace becomes one space). Pages are read with refinery's own WARC reader (charset decoding as
in a run) and each extractor gets the same decoded HTML and URL, in the same order.

    .venv/bin/python benchmarks/extraction_quality.py                  # all extractors
    .venv/bin/python benchmarks/extraction_quality.py --extractors resiliparse --limit 100

Results go to benchmarks/results/extraction_quality.json; docs/BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from refinery.text import collapse_spaces as normalise  # noqa: E402 - after the path above

EXTRACTORS = {
    "trafilatura": {"extractor": "trafilatura", "favor_precision": False},
    "trafilatura-precision": {"extractor": "trafilatura", "favor_precision": True},
    "resiliparse": {"extractor": "resiliparse", "favor_precision": False},
    "fast": {"extractor": "fast", "favor_precision": False},
    "union": {"extractor": "union", "favor_precision": True},
}


def evaluation_pages(web: Path, evaldata: dict, limit: int | None) -> list[tuple[str, str, dict]]:
    """(url, html, entry) of every response record in the web shards whose URL has an entry."""
    from refinery.config import InputConfig
    from refinery.document import Document
    from refinery.stages.warc_reader import WarcReader

    reader = WarcReader(InputConfig(paths=["unused"]), source="benchmark")
    pages, seen = [], set()
    for shard in sorted(web.glob("*.warc.gz")):
        for item in reader.read(str(shard)):
            if isinstance(item, Document) and item.url in evaldata and item.url not in seen:
                seen.add(item.url)
                pages.append((item.url, item.html, evaldata[item.url]))
                if limit and len(pages) >= limit:
                    return pages
    return pages


TEXTS: dict[str, list[str]] = {}  # each extractor's texts in this run


def score(name: str, settings: dict, pages: list[tuple[str, str, dict]]) -> dict:
    from refinery.stages.html_extract import extract_text

    def run(html: str, url: str) -> str:
        return extract_text(html, url, settings["extractor"], settings["favor_precision"], True, False)

    for url, html, _ in pages[:5]:  # warm-up: imports and caches
        run(html, url)
    texts, times = [], []
    for url, html, _ in pages:
        started = time.perf_counter()
        texts.append(run(html, url))
        times.append(1000 * (time.perf_counter() - started))
    TEXTS[name] = texts
    return {"extractor": name, **settings, "pages": len(pages), **snippet_scores(texts, [e for _, _, e in pages]),
            "ms_median": round(statistics.median(times), 2), "ms_mean": round(statistics.fmean(times), 2),
            "ms_p90": round(statistics.quantiles(times, n=10)[-1], 2)}


def unseen_sites(pages: list[tuple[str, str, dict]], precision_texts: list[str] | None) -> list[dict]:
    """The fast extractor's method on sites it never saw (site-held-out cross-validation), alone
    and in union with trafilatura favor_precision's texts of the same run."""
    from refinery.extract.training import FOLDS, THRESHOLD, cross_validated, labelled_pages, site_fold
    from refinery.stages.fast_extractor import is_unsure, kept_by
    from refinery.stages.html_extract import UNION_BAND, UNION_UNSURE_SHARE

    labelled = labelled_pages(pages)
    probabilities = cross_validated(labelled)
    entries = [entry for _, _, entry in pages]
    fast, union, ran = [], [], 0
    for i, (p, q) in enumerate(zip(labelled, probabilities)):
        if p.page is None:
            fast.append("")
            union.append("")
            continue
        keep = q >= THRESHOLD
        fast.append(p.page.kept_text(keep))
        if precision_texts is not None and len(p.page) and is_unsure(p.page.chars, q, UNION_BAND, UNION_UNSURE_SHARE):
            ran += 1
            keep = keep | kept_by(p.page.texts, precision_texts[i])
        union.append(p.page.kept_text(keep))
    folds = []
    for fold in range(FOLDS):
        members = [i for i, p in enumerate(labelled) if site_fold(p.site) == fold]
        folds.append({"fold": fold, "pages": len(members), "sites": len({labelled[i].site for i in members}),
                      **snippet_scores([fast[i] for i in members], [entries[i] for i in members])})
    sites = len({p.site for p in labelled})
    rows = [{"extractor": "fast, unseen sites", "pages": len(pages), "sites": sites, **snippet_scores(fast, entries),
             "folds": folds}]
    if precision_texts is not None:
        rows.append({"extractor": "union, unseen sites", "pages": len(pages), "sites": sites,
                     **snippet_scores(union, entries), "trafilatura_pages": round(ran / max(len(pages), 1), 4)})
    return rows


def union_share(pages: list[tuple[str, str, dict]]) -> float:
    """Share of pages on which union mode runs trafilatura (the stage's default settings)."""
    from refinery.extract.blocks import parse_page
    from refinery.extract.model import load_model
    from refinery.stages.fast_extractor import is_unsure
    from refinery.stages.html_extract import ExtractConfig

    config, model, ran = ExtractConfig(), load_model(), 0
    for _, html, _ in pages:
        page = parse_page(html)
        if page is not None and len(page):
            ran += is_unsure(page.chars, model.probabilities(page), config.union_band, config.union_unsure_share)
    return ran / max(len(pages), 1)


def snippet_scores(texts: list[str], entries: list[dict]) -> dict:
    """Share of `with` snippets found and of `without` snippets absent, over all pages' snippets."""
    found = wanted = absent = unwanted = 0
    for text, entry in zip(texts, entries, strict=True):
        text = normalise(text)
        wanted += len(entry["with"])
        found += sum(normalise(s) in text for s in entry["with"])
        unwanted += len(entry["without"])
        absent += sum(normalise(s) not in text for s in entry["without"])
    return {"with": round(found / wanted, 4) if wanted else None, "without": round(absent / unwanted, 4) if unwanted else None,
            "with_snippets": wanted, "without_snippets": unwanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extractors", nargs="+", default=list(EXTRACTORS), choices=list(EXTRACTORS))
    parser.add_argument("--limit", type=int, help="at most N pages")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "extraction_quality.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    evaldata = json.loads((SHARED / "extraction" / "trafilatura-evaldata.json").read_text())
    pages = evaluation_pages(SHARED / "web", evaldata, args.limit)
    print(f"{len(pages)} pages of {SHARED / 'web'} have an entry in the evaluation set ({len(evaldata)} entries)")
    results = []
    for name in args.extractors:
        result = score(name, EXTRACTORS[name], pages)
        if name == "union":
            result["trafilatura_pages"] = round(union_share(pages), 4)
        results.append(result)
        print(f"{name:24s} with {result['with']:.4f}  without {result['without']:.4f}  "
              f"median {result['ms_median']:.2f} ms/doc  (mean {result['ms_mean']:.2f}, p90 {result['ms_p90']:.2f})"
              + (" (seen: trained on these pages)" if name == "fast" else "")
              + (f" (trafilatura ran on {result['trafilatura_pages']:.1%} of pages)" if name == "union" else ""))
    if "fast" in args.extractors and not args.limit:
        for row in unseen_sites(pages, TEXTS.get("trafilatura-precision")):
            results.append(row)
            print(f"{row['extractor']:24s} with {row['with']:.4f}  without {row['without']:.4f}  ("
                  + (f"{row['sites']} sites in {len(row['folds'])} folds; per fold: "
                     + ", ".join(f"{f['with']:.3f}/{f['without']:.3f}" for f in row["folds"]) if "folds" in row
                     else f"trafilatura ran on {row['trafilatura_pages']:.1%} of pages") + ")")
    Path(args.output).write_text(json.dumps({"pages": len(pages), "command": " ".join(sys.argv),
                                             "results": results}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
