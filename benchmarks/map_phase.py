#!/usr/bin/env python
"""Map-phase benchmark: refinery next to datatrove 0.10.1, same shards, same cores.

Two pipelines (--pipeline):

  backbone (default)  WARC reader -> trafilatura extraction -> fastText lid.176 (keep English with
                      score >= 0.65) -> Parquet. refinery's chain is configs/english.yaml cut down to
                      its `extract` and `language_id` stages (the other stages are left out).
  mdr                 the whole RefinedWeb map phase (Macrodata Refinement): configs/english.yaml's
                      stage list as is (url_filter, extract, language_id, gopher_repetition,
                      gopher_quality, line_filter). datatrove runs WarcReader -> URLFilter ->
                      Trafilatura -> LanguageFilter -> GopherRepetitionFilter -> GopherQualityFilter
                      -> ParquetWriter, all with datatrove's defaults, which are the thresholds in
                      configs/english.yaml. datatrove has no line-wise stage, so refinery's
                      line_filter is extra work that only refinery does.

Each engine runs in a fresh
Python process (this script re-invoked with --child), so no engine inherits another's imports, caches
or worker pools:

  refinery          refinery.pipeline.run.execute(): a Dask LocalCluster with N worker processes, one task per
                    shard; this is what `refinery run` does (minus the console progress display)
  refinery-pool     refinery.pipeline.chain.run_shard() in a plain N-process pool, no Dask (shows Dask's cost)
  refinery-noprefilter  refinery without its language_prefilter stage (mdr), i.e. trafilatura on
                    every page, as datatrove does
  datatrove         datatrove's WarcReader -> Trafilatura -> LanguageFilter -> ParquetWriter on a
                    LocalPipelineExecutor(tasks=<shards>, workers=N)

Both engines extract in a per-worker child process with a 5 s timeout per page and both write zstd
Parquet, so the work matches. Differences that remain are listed in docs/BENCHMARKS.md.

datatrove's FT176LID downloads lid.176.bin on first use. Nothing can be downloaded here, so its
model loading is overridden (LocalFT176LID below) to read the same local lid.176.ftz that refinery
uses; everything else is datatrove's own code.

datatrove's WarcReader needs `cchardet` and `magic` (pip: faust-cchardet, python-magic; apt:
libmagic1) and its LanguageFilter needs `fasteners`.

Wall time is what matters but is easily disturbed by other load on a small machine, so the table
also gives the CPU time of each engine's process tree (sampled with psutil) and of the whole
machine over the same interval: when the machine total is well above ours, someone else was busy.

Usage:
  .venv/bin/python benchmarks/map_phase.py --limit 40            # smoke run, under a minute
  .venv/bin/python benchmarks/map_phase.py --repeat 3 --json benchmarks/results/map_phase.json
  .venv/bin/python benchmarks/map_phase.py --pipeline mdr --repeat 2 --json benchmarks/results/map_phase_mdr.json
  .venv/bin/python benchmarks/map_phase.py --pipeline mdr --extractor fast --engines refinery-noprefilter,datatrove \
      --repeat 3 --json benchmarks/results/map_phase_mdr_fast.json   # refinery with the fast extractor

Besides throughput, the summary gives each engine's post-extraction share: the seconds of every step
other than the reader, extraction and the writer (url_filter, language ID, Gopher filters, line_filter),
divided by the extraction seconds, both summed over the workers.
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INPUT = str((ROOT / ".." / "shared" / "data" / "web" / "dev-0000*.warc.gz").resolve())
CONFIG = ROOT / "configs" / "english.yaml"
ENGINES = ("refinery", "refinery-pool", "datatrove", "refinery-noprefilter")
MAP_STAGES = ("extract", "language_id")  # after refinery's own WARC reader
MDR_STAGES = ("url_filter", "language_prefilter", "extract", "language_id", "gopher_repetition", "gopher_quality",
              "line_filter")
PREFILTER = "language_prefilter"  # skips extraction for pages plainly in another language
PIPELINES = ("backbone", "mdr")
OFFLINE_ENV = {"TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "", "HF_HUB_OFFLINE": "1"}


# ---------------------------------------------------------------------------------------------
# children: one engine, one run, timed from the inside
# ---------------------------------------------------------------------------------------------

def map_phase_config(paths: list[str], out: str, workers: int, limit: int | None, pipeline: str = "backbone",
                     prefilter: bool = True, extractor: str | None = None, **run):
    """backbone: configs/english.yaml cut down to the map phase, its extract and language_id settings
    in that order and none of the other stages (url_filter, quality filters, ...).
    mdr: configs/english.yaml's stage list as is (checked against MDR_STAGES), without
    language_prefilter when ``prefilter`` is False. The dedup stages are left out: this is the map phase."""
    import yaml

    from refinery.config import parse_config, with_overrides

    raw = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    raw["dedup"] = []
    expected = MDR_STAGES if pipeline == "mdr" else MAP_STAGES
    if pipeline != "mdr":
        raw["stages"] = [entry for entry in raw["stages"] if next(iter(entry)) in MAP_STAGES]
    found = [next(iter(entry)) for entry in raw["stages"]]
    if found != list(expected):
        raise SystemExit(f"{CONFIG} has stages {found}, expected {list(expected)} for --pipeline {pipeline}")
    if not prefilter:
        raw["stages"] = [entry for entry in raw["stages"] if next(iter(entry)) != PREFILTER]
    if extractor:  # --extractor: refinery's extract stage with another extractor, settings otherwise as configured
        for entry in raw["stages"]:
            if next(iter(entry)) == "extract":
                entry["extract"] = {**(entry["extract"] or {}), "extractor": extractor}
    config = parse_config(raw, str(CONFIG))
    return with_overrides(config, inputs=paths, output=out, workers=workers, limit=limit, **run)


def _extract_docs_in(steps: list[dict]) -> int:
    """Documents handed to extraction (after the reader and, in mdr, the URL filter)."""
    return next(s["docs_in"] for s in steps if s["step"] == "extract" or "Trafilatura" in s["step"])


def _child_refinery(paths: list[str], out: str, workers: int, limit: int | None, pipeline: str,
                    extractor: str | None = None, prefilter: bool = True) -> dict:
    from refinery.engine.output import claim_output
    from refinery.io import expand_inputs
    from refinery.pipeline.run import execute

    config = map_phase_config(paths, out, workers, limit, pipeline, prefilter, extractor, dashboard=False)
    shards = expand_inputs(config.spec.input.paths)
    with claim_output(out, force=True):
        started = time.perf_counter()
        stats = execute(config, shards, out)
        wall = time.perf_counter() - started
    steps = [
        {"step": s["stage"], "docs_in": s["docs_in"], "docs_out": s["docs_out"],
         "dropped": s["dropped"], "seconds": s["seconds"]}
        for s in stats["funnel"]
    ]
    return {
        "wall_s": wall,
        "records": stats["input"]["records"],
        "docs_in": _extract_docs_in(steps),  # documents handed to extraction
        "docs_out": stats["output"]["documents"],
        "steps": steps,
    }


def _child_refinery_pool(paths: list[str], out: str, workers: int, limit: int | None, pipeline: str,
                         extractor: str | None = None) -> dict:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from refinery.io import expand_inputs
    from refinery.pipeline.chain import run_shard
    from refinery.stats import StageStats, sum_stage_stats

    config = map_phase_config(paths, out, workers, limit, pipeline, extractor=extractor)
    shards = expand_inputs(config.spec.input.paths)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver")) as pool:
        results = list(pool.map(run_shard, shards, [config] * len(shards), [out] * len(shards)))
    wall = time.perf_counter() - started
    funnel = sum_stage_stats([[StageStats.from_dict(s) for s in r.funnel] for r in results])
    steps = [
        {"step": s.stage, "docs_in": s.docs_in, "docs_out": s.docs_out,
         "dropped": dict(s.dropped), "seconds": round(s.seconds, 3)}
        for s in funnel
    ]
    return {
        "wall_s": wall,
        "records": sum(r.records for r in results),
        "docs_in": _extract_docs_in(steps),
        "docs_out": sum(r.documents for r in results),
        "steps": steps,
    }


def _local_ft176_class():
    """datatrove's FT176LID with its download replaced by a local model file (defined lazily so the
    refinery children never import datatrove; dill pickles the class by value for the pool)."""
    from datatrove.utils.lid import FT176LID

    class LocalFT176LID(FT176LID):
        def __init__(self, languages, model_path: str, k: int = -1):
            super().__init__(languages, k)
            self.model_path = model_path

        @property
        def model(self):
            if self._model is None:
                from fasttext.FastText import (
                    _FastText,  # what FastTextLID.model itself does
                )

                self._model = _FastText(self.model_path)
            return self._model

    return LocalFT176LID


def _child_datatrove(paths: list[str], out: str, workers: int, limit: int | None, pipeline: str) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from datatrove.pipeline.readers import WarcReader
    from datatrove.pipeline.writers import ParquetWriter
    from refinery.stages.language_id import default_model_path

    folders = {os.path.dirname(p) for p in paths}
    if len(folders) != 1:
        raise SystemExit("datatrove child: all inputs must be in one folder")
    folder = folders.pop()
    names = sorted(os.path.basename(p) for p in paths)
    paths_file = os.path.join(out, "paths.txt")
    os.makedirs(out, exist_ok=True)
    Path(paths_file).write_text("\n".join(names) + "\n")

    language_filter = LanguageFilter(languages=["en"], language_threshold=0.65)
    language_filter.model = _local_ft176_class()(["en"], str(default_model_path()))
    steps_in = [
        WarcReader(folder, paths_file=paths_file, limit=limit if limit else -1),
        Trafilatura(favour_precision=True, deduplicate=False, timeout=5, include_tables=True),
        language_filter,
    ]
    if pipeline == "mdr":
        from tldextract import TLDExtract

        url_filter = URLFilter()  # default integrated UT1 + word lists, soft_word_threshold=2
        # the bundled public-suffix snapshot, never fetched (as stages/url_filter.py does)
        url_filter.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
        steps_in.insert(1, url_filter)
        steps_in += [GopherRepetitionFilter(), GopherQualityFilter()]  # defaults = configs/english.yaml
    steps_in.append(ParquetWriter(os.path.join(out, "documents"), compression="zstd"))
    executor = LocalPipelineExecutor(steps_in, tasks=len(names), workers=workers,
                                     logging_dir=os.path.join(out, "logs"), skip_completed=False)
    started = time.perf_counter()
    executor.run()
    wall = time.perf_counter() - started

    blocks = json.loads(Path(out, "logs", "stats.json").read_text())
    steps = []
    for block in blocks:
        counters = block["stats"]
        name = "".join(ch for ch in block["name"] if ch.isascii()).replace("  ", " ").strip(" -")
        if "documents" in counters:  # the reader counts only what it yields
            docs_in = docs_out = _stat(counters, "documents")
        elif "forwarded" in counters or "dropped" in counters:
            docs_in, docs_out = _stat(counters, "total"), _stat(counters, "forwarded")
        else:  # the writer
            docs_in = docs_out = _stat(counters, "total")
        steps.append({
            "step": name,
            "docs_in": docs_in,
            "docs_out": docs_out,
            "dropped": {k: _stat(counters, k) for k in counters
                        if k in ("timeout", "broken_process", "clean_error") or k.startswith("dropped_")
                        or (k == "dropped" and not any(c.startswith("dropped_") for c in counters))},
            "seconds": round(block["time_stats"]["total"], 3),
            "counters": {k: _stat(counters, k) for k in counters if not k.startswith(("doc_len", "token"))},
        })
    last_filter = steps[-2]  # the step before the writer
    return {
        "wall_s": wall,
        "records": None,  # datatrove does not count the records its reader skips; the parent counts them
        "docs_in": _extract_docs_in(steps),
        "docs_out": last_filter["docs_out"],
        "steps": steps,
    }


def _stat(counters: dict, key: str) -> int:
    value = counters.get(key, 0)
    return int(value["total"] if isinstance(value, dict) else value)


CHILDREN = {"refinery": _child_refinery, "refinery-pool": _child_refinery_pool, "datatrove": _child_datatrove,
            "refinery-noprefilter": functools.partial(_child_refinery, prefilter=False)}


# ---------------------------------------------------------------------------------------------
# parent: runs the children, watches CPU, prints the table
# ---------------------------------------------------------------------------------------------

def _machine_busy_s() -> float:
    """CPU-seconds all cores spent not idle since boot (everyone's work, not just ours)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class ProcessTreeSampler:
    """Calls `_sample` every `interval` seconds in a daemon thread while used as a context
    manager; `root` is the psutil process whose tree is watched. With `sample_at_edges`, it also
    samples once on entering and once on leaving."""

    sample_at_edges = False

    def __init__(self, pid: int, interval: float):
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=type(self).__name__)

    def _sample(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        if self.sample_at_edges:
            self._sample()
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.sample_at_edges:
            self._sample()


class TreeCpu(ProcessTreeSampler):
    """Samples the CPU time of a process and all its descendants (Dask workers, pool workers,
    extraction sandboxes). Processes that live less than one interval are missed."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(pid, interval)
        self.seen: dict[tuple[int, float], float] = {}

    def _sample(self) -> None:
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            return
        for proc in procs:
            try:
                with proc.oneshot():
                    key = (proc.pid, proc.create_time())
                    t = proc.cpu_times()
                self.seen[key] = max(self.seen.get(key, 0.0), t.user + t.system)
            except self._psutil.Error:
                continue

    @property
    def cpu_s(self) -> float:
        return sum(self.seen.values())


def count_records(paths: list[str], limit: int | None) -> int:
    from fastwarc.warc import ArchiveIterator

    total = 0
    for path in paths:
        with open(path, "rb") as handle:
            for n, _ in enumerate(ArchiveIterator(handle, parse_http=False), start=1):
                total += 1
                if limit and n >= limit:
                    break
    return total


def run_measured(cmd: list[str], env: dict, log_path: str, result_path: str, label: str) -> dict:
    """Runs one benchmark child; returns the JSON it wrote plus its wall time, its process tree's
    CPU time and the whole machine's busy CPU time over the same interval."""
    load_before = os.getloadavg()[0]
    busy_before = _machine_busy_s()
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        with TreeCpu(proc.pid) as tree:
            rc = proc.wait()
    process_wall = time.perf_counter() - started
    busy = _machine_busy_s() - busy_before
    if rc != 0:
        tail = Path(log_path).read_text(errors="replace")[-4000:]
        raise SystemExit(f"{label} child failed (rc {rc}); log {log_path}:\n{tail}")
    result = json.loads(Path(result_path).read_text())
    result.update(process_wall_s=process_wall, tree_cpu_s=tree.cpu_s, machine_busy_cpu_s=busy,
                  loadavg_1m_before=load_before)
    return result


def run_child(engine: str, args, paths: list[str], records: int) -> dict:
    out = tempfile.mkdtemp(prefix=f"refinery-bench-{engine}-")
    result_path = os.path.join(out, "_result.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--out", os.path.join(out, "run"),
           "--workers", str(args.workers), "--pipeline", args.pipeline, "--result", result_path, "--input", *paths]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if args.extractor:
        cmd += ["--extractor", args.extractor]
    env = {**os.environ, **OFFLINE_ENV, "PYTHONWARNINGS": "ignore"}
    result = run_measured(cmd, env, os.path.join(out, "child.log"), result_path, engine)
    if result["records"] is None:
        result["records"] = records
    result["engine"] = engine
    if args.keep_tmp:
        result["out_dir"] = out
    else:
        shutil.rmtree(out, ignore_errors=True)
    return result


def post_extraction(steps: list[dict]) -> dict:
    """Seconds of every step after the reader other than extraction and the writer, against extraction's."""
    def kind(name: str) -> str:
        if name == "extract" or "Trafilatura" in name:
            return "extract"
        if name == PREFILTER:
            return "pre"
        if name == "warc_reader" or name.startswith("READER") or name.startswith("WRITER"):
            return "io"
        return "filter"

    extract = sum(s["seconds"] for s in steps if kind(s["step"]) == "extract")
    filters = sum(s["seconds"] for s in steps if kind(s["step"]) == "filter")
    return {"extract_s": extract, "post_extraction_s": filters,
            "prefilter_s": sum(s["seconds"] for s in steps if kind(s["step"]) == "pre"),
            "post_extraction_share": filters / extract if extract else 0.0,
            "post_extraction_steps": [s["step"] for s in steps if kind(s["step"]) == "filter"]}


def summarise(runs: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs]
    best = runs[walls.index(min(walls))]
    median = statistics.median(walls)
    cpu = statistics.median(r["tree_cpu_s"] for r in runs)
    return {
        "engine": runs[0]["engine"],
        "runs": len(runs),
        "wall_s_min": min(walls),
        "wall_s_median": median,
        "process_wall_s_median": statistics.median(r["process_wall_s"] for r in runs),
        "tree_cpu_s_median": cpu,
        "machine_busy_cpu_s_median": statistics.median(r["machine_busy_cpu_s"] for r in runs),
        "records": best["records"],
        "docs_in": best["docs_in"],
        "docs_out": best["docs_out"],
        "records_per_s": best["records"] / median if median else 0.0,
        "records_per_s_best": best["records"] / min(walls) if min(walls) else 0.0,
        "records_per_cpu_s": best["records"] / cpu if cpu else 0.0,
        "docs_in_per_s": best["docs_in"] / median if median else 0.0,
        **post_extraction(best["steps"]),  # from the run with the lowest wall time, as the steps table
        "post_extraction_share_median": statistics.median(
            post_extraction(r["steps"])["post_extraction_share"] for r in runs),
        "steps": best["steps"],
    }


def markdown(summary: dict[str, dict], workers: int) -> str:
    lines = [
        "| engine | wall s, median (min) | CPU s, ours / whole machine | records in | docs to extract "
        "| docs out (en) | records/s, median wall | vs datatrove | records/s, min wall | vs datatrove "
        "| records per CPU s | vs datatrove |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    peer = summary.get("datatrove")

    def ratio(s: dict, key: str) -> str:
        return f"{s[key] / peer[key]:.2f}x" if peer and peer[key] else "n/a"

    for engine, s in summary.items():
        lines.append(
            f"| {engine} | {s['wall_s_median']:.1f} ({s['wall_s_min']:.1f}) "
            f"| {s['tree_cpu_s_median']:.0f} / {s['machine_busy_cpu_s_median']:.0f} "
            f"| {s['records']} | {s['docs_in']} | {s['docs_out']} "
            f"| {s['records_per_s']:.1f} | {ratio(s, 'records_per_s')} "
            f"| {s['records_per_s_best']:.1f} | {ratio(s, 'records_per_s_best')} "
            f"| {s['records_per_cpu_s']:.1f} | {ratio(s, 'records_per_cpu_s')} |"
        )
    lines.append("")
    lines.append("Per document handed to extraction, and post-extraction share (step seconds summed over the "
                 f"{workers} workers; share = post-extraction s / extraction s, run with the lowest wall time, "
                 "median over runs in brackets):")
    lines.append("")
    lines.append("| engine | docs extracted | docs extracted/s, median wall | vs datatrove | extraction s "
                 "| post-extraction s | post-extraction share | post-extraction steps |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for engine, s in summary.items():
        lines.append(
            f"| {engine} | {s['docs_in']} | {s['docs_in_per_s']:.1f} | {ratio(s, 'docs_in_per_s')} "
            f"| {s['extract_s']:.1f} | {s['post_extraction_s']:.1f} "
            f"| {100 * s['post_extraction_share']:.1f}% ({100 * s['post_extraction_share_median']:.1f}%) "
            f"| {', '.join(s['post_extraction_steps'])} |")
    lines.append("")
    lines.append(f"Per-step seconds (summed over the {workers} workers, run with the lowest wall time):")
    lines.append("")
    lines.append("| engine | step | docs in | docs out | dropped | seconds |")
    lines.append("|---|---|---:|---:|---|---:|")
    for engine, s in summary.items():
        for step in s["steps"]:
            dropped = ", ".join(f"{k} {v}" for k, v in step["dropped"].items() if v) or "-"
            lines.append(f"| {engine} | {step['step']} | {step['docs_in']} | {step['docs_out']} | {dropped} "
                         f"| {step['seconds']:.1f} |")
    return "\n".join(lines)


def _git_state() -> dict:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"commit": git("rev-parse", "HEAD").strip(),
            "modified": [line[3:] for line in git("status", "--porcelain").splitlines() if line[:2] != "??"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", default=[DEFAULT_INPUT],
                        help="WARC files or globs (default: ../shared/data/web/dev-0000*.warc.gz)")
    parser.add_argument("--limit", type=int, help="records per shard (smoke runs)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine (median wall is reported)")
    parser.add_argument("--pipeline", choices=PIPELINES, default="backbone",
                        help="backbone: reader, extract, language_id (default); mdr: configs/english.yaml's "
                             "whole stage list, datatrove with URLFilter and the Gopher filters")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for every engine (default 2)")
    parser.add_argument("--extractor", choices=("trafilatura", "fast", "union", "resiliparse"),
                        help="refinery's extractor (default: the config's, trafilatura); datatrove keeps trafilatura")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    parser.add_argument("--json", metavar="PATH", help="also write all figures as JSON")
    parser.add_argument("--keep-tmp", action="store_true", help="keep each run's output folder")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    paths = sorted({os.path.abspath(p) for pattern in args.input for p in (glob.glob(pattern) or [pattern])})
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        print(f"map_phase: input not found: {missing[0]}", file=sys.stderr)
        return 2

    if args.child:
        os.environ.update(OFFLINE_ENV)
        sys.path.insert(0, str(ROOT))
        extra = {"extractor": args.extractor} if args.child.startswith("refinery") else {}
        result = CHILDREN[args.child](paths, args.out, args.workers, args.limit, args.pipeline, **extra)
        Path(args.result).write_text(json.dumps(result, indent=2))
        return 0

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        print(f"map_phase: unknown engine {unknown[0]!r}", file=sys.stderr)
        return 2
    records = count_records(paths, args.limit)
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    for round_ in range(args.repeat):
        for engine in engines[round_ % len(engines):] + engines[:round_ % len(engines)]:  # rotate the order
            print(f"[{round_ + 1}/{args.repeat}] {engine} ...", file=sys.stderr, flush=True)
            result = run_child(engine, args, paths, records)
            print(f"    {result['wall_s']:.1f} s, {result['docs_out']} docs out, "
                  f"load before {result['loadavg_1m_before']:.2f}", file=sys.stderr, flush=True)
            runs[engine].append(result)
    summary = {e: summarise(r) for e, r in runs.items()}
    table = markdown(summary, args.workers)
    print(table)
    if args.json:
        import datatrove
        import trafilatura

        from refinery import __version__

        report = {
            "benchmark": "map_phase",
            "command": " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "loadavg_after": os.getloadavg()},
            "versions": {"refinery": __version__, "datatrove": datatrove.__version__
                         if hasattr(datatrove, "__version__") else "0.10.1", "trafilatura": trafilatura.__version__},
            "git": _git_state(),
            "pipeline": args.pipeline, "extractor": args.extractor or "trafilatura",
            "inputs": paths, "limit": args.limit, "repeat": args.repeat, "workers": args.workers,
            "summary": summary, "runs": runs, "table_markdown": table,
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
