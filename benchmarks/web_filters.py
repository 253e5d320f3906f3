"""The C4, FineWeb, PII, bad-words and decontamination stages against the same datatrove 0.10.1
step, on the English documents of the shared web shards, one core, one process, in one run.

    .venv/bin/python benchmarks/web_filters.py [--json benchmarks/results/web_filters.json]

The documents are extracted once (trafilatura, then lid.176 English at 0.65) into --work. Each
side then processes all of them, repeated until --min-seconds have passed; the figure is
documents per second (the best of --repeat rounds). The bad-words list is synthetic (400 words;
no list is downloaded), and the same file is given to both. The decontamination index holds 1,500
passages of the curated speeches, books and Wikipedia, built by each side's own indexer code.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def english_documents(work: Path) -> list[str]:
    import pyarrow.parquet as pq

    from refinery.config import parse_config
    from refinery.io import expand_inputs
    from refinery.pipeline.run import execute

    out = work / "english"
    if not (out / "stats.json").is_file():
        config = parse_config({"name": "english", "input": {"paths": [str(SHARED / "web" / "*.warc.gz")]},
                               "run": {"dashboard": False}, "stages": [{"extract": {}}, {"language_id": {}}]})
        execute(config, expand_inputs(config.spec.input.paths), str(out), scheduler="sync")
    return [t for p in sorted((out / "documents").glob("*.parquet")) for t in pq.read_table(p, columns=["text"])["text"].to_pylist()]


def passages(count: int) -> list[str]:
    found = set()
    for name in ("speeches", "books", "wikipedia"):
        with gzip.open(SHARED / "curated" / f"{name}.jsonl.gz", "rt") as lines:
            for line in lines:
                for paragraph in json.loads(line)["text"].split("\n\n"):
                    words = paragraph.split()
                    for start in range(0, len(words) - 24, 40):
                        found.add(" ".join(words[start:start + 40]))
    ordered = sorted(found)
    random.Random(13).shuffle(ordered)
    return ordered[:count]


def timed(step, texts: list[str], min_seconds: float, repeat: int) -> float:
    """Documents per second: the best of ``repeat`` rounds of at least ``min_seconds``."""
    step(texts[:20])  # warm: lazy loads, spaCy, numba
    best = 0.0
    for _ in range(repeat):
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < min_seconds:
            step(texts)
            done += len(texts)
        best = max(best, done / (time.perf_counter() - began))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="/tmp/refinery-web-filters")
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "web_filters.json"))
    args = parser.parse_args()
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    if not (SHARED / "web").is_dir():
        sys.exit(f"no shared data at {SHARED}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    texts = english_documents(work)

    from datatrove.data import Document as TheirDocument
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.pipeline.filters import C4BadWordsFilter, C4QualityFilter, FineWebQualityFilter
    from datatrove.pipeline.filters import c4_filters as their_c4
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.text import ngrams, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer
    import numpy as np

    from refinery.document import Document
    from refinery.stages.c4_badwords import C4BadWords
    from refinery.stages.c4_filters import C4Filters
    from refinery.stages.decontaminate import Decontaminate
    from refinery.stages.fineweb_filters import FineWebFilters
    from refinery.stages.pii import Pii

    rng = random.Random(3)
    vocabulary = sorted({w.lower().strip(".,;:!?\"'()") for t in texts for w in t.split()} - {""})
    words = work / "badwords-en.txt"
    words.write_text("\n".join(rng.sample([w for w in vocabulary if w.isalpha() and len(w) > 6], 400)) + "\n")
    their_c4.cached_asset_path_or_download = lambda *a, **k: str(words)  # the same local list, not a download

    items = passages(1500)
    (work / "eval.jsonl").write_text("".join(json.dumps({"text": i}) + "\n" for i in items))
    index_dir = work / "datatrove-index"
    index_dir.mkdir(exist_ok=True)
    dconfig = NGramsDecontConfig(n_grams=13)
    raw_hash = create_hash_func(dconfig.hash_config)

    def hash_func(text: str) -> int:  # datatrove hands xxhash a str, which the installed xxhash refuses
        return raw_hash(text.encode("utf-8"))

    tokenizer = load_word_tokenizer("en")
    hashes = {hash_func(" ".join(g)) for i in items
              for g in ngrams(tokenizer.word_tokenize(simplify_text(i, dconfig.norm_config)), 13)}
    np.array(sorted(hashes), dtype=np.uint64).tofile(index_dir / "eval.index.hashes")

    def theirs(step_filter):
        def run(batch):
            for text in batch:
                step_filter.filter(TheirDocument(text=text, id="x"))
        return run

    def ours(stage):
        if hasattr(stage, "setup"):
            stage.setup()

        def run(batch):
            for text in batch:
                stage.process_doc(Document(id="x", url="", text=text, language="en"))
        return run

    their_decont = NGramsDecontFilter(str(index_dir), config=dconfig)
    their_decont.hash_func = hash_func
    formatter = PIIFormatter()
    pairs = {
        "c4_filters": (ours(C4Filters()), theirs(C4QualityFilter())),
        "fineweb_filters": (ours(FineWebFilters()), theirs(FineWebQualityFilter())),
        "pii": (ours(Pii()), lambda batch: [formatter.format(t) for t in batch]),
        "c4_badwords": (ours(C4BadWords(C4BadWords.Config(word_lists={"en": str(words)}))), theirs(C4BadWordsFilter())),
        "decontaminate": (ours(Decontaminate(Decontaminate.Config(
            sets=[{"name": "eval", "paths": [str(work / "eval.jsonl")]}]))),
            theirs(their_decont)),
    }
    results = {}
    for name, (our_step, their_step) in pairs.items():
        ours_rate = timed(our_step, texts, args.min_seconds, args.repeat)
        theirs_rate = timed(their_step, texts, args.min_seconds, args.repeat)
        results[name] = {"refinery_docs_per_s": round(ours_rate, 1), "datatrove_docs_per_s": round(theirs_rate, 1),
                         "ratio": round(ours_rate / theirs_rate, 2)}
        print(f"{name:16s} refinery {ours_rate:9.1f}/s  datatrove {theirs_rate:9.1f}/s  {ours_rate / theirs_rate:6.2f}x",
              flush=True)
    out = {"when": time.strftime("%Y-%m-%d %H:%M"), "documents": len(texts),
           "text_mb": round(sum(len(t.encode()) for t in texts) / 1e6, 2), "load_1m_after": round(os.getloadavg()[0], 2),
           "stages": results}
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
