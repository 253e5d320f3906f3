"""The whole hostile set in one `refinery run`: exit 0, every stage's funnel balanced, each hostile
class ending in a counted drop, and no worker past 2 GiB of RSS — with a gzip bomb that decodes to
2.5 GiB in a file of a few MB among the inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from hostile import write_all
from support import ENGLISH_CONFIG, REPO, SHARED_DATA, http_response, write_warc

pytestmark = pytest.mark.slow

GIB = 1 << 30


def big_gzip_bomb(path: Path, decoded: int = 5 * GIB // 2) -> Path:
    """One response whose Content-Encoding: gzip body inflates to ``decoded`` bytes of HTML."""
    block = b"<p>" + b"a" * (1 << 20) + b"</p>"
    deflater = zlib.compressobj(6, zlib.DEFLATED, 31)  # ~2.6 MB: under max_record_bytes, so it is decoded
    body = b"".join(deflater.compress(block) for _ in range(decoded // len(block))) + deflater.flush()
    return write_warc(path, [http_response("http://bomb.test/", body, "text/html",
                                           extra_headers=[("Content-Encoding", "gzip")])])


def peak_rss_of_tree(process: subprocess.Popen, peaks: dict, stop: threading.Event) -> None:
    import psutil

    root = psutil.Process(process.pid)
    while not stop.is_set():
        try:
            for child in [root, *root.children(recursive=True)]:
                try:
                    peaks[child.pid] = max(peaks.get(child.pid, 0), child.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            return
        time.sleep(0.05)


def test_the_hostile_set_runs_in_one_run_within_bounds(tmp_path):
    folder = tmp_path / "inputs"
    files = write_all(folder)
    bomb = big_gzip_bomb(folder / "big-bomb.warc.gz")
    assert bomb.stat().st_size < 50 << 20
    inputs = [str(p) for p in [*files.values(), bomb]]
    samples = SHARED_DATA / "warc-samples"
    if samples.is_dir():
        inputs += [str(p) for p in sorted(samples.iterdir())]
    out = tmp_path / "out"
    command = [sys.executable, "-m", "refinery", "run", str(ENGLISH_CONFIG), "--output", str(out), "--workers", "2",
               *(arg for path in inputs for arg in ("--input", path))]
    peaks: dict[int, int] = {}
    stop = threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = threading.Thread(target=peak_rss_of_tree, args=(process, peaks, stop), daemon=True)
    sampler.start()
    try:
        stdout, stderr = process.communicate(timeout=900)
    finally:
        stop.set()
        sampler.join()
    wall = time.perf_counter() - started
    assert process.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr
    stats = json.loads((out / "stats.json").read_text())
    for stage in stats["funnel"]:
        assert stage["docs_in"] == stage["docs_out"] + sum(stage["dropped"].values()), stage["stage"]
    dropped = {reason: n for stage in stats["funnel"] for reason, n in stage["dropped"].items()}
    assert dropped.get("decoded_too_large", 0) >= 4  # three small bombs and the big one
    assert dropped.get("html_too_deep", 0) >= 1
    assert max(peaks.values()) < 2 * GIB, {pid: rss >> 20 for pid, rss in peaks.items()}
    print(f"\nhostile run: {len(inputs)} inputs, {stats['input']['records']} records, {wall:.1f} s, "
          f"peak RSS {max(peaks.values()) >> 20} MiB, drops {dict(sorted(dropped.items()))}")
