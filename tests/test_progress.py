"""Progress inside shards, task and driver logs in OUTPUT/logs/, dedup times in the funnel."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, run_cli_inprocess

from refinery.engine import Engine, Task
from refinery.engine.output import is_own_name
from refinery.engine.watch import Monitor, Phase
from refinery.progress import Display, PlainProgress, Tally

# --- the display ------------------------------------------------------------------------------

def test_a_tally_counts_rates_and_an_eta_from_input_bytes():
    phase = Phase(["map-a", "map-b", "keys-a", "keys-b"], {"map-a": 1000, "map-b": 3000, "keys-a": None,
                                                         "keys-b": None}, started=100.0)
    states = {"map-a": {"state": "done", "counts": {"records": 50, "documents": 20}},
              "map-b": {"state": "running", "counts": {"records": 30, "documents": 10, "bytes": 1000}},
              "keys-a": {"state": "done", "counts": {"documents": 20}}}
    tally = Tally.of(phase, states, now=110.0)
    assert tally.counts == {"records": 80, "documents": 30}  # the lead group's (map), not keys' documents too
    assert tally.rates["records"] == pytest.approx(8.0)
    assert tally.fraction == pytest.approx(0.5) and tally.eta == pytest.approx(10.0)  # 2,000 of 4,000 bytes in 10 s
    assert tally.line() == "80 records (8.0/s), 30 documents (3.0/s), 1/2 shards, keys 1/2, ETA 10s"


def test_resumed_shards_are_named_and_left_out_of_the_rates():
    phase = Phase(["map-a", "map-b"], {"map-a": 10, "map-b": 10}, started=0.0)
    states = {"map-a": {"state": "resumed", "counts": {"records": 5}},
              "map-b": {"state": "done", "counts": {"records": 7}}}
    line = Tally.of(phase, states, now=7.0).line("done")
    assert line == "12 records (1.0/s), 2/2 shards, 1 shards resumed, done in 7s"


def test_plain_lines_come_on_a_grid_while_something_moves(monkeypatch):
    lines: list[str] = []
    display = PlainProgress()
    monkeypatch.setattr(display, "message", lines.append)
    phase = Phase(["map-a"], {"map-a": None}, started=0.0)
    display.begin(phase)
    running = {"map-a": {"state": "running", "counts": {"records": 1}}}
    for now in (1.0, 5.0, 9.0):
        display.update(phase, running, now)
    assert lines == []
    display.update(phase, running, 9.9)
    assert lines == ["progress: 1 records (0.1/s), 0/1 shards"]
    display.update(phase, running, 19.7)  # nothing moved: no line
    display.update(phase, {"map-a": {"state": "running", "counts": {"records": 9}}}, 29.5)
    assert len(lines) == 2 and lines[-1].startswith("progress: 9 records")
    assert display.due() == pytest.approx(39.2)
    display.end(phase, {"map-a": {"state": "done", "counts": {"records": 9}}}, failed=False)
    assert lines[-1].endswith("1/1 shards, done in " + lines[-1].rsplit(" ", 1)[-1])


def test_log_files_are_refinery_names():
    assert is_own_name(Path("driver.log")) and is_own_name(Path("map-x.log"))


# --- the engine hands tasks a progress callable -----------------------------------------------

def _reporting(path: str, report=None) -> dict:
    report(records=3, documents=1)
    seen = json.loads(Path(path).read_text())
    return {"documents": 1, "seen": seen["counts"]}


class _Recorder(Display):
    def __init__(self):
        super().__init__()
        self.ended: list[dict] = []

    def end(self, phase, states, failed):
        self.ended.append(states)
        return super().end(phase, states, failed)


def test_a_task_reports_through_a_file_and_keeps_a_log(tmp_path):
    display = _Recorder()
    progress = tmp_path / "_progress" / "count-1.json"
    task = Task(key="count-1", func=_reporting, args=(str(progress),), reports=True)
    with Engine(scheduler="sync") as engine, Monitor(str(tmp_path), display):
        [result] = engine.run([task])
    assert result["seen"] == {"records": 3, "documents": 1}  # what the task wrote, as the driver reads it
    assert display.ended[0]["count-1"]["state"] == "done"
    assert display.ended[0]["count-1"]["counts"] == {"documents": 1}
    log = (tmp_path / "logs" / "tasks" / "count-1.log").read_text()
    assert "count-1 start:" in log and "count-1 end:" in log and "documents 1" in log
    assert not (tmp_path / "_progress").exists()  # the monitor leaves no progress files behind


# --- logs of a failed run, dedup times ----------------------------------------------------------

def test_a_failed_run_keeps_its_logs(tmp_path, monkeypatch):
    from refinery.stages.url_filter import UrlFilter

    def broken(self, batch):
        import warnings

        warnings.warn("a library warns inside the task")
        raise RuntimeError("planted failure")

    monkeypatch.setattr(UrlFilter, "process_batch", broken)
    out = tmp_path / "out"
    result = run_cli_inprocess("run", "configs/english.yaml", "--output", out, "--scheduler", "sync")
    assert result.returncode == 1
    lines = result.stderr_lines
    assert lines[-1] == f"refinery: logs: {out / 'logs' / 'driver.log'}"
    assert lines[-2] == "RuntimeError: planted failure"  # the error line, then where the logs are
    driver = (out / "logs" / "driver.log").read_text()
    assert "start: refinery" in driver and "configs/english.yaml (fingerprint " in driver
    assert "failed: RuntimeError: planted failure" in driver and "Traceback" in driver
    [task_log] = [p for p in (out / "logs" / "tasks").glob("map-*.log") if "planted" in p.read_text()]
    text = task_log.read_text()
    assert "start:" in text and "failed: RuntimeError: planted failure" in text
    assert "a library warns inside the task" in text


def test_the_funnel_carries_dedup_times(tmp_path):
    out = tmp_path / "out"
    result = run_cli_inprocess("run", "configs/english.yaml", "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    timings = stats["dedup"]["timings"]
    dedup = [row for row in stats["funnel"] if row["stage"] in timings["stage_seconds"]]
    assert [row["stage"] for row in dedup] == stats["dedup"]["stages"]  # exact, minhash, url, substring
    assert all(row["seconds"] > 0 for row in dedup)
    phases = sum(v for k, v in timings.items() if k.endswith("_seconds") and k != "stage_seconds")
    assert sum(row["seconds"] for row in dedup) == pytest.approx(phases, abs=0.01)
    assert (out / "logs" / "driver.log").is_file() and list((out / "logs" / "tasks").glob("apply-*.log"))
    assert "progress: " in result.stderr and "done in" in result.stderr


# --- a 50 MB shard shows progress inside it ------------------------------------------------------

@pytest.mark.slow
def test_a_big_shard_reports_progress_at_least_every_10_s(shared_data, tmp_path):
    big = tmp_path / "big.warc.gz"
    with open(big, "wb") as handle:  # gzip members concatenate: one ~53 MB WARC
        for part in sorted((shared_data / "web").glob("*.warc.gz")):
            handle.write(part.read_bytes())
    assert big.stat().st_size > 40_000_000
    out = tmp_path / "out"
    command = [sys.executable, "-m", "refinery", "run", "configs/english.yaml", "--input", str(big),
               "--output", str(out), "--workers", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = []
    for line in process.stderr:  # not a terminal: the plain form, one line at a time
        lines.append((time.monotonic(), line.rstrip("\n")))
    assert process.wait(timeout=900) == 0, "\n".join(text for _, text in lines[-40:])
    inside = [(at, int(re.match(r"progress: ([\d,]+) records", text).group(1).replace(",", "")))
              for at, text in lines if text.startswith("progress: ") and "0/1 shards" in text]
    assert len(inside) >= 2, lines  # the shard takes a while: several lines while it runs
    shown = [at for at, text in lines if text.startswith("progress: ") and "shards" in text]
    gaps = [b - a for a, b in itertools.pairwise(shown)]
    assert max(gaps) <= 10.0, gaps
    records = [n for _, n in inside]
    assert records == sorted(records) and records[-1] > records[0] > 0, records
    assert "ETA" in next(text for _, text in lines if text.startswith("progress: ") and "0/1 shards" in text)
