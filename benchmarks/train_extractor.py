#!/usr/bin/env python
"""Trains the fast extractor's block classifier (refinery/models/fast_blocks.json).

Data: the pages of ../shared/data/web/ that have an entry in trafilatura's evaluation set
(../shared/data/extraction/trafilatura-evaldata.json), read as benchmarks/extraction_quality.py
reads them; blocks labelled by snippet containment (refinery/extract/training.py). The fit is
full-batch and starts from zeros, so the same pages give the same model file, byte for byte.

    .venv/bin/python benchmarks/train_extractor.py            # writes refinery/models/fast_blocks.json
    .venv/bin/python benchmarks/train_extractor.py --check    # retrains and compares with the shipped file

Scores on pages of sites the model never saw come from benchmarks/extraction_quality.py (site
cross-validation); docs/EXTRACTION.md quotes both.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> int:
    from extraction_quality import SHARED, evaluation_pages

    from refinery.extract.model import MODEL_PATH
    from refinery.extract.training import fingerprint, labelled_pages, train_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(MODEL_PATH))
    parser.add_argument("--check", action="store_true", help="retrain and compare with --output instead of writing it")
    args = parser.parse_args()
    evaldata = json.loads((SHARED / "extraction" / "trafilatura-evaldata.json").read_text())
    pages = evaluation_pages(SHARED / "web", evaldata, None)
    labelled = labelled_pages(pages)
    model = train_model(labelled, {"data": "../shared/data/web/*.warc.gz pages with an entry in "
                                           "../shared/data/extraction/trafilatura-evaldata.json",
                                   "data_sha256": fingerprint(pages),
                                   "command": "benchmarks/train_extractor.py"})
    text = model.to_json()
    digest = hashlib.sha256(text.encode()).hexdigest()
    print(f"{len(pages)} pages, {model.provenance['sites']} sites, {model.provenance['labelled_blocks']} labelled blocks "
          f"({model.provenance['main_blocks']} main text); model {len(text):,} bytes, sha256 {digest}")
    output = Path(args.output)
    if args.check:
        same = output.is_file() and output.read_text() == text
        print(f"{output}: {'the same bytes' if same else 'DIFFERENT'}")
        return 0 if same else 1
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(output)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
