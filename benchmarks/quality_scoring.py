"""fastText quality scoring against the rest of the map phase, and against fastText alone.

    .venv/bin/python benchmarks/quality_scoring.py [--model runs/classifier/model.bin] [--json FILE]

1. Runs configs/quality.yaml's chain (no dedup) over the shared web shards on one worker and reads
   the funnel's per-stage seconds: the quality_classifier stage's share of the map phase.
2. Scores the documents that reached the stage again, in this process on one core: documents per
   second per core through the stage (DCLM normalisation + predict + columns), next to fastText's
   own ``predict`` on the same normalised lines (the peer: the library without refinery).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARDS = REPO.parent / "shared" / "data" / "web"


def map_phase(model: str, work: Path) -> dict:
    raw = yaml.safe_load((REPO / "configs" / "quality.yaml").read_text())
    raw.pop("dedup", None)
    raw.pop("output", None)
    for stage in raw["stages"]:
        if "quality_classifier" in stage:
            stage["quality_classifier"]["models"][0]["path"] = str(Path(model).resolve())
    config = work / "map.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = work / "out"
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "refinery", "run", str(config), "--input", str(SHARDS / "*.warc.gz"),
                    "--output", str(out), "--workers", "1", "--force"], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - began
    stats = json.loads((out / "stats.json").read_text())
    seconds = {s["stage"]: s["seconds"] for s in stats["funnel"]}
    scored = next(s for s in stats["funnel"] if s["stage"] == "quality_classifier")
    return {"wall_s": round(wall, 2), "stage_seconds": seconds, "records": stats["input"]["records"],
            "documents_scored": scored["docs_in"], "out": str(out),
            "classifier_share_of_map": round(seconds["quality_classifier"] / sum(seconds.values()), 4)}


def throughput(model: str, documents: Path, min_seconds: float) -> dict:
    import pyarrow.parquet as pq

    from refinery.document import Document
    from refinery.quality.text import dclm_line
    from refinery.fasttext_model import load_fasttext
    from refinery.stages.quality_classifier import QualityClassifier

    texts = [t for p in sorted(documents.glob("*.parquet")) for t in pq.read_table(p, columns=["text"])["text"].to_pylist()]
    stage = QualityClassifier(QualityClassifier.Config(models=[{"name": "dclm", "path": model}]))
    stage.setup()
    ft = load_fasttext(Path(model))
    lines = [dclm_line(t[:100_000]) for t in texts]

    def timed(step) -> float:
        step()  # warm
        runs, began = 0, time.perf_counter()
        while time.perf_counter() - began < min_seconds:
            step()
            runs += 1
        return (time.perf_counter() - began) / runs

    stage_s = timed(lambda: stage.process_batch([Document(id=str(i), url="", text=t) for i, t in enumerate(texts)]))
    predict_s = timed(lambda: ft.predict(lines, k=-1, threshold=0.0))
    normalise_s = timed(lambda: [dclm_line(t[:100_000]) for t in texts])
    mb = sum(len(t.encode()) for t in texts) / 1e6
    return {"documents": len(texts), "text_mb": round(mb, 2),
            "stage_docs_per_s": round(len(texts) / stage_s, 1), "stage_mb_per_s": round(mb / stage_s, 2),
            "fasttext_predict_docs_per_s": round(len(texts) / predict_s, 1),
            "normalise_docs_per_s": round(len(texts) / normalise_s, 1),
            "stage_vs_fasttext_alone": round(predict_s / stage_s, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "runs" / "classifier" / "model.bin"))
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "quality_scoring.json"))
    args = parser.parse_args()
    if not Path(args.model).is_file():
        sys.exit(f"no model at {args.model}: run `refinery classifier train configs/classifier.yaml` first")
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    with tempfile.TemporaryDirectory() as tmp:
        phase = map_phase(args.model, Path(tmp))
        micro = throughput(args.model, Path(phase.pop("out")) / "documents", args.min_seconds)
    load = os.getloadavg()
    result = {"when": time.strftime("%Y-%m-%d %H:%M"), "load_1m_after": round(load[0], 2), "map_phase": phase,
              "scoring": micro}
    print(json.dumps(result, indent=2))
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
