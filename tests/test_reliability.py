"""Reliability with real processes: a `dask scheduler` and two `dask worker` processes on
127.0.0.1 (one of them killed mid-run), and inputs read over HTTP from a local server."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support import REPO, run_cli_subprocess, shared_path

pytestmark = pytest.mark.slow

DASK = Path(sys.executable).parent / "dask"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def dask_cluster(tmp_path: Path, workers: int = 2):
    """A scheduler and ``workers`` single-threaded worker processes, as separate commands."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    port = address.rsplit(":", 1)[1]
    logs = open(tmp_path / "dask.log", "w")
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", port, "--no-dashboard"],
                              stdout=logs, stderr=logs, cwd=REPO)]
    worker_procs = {}
    try:
        for n in range(workers):
            worker_procs[f"w{n}"] = subprocess.Popen(
                [str(DASK), "worker", address, "--name", f"w{n}", "--nworkers", "1", "--nthreads", "1",
                 "--no-dashboard", "--local-directory", str(tmp_path / f"w{n}")],
                stdout=logs, stderr=logs, cwd=REPO)
        procs += worker_procs.values()
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)
        yield address, worker_procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()


def documents(out: Path) -> dict[str, list[dict]]:
    return {f.name: pq.read_table(f).to_pylist() for f in sorted((out / "documents").glob("*.parquet"))}


def rows_by_id(out: Path) -> list[dict]:
    """Every document, whatever file it is in (shard file names hash the input's path or URL)."""
    return sorted((row for rows in documents(out).values() for row in rows), key=lambda row: row["id"])


def funnel(out: Path) -> list[tuple]:
    import json

    stats = json.loads((out / "stats.json").read_text())
    return [(s["stage"], s["docs_in"], s["docs_out"], s["dropped"]) for s in stats["funnel"]]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    result = run_cli_subprocess("run", "configs/english.yaml", "--output", out, "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_a_real_dask_cluster_gives_the_local_output(tmp_path, local_run):
    with dask_cluster(tmp_path) as (address, _):
        out = tmp_path / "out"
        result = run_cli_subprocess("run", "configs/english.yaml", "--output", out, "--scheduler", address)
    assert result.returncode == 0, result.stderr[-3000:]
    assert documents(out) == documents(local_run)
    assert funnel(out) == funnel(local_run)


def test_a_worker_killed_mid_run_is_survived(tmp_path, local_run):
    from distributed import Client

    with dask_cluster(tmp_path) as (address, workers):
        out = tmp_path / "out"
        run = subprocess.Popen([sys.executable, "-m", "refinery", "run", "configs/english.yaml", "--output", str(out),
                                "--scheduler", address], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=os.environ.copy())
        killed = None
        with Client(address, timeout="30s") as watcher:
            deadline = time.monotonic() + 120
            while killed is None and time.monotonic() < deadline and run.poll() is None:
                names = {a: w["name"] for a, w in watcher.scheduler_info()["workers"].items()}
                busy = [names[a] for a, tasks in watcher.processing().items() if tasks and a in names]
                if busy:
                    killed = busy[0]
                    os.kill(workers[killed].pid, signal.SIGKILL)  # the nanny process: it and its worker die
                    for child in _children(workers[killed].pid):
                        os.kill(child, signal.SIGKILL)
                time.sleep(0.05)
        stdout, stderr = run.communicate(timeout=600)
    assert killed is not None, "the run finished before a worker had a task"
    assert run.returncode == 0, stderr[-3000:]
    assert documents(out) == documents(local_run)
    assert funnel(out) == funnel(local_run)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # --limit stops reading a shard early
            super().handle()


@contextlib.contextmanager
def http_server(folder: Path):
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_inputs_served_over_http_give_the_local_output(tmp_path):
    web = shared_path("web")
    shards = sorted(web.glob("*.warc.gz"))
    assert shards
    local, remote = tmp_path / "local", tmp_path / "remote"
    common = ["--workers", "2", "--limit", "60"]
    local_args = [a for shard in shards for a in ("--input", str(shard))]
    assert run_cli_subprocess("run", "configs/english.yaml", "--output", local, *local_args, *common).returncode == 0
    with http_server(web) as base:
        remote_args = [a for shard in shards for a in ("--input", f"{base}/{shard.name}")]
        result = run_cli_subprocess("run", "configs/english.yaml", "--output", remote, *remote_args, *common)
    assert result.returncode == 0, result.stderr[-3000:]
    assert rows_by_id(remote) == rows_by_id(local) and rows_by_id(local)
    assert funnel(remote) == funnel(local)


def test_one_worker_or_two_give_identical_output(tmp_path, local_run):
    out = tmp_path / "one"
    result = run_cli_subprocess("run", "configs/english.yaml", "--output", out, "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert documents(out) == documents(local_run)
    assert funnel(out) == funnel(local_run)


@pytest.mark.parametrize("marker", ["map", "dedup.done"])
def test_a_driver_killed_with_sigkill_resumes_to_the_same_output(tmp_path, local_run, marker):
    """kill -9 the whole run (driver and its local workers) once a phase has finished, then run
    the same command again."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "refinery", "run", "configs/english.yaml", "--output", str(out), "--workers", "2"]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=os.environ.copy(), start_new_session=True)
    target = out / "_markers" / marker
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        if (target.is_dir() and any(target.iterdir())) or target.is_file():
            os.killpg(run.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "stats.json").exists()
    result = run_cli_subprocess("run", "configs/english.yaml", "--output", out, "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert documents(out) == documents(local_run)
    assert funnel(out) == funnel(local_run)
