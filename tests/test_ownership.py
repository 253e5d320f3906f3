"""refinery deletes only what it wrote, refuses folders that are not its own, and lets one run at a
time write an output folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from support import ENGLISH_CONFIG, run_cli_inprocess

USER_FILES = ["documents/thesis.docx", "dropped/photos/cat.jpg", "notes/draft.tmp", "notes/.x.tmp-123",
              "stats/mine.csv", "report.tmp"]


def plant(out) -> dict:
    planted = {}
    for name in USER_FILES:
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"user data: {name}")
        planted[path] = path.read_text()
    return planted


def run(out, *extra):
    return run_cli_inprocess("run", ENGLISH_CONFIG, "--output", out, "--scheduler", "sync", *extra)


def test_a_folder_that_is_not_a_refinery_output_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "mine"
    planted = plant(out)
    result = run(out)
    assert result.returncode == 2
    assert all(path.read_text() == text for path, text in planted.items())
    assert len(result.stderr_lines) == 1 and "not a refinery output" in result.stderr and "--force" in result.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(USER_FILES)


def test_force_runs_there_and_still_removes_nothing_refinery_did_not_write(tmp_path):
    out = tmp_path / "mine"
    planted = plant(out)
    assert run(out, "--force").returncode == 0
    assert run(out, "--force").returncode == 0  # and again, over its own earlier output
    assert all(path.read_text() == text for path, text in planted.items())
    assert (out / "stats.json").is_file() and not (out / ".refinery.lock").exists()


def test_a_second_run_on_a_held_folder_exits_2_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    assert run(out).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import psutil

        (out / ".refinery.lock").write_text(json.dumps({
            "pid": holder.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00",
            "process_start": psutil.Process(holder.pid).create_time()}))
        result = run(out)
        assert result.returncode == 2 and len(result.stderr_lines) == 1
        assert f"pid {holder.pid} on {socket.gethostname()}, started 2026-01-01T00:00:00" in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "out"
    assert run(out).returncode == 0
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (out / ".refinery.lock").write_text(json.dumps({"pid": gone.pid, "host": socket.gethostname(),
                                                    "started": "2026-01-01T00:00:00", "process_start": 1.0}))
    assert run(out).returncode == 0
    assert not (out / ".refinery.lock").exists()


def test_temporaries_of_a_killed_task_are_swept_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    assert run(out).returncode == 0
    stale = out / "documents" / f".x.parquet.refinery-tmp-{os.getpid() + 1}"
    stale.write_bytes(b"half")
    keep = out / "documents" / "x.parquet.tmp-7"
    keep.write_bytes(b"not ours")
    assert run(out).returncode == 0
    assert not stale.exists() and keep.exists()
