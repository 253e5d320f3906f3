"""Reliability with real processes: a `dask scheduler` and two `dask worker` processes on
127.0.0.1 (one of them killed mid-run), and inputs read over HTTP from a local server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from support import REPO, http_server, run_cli_subprocess, shared_path

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


def test_a_run_killed_at_random_moments_resumes_to_the_same_output(tmp_path, local_run):
    """kill -9 at seeded random moments (mid-write included), three times in a row in the same
    OUTPUT, then the same command once more: the output and the counts are the uninterrupted ones."""
    import random

    out = tmp_path / "out"
    command = [sys.executable, "-m", "refinery", "run", "configs/english.yaml", "--output", str(out), "--workers", "2"]
    moments = random.Random(8).sample([x / 2 for x in range(4, 24)], 3)
    killed = 0
    for moment in moments:
        run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=os.environ.copy(), start_new_session=True)
        try:
            run.wait(timeout=moment)
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(timeout=60)
            killed += 1
    assert killed >= 2, f"the run outpaced the kills at {moments} s"
    result = run_cli_subprocess("run", "configs/english.yaml", "--output", out, "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert documents(out) == documents(local_run)
    assert funnel(out) == funnel(local_run)
    assert not list(out.rglob("*.refinery-tmp-*"))


# --- mixes: the token shards themselves ----------------------------------------------------------

def small_web_mix(folder: Path) -> Path:
    """The English pipeline on the embedded sample plus two small curated sources (one held out
    in part), a small vocabulary and small files, so every phase has several tasks."""
    import json

    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "prose.jsonl", "w") as f:
        for n in range(80):
            f.write(json.dumps({"id": f"p{n}", "text": f"Entry {n}. " + "a quiet river under old bridges " * (5 + n % 7)})
                    + "\n")
    with open(folder / "code.jsonl", "w") as f:
        for n in range(30):
            f.write(json.dumps({"id": f"c{n}", "text": f"def f{n}(x):\n    return x * {n}\n" * 4}) + "\n")
    config = {
        "name": "reliability-mix",
        "sources": [
            {"name": "web", "config": str(REPO / "configs" / "english.yaml"), "license": "odc-by"},
            {"name": "prose", "paths": [str(folder / "prose.jsonl")], "license": "cc0", "max_epochs": 3,
             "heldout_fraction": 0.1},
            {"name": "code", "paths": [str(folder / "code.jsonl")], "format": "code", "license": "mit",
             "max_epochs": 3},
        ],
        "mix": {"shares": {"web": 0.8, "prose": 0.15, "code": 0.05}, "seed": 5},
        "tokenize": {"vocab_size": 1024, "max_file_tokens": 4000, "train_sample_bytes": 2_000_000},
    }
    path = folder / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def mix_outputs(out: Path) -> dict:
    """Every output byte that must not change: token shards, Parquet, held-out tokens, tokenizer,
    manifest, dataset card; stats.json without its timings."""
    import json

    def untimed(value):
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if "seconds" not in k}
        if isinstance(value, list):
            return [untimed(v) for v in value]
        return value

    files = {str(p.relative_to(out)): p.read_bytes()
             for folder in ("tokens", "documents", "heldout", "tokenizer") for p in sorted((out / folder).rglob("*"))
             if p.is_file() and "_work" not in p.parts}
    files["README.md"] = (out / "README.md").read_bytes()
    files["stats.json"] = untimed(json.loads((out / "stats.json").read_text()))
    return files


@pytest.fixture(scope="module")
def mix_run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("mix")
    config = small_web_mix(folder / "data")
    out = folder / "out"
    result = run_cli_subprocess("run", config, "--output", out, "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return config, out


def test_a_mix_gives_the_same_bytes_with_one_worker_or_two(tmp_path, mix_run):
    config, reference = mix_run
    expected = mix_outputs(reference)
    assert any(name.startswith("tokens/part-") and name.endswith(".bin") for name in expected)
    assert any(name.startswith("heldout/prose/") for name in expected)
    out = tmp_path / "one"
    result = run_cli_subprocess("run", config, "--output", out, "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert mix_outputs(out) == expected


def test_a_mix_killed_in_each_phase_resumes_to_the_same_bytes(tmp_path, mix_run):
    """kill -9 once the web pipeline has a finished shard, once a source shard is tokenized and
    once an output file is written; then the same command finishes with the same bytes, and the
    work that was done is not done again."""
    config, reference = mix_run
    out = tmp_path / "out"
    command = [sys.executable, "-m", "refinery", "run", str(config), "--output", str(out), "--workers", "2"]
    for folder in ("sources/web/_markers/map", "_markers/mix/tokenize", "_markers/mix/write"):
        run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=os.environ.copy(), start_new_session=True)
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline:
            if (out / folder).is_dir() and any((out / folder).iterdir()):
                os.killpg(run.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
        run.wait(timeout=60)
        assert run.returncode == -signal.SIGKILL, f"the mix ended before {folder} appeared"
        assert not (out / "stats.json").exists()
    tokenizer_written = (out / "tokenizer" / "tokenizer.json").stat().st_mtime_ns
    result = run_cli_subprocess("run", config, "--output", out, "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tokenizer: training" not in result.stderr  # trained before the last kill: not again
    assert (out / "tokenizer" / "tokenizer.json").stat().st_mtime_ns == tokenizer_written
    assert mix_outputs(out) == mix_outputs(reference)
    assert not list(out.rglob("*.refinery-tmp-*"))  # a killed task's temporaries are swept


def test_force_starts_a_mix_over(tmp_path, mix_run):
    config, reference = mix_run
    out = tmp_path / "out"
    shutil.copytree(reference, out)  # keeps modification times
    before = {p: p.stat().st_mtime_ns for p in (out / "sources" / "web" / "documents").glob("*.parquet")}
    result = run_cli_subprocess("run", config, "--output", out, "--workers", "2", "--force")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tokenizer: training" in result.stderr
    assert before and all(p.stat().st_mtime_ns != t for p, t in before.items())  # the pipeline ran again
    assert mix_outputs(out) == mix_outputs(reference)


# --- a disk that fills up ------------------------------------------------------------------------

def assert_nothing_half_written(out: Path) -> None:
    """What a failed run leaves: no temporaries, no stats.json, every Parquet file whole and every
    finished marker's outputs in place."""
    import json

    assert not (out / "stats.json").exists()
    assert not list(out.rglob("*.refinery-tmp-*"))
    for path in out.rglob("*.parquet"):
        pq.read_metadata(path)  # raises on a truncated file
    for marker in (out / "_markers" / "map").glob("*.done"):
        outputs = json.loads(marker.read_text())["outputs"]  # the engine's marker: each output's size
        documents = out / "filtered" / f"{marker.stem}.parquet"
        assert documents.stat().st_size == outputs[str(documents)]


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: the English sample's outputs need about 800 KiB."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the file-size-limit test covers the rest)")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_disk_that_fills_up_exits_2_and_the_run_resumes_after(small_disk, local_run):
    out = small_disk / "out"
    result = run_cli_subprocess("run", "configs/english.yaml", "--output", out, "--workers", "2")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (f"refinery: could not write {out}: No space left on device; free some "
                                              "space and run the same command again to resume")
    assert "Traceback" not in result.stderr and "ERROR" not in result.stderr
    assert list((out / "_markers" / "map").glob("*.done")), "the disk should fill after the map phase"
    assert_nothing_half_written(out)
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    result = run_cli_subprocess("run", "configs/english.yaml", "--output", out, "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert documents(out) == documents(local_run)
    assert funnel(out) == funnel(local_run)


def test_a_file_size_limit_mid_write_exits_2_without_half_written_files(tmp_path, local_run):
    """The kernel refuses writes past RLIMIT_FSIZE (EFBIG) in the driver and every worker, the same
    way a full disk refuses them (ENOSPC): mid-file, in whichever task gets there."""
    import resource

    out = tmp_path / "out"
    limit = 60_000  # the dedup band files of the sample are about 90 KB (4 bytes a band key)
    command = [sys.executable, "-m", "refinery", "run", "configs/english.yaml", "--output", str(out), "--workers", "2"]
    failed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ.copy(), timeout=300,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert failed.returncode == 2
    assert failed.stderr.splitlines()[-1] == (f"refinery: could not write {out}: File too large; free some space "
                                              "and run the same command again to resume")
    assert_nothing_half_written(out)
    result = run_cli_subprocess("run", "configs/english.yaml", "--output", out, "--workers", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert documents(out) == documents(local_run)
    assert funnel(out) == funnel(local_run)


def test_shard_names_do_not_depend_on_where_the_checkout_or_the_cache_lies(tmp_path, monkeypatch):
    """Output names and dedup keys carry the shard id: a moved checkout (CI clones elsewhere) or
    another machine's sample cache must not change them; same-named files still get distinct ids."""
    from refinery.io import expand_inputs

    def shard_ids(root: Path) -> list[str]:
        files = ["data/a.warc.gz", "data/more/a.warc.gz", "x/same/b.warc.gz", "y/same/b.warc.gz"]
        for name in files:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"x")
        monkeypatch.setenv("REFINERY_CACHE", str(root / "cache"))
        shards = expand_inputs([*(str(root / name) for name in files), "sample://english"])
        return [shard.shard_id for shard in shards]

    here, elsewhere = shard_ids(tmp_path / "one"), shard_ids(tmp_path / "two" / "deeper")
    assert here == elsewhere
    assert len(set(here)) == len(here) == 6
