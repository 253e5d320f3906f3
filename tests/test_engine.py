"""The engine seam: one runner decides from a task's marker whether it runs, and only
refinery/engine/ imports Dask."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from support import REPO, run_cli_inprocess

from refinery.engine import Result, Task, run_task

CALLS: list[str] = []


@dataclass
class Copied(Result):
    characters: int


def copy_upper(source: str, target: str) -> Copied:
    CALLS.append(source)
    text = Path(source).read_text()
    Path(target).write_text(text.upper())
    return Copied(len(text))


def copy_task(tmp_path: Path, fingerprint: str = "f1") -> Task:
    source, target = tmp_path / "in.txt", tmp_path / "out.txt"
    return Task(key="copy", func=copy_upper, args=(str(source), str(target)), fingerprint=fingerprint,
                inputs=(str(source),), outputs=(str(target),), marker=str(tmp_path / "_markers" / "copy.done"),
                result_type=Copied)


def test_a_finished_task_is_skipped_and_its_result_comes_back_typed(tmp_path):
    (tmp_path / "in.txt").write_text("abc")
    CALLS.clear()
    first = run_task(copy_task(tmp_path))
    again = run_task(copy_task(tmp_path))
    assert CALLS == [str(tmp_path / "in.txt")]
    assert first == again == Copied(3) and again.resumed and not first.resumed
    assert json.loads((tmp_path / "_markers" / "copy.done").read_text())["result"] == {"characters": 3}


def test_a_task_runs_again_when_its_input_config_or_output_changed(tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("abc")
    CALLS.clear()
    run_task(copy_task(tmp_path))
    stat = source.stat()
    source.write_text("xyz")  # rewritten in place: same size, new content
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert run_task(copy_task(tmp_path)) == Copied(3) and (tmp_path / "out.txt").read_text() == "XYZ"
    run_task(copy_task(tmp_path, fingerprint="f2"))  # another config
    (tmp_path / "out.txt").write_text("truncated")  # an output that is not what the marker recorded
    run_task(copy_task(tmp_path, fingerprint="f2"))
    assert len(CALLS) == 4


def test_a_task_that_fails_leaves_no_marker(tmp_path):
    (tmp_path / "in.txt").write_text("abc")
    task = copy_task(tmp_path)
    run_task(task)
    broken = Task(key="copy", func=_fail, fingerprint="other", inputs=task.inputs, outputs=task.outputs,
                  marker=task.marker)
    try:
        run_task(broken)
    except RuntimeError:
        pass
    assert not Path(task.marker).exists()


def _fail():
    raise RuntimeError("boom")


def test_an_input_shard_rewritten_in_place_is_processed_again(tmp_path):
    """The map marker knows its input's identity: a WARC replaced under the same name is read again."""
    from refinery.sample import write_sample_shard

    shard = tmp_path / "input.warc.gz"
    write_sample_shard(shard, 0)
    out = tmp_path / "out"
    args = ("run", REPO / "configs" / "english.yaml", "--input", shard, "--output", out, "--scheduler", "sync")
    assert run_cli_inprocess(*args).returncode == 0
    before = json.loads((out / "stats.json").read_text())["input"]["records"]
    assert run_cli_inprocess(*args).returncode == 0  # nothing changed: resumed, same output
    assert json.loads((out / "stats.json").read_text())["input"]["records"] == before

    write_sample_shard(shard, 1, per_shard=7)  # another shard's records, written over the same path
    assert run_cli_inprocess(*args).returncode == 0
    after = json.loads((out / "stats.json").read_text())["input"]["records"]
    assert after != before
    ids = {i for f in (out / "documents").glob("*.parquet") for i in pq.read_table(f)["id"].to_pylist()}
    fresh = tmp_path / "fresh"
    assert run_cli_inprocess("run", REPO / "configs" / "english.yaml", "--input", shard, "--output", fresh,
                             "--scheduler", "sync").returncode == 0
    assert ids == {i for f in (fresh / "documents").glob("*.parquet") for i in pq.read_table(f)["id"].to_pylist()}
    assert after == json.loads((fresh / "stats.json").read_text())["input"]["records"]


def test_only_the_engine_imports_dask():
    pattern = re.compile(r"^\s*(import|from) (dask|distributed)\b", re.M)
    importers = sorted(str(p.relative_to(REPO)) for folder in ("refinery", "stages", "tokenizer")
                       for p in (REPO / folder).rglob("*.py") if pattern.search(p.read_text()))
    assert importers and all(p.startswith("refinery/engine/") for p in importers), importers


def test_parsing_a_config_loads_no_model_parser_or_torch():
    code = ("import sys, refinery.config as c; c.load_config('configs/english.yaml'); "
            "print(sorted(m for m in ('numba', 'resiliparse', 'torch', 'dask', 'trafilatura', 'fasttext') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _length(path: str, *upstream) -> int:
    return len(Path(path).read_text()) + sum(upstream)


def test_small_tasks_share_dask_tasks_and_results_keep_their_order(tmp_path):
    """Tiny root tasks run several to a Dask task (and the tasks after each bundle as one), big ones
    alone; every task still has its own result, in order, and its own marker."""
    from refinery.engine import Engine
    from refinery.engine.cluster import BUNDLE_INPUT_BYTES, plan_units

    small = []
    for n in range(40):
        (tmp_path / f"s{n}.txt").write_text("x" * n)
        small.append(Task(key=f"map-{n}", func=_length, args=(str(tmp_path / f"s{n}.txt"),),
                          inputs=(str(tmp_path / f"s{n}.txt"),), marker=str(tmp_path / "_markers" / f"map-{n}.done")))
    big = tmp_path / "big.txt"
    with open(big, "wb") as handle:
        handle.truncate(BUNDLE_INPUT_BYTES)  # sparse: as big as the bound, so alone
    tasks = [*small, Task(key="map-big", func=len, args=("abc",), inputs=(str(big),))]
    tasks += [Task(key=f"keys-{n}", func=_length, args=(str(tmp_path / f"s{n}.txt"), 1), after=(f"map-{n}",))
              for n in range(40)]
    units = plan_units(tasks, workers=2)
    sizes = [[t.key.split("-")[0] for t in unit] for unit in units]
    assert sizes == [["map"] * 5] * 8 + [["map"]] + [["keys"] * 5] * 8  # 41 roots // (4 x 2 workers) = 5 a unit
    assert [t.key for t in units[8]] == ["map-big"] and [t.key for t in units[9]] == [f"keys-{n}" for n in range(5)]
    with Engine(scheduler="sync") as engine:
        results = engine.run(tasks)
    assert results == [*range(40), 3, *(n + 1 for n in range(40))]
    assert all((tmp_path / "_markers" / f"map-{n}.done").exists() for n in range(40))
