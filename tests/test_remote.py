"""Every wait on something outside refinery is bounded: remote inputs that stall (before answering
or halfway through a WARC), a `--scheduler` nobody answers at, a `--tokenizer` that is not one.
Each server here listens on 127.0.0.1 only, is started by its fixture and always shut down."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from support import ENGLISH_CONFIG, run_cli_inprocess, run_cli_subprocess

QUICK = {"connect_timeout_s": 1.0, "read_timeout_s": 1.0, "retries": 1}
HOLD_S = 60  # the longest a stalling server holds a connection (it lets go at shutdown)


@pytest.fixture
def quick(monkeypatch):
    """Small timeouts: in the config handed to refinery, and as the default where none is passed."""
    from refinery import io
    from refinery.config import InputConfig

    settings = InputConfig(**QUICK)
    monkeypatch.setattr(io, "DEFAULT_INPUT", settings)
    monkeypatch.setattr(io, "BACKOFF_S", 0.1)
    return settings


def quick_config(tmp_path: Path) -> Path:
    """configs/english.yaml with the small input timeouts."""
    raw = yaml.safe_load(ENGLISH_CONFIG.read_text())
    raw.setdefault("input", {}).update(QUICK)
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# --- servers ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def silent_server():
    """Accepts connections and never answers. Yields (base URL, accepted-connections counter)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop, held, accepted = threading.Event(), [], [0]

    def serve():
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = listener.accept()
                held.append(conn)
                accepted[0] += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()


class _StallingHandler(BaseHTTPRequestHandler):
    """Serves `server.data` with HEAD and (ranged) GET, but sends only the bytes before
    `server.stall_at`, then holds the connection without a word."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _range(self) -> tuple[int, int]:
        size = len(self.server.data)
        spec = self.headers.get("Range", "")
        if spec.startswith("bytes="):
            first, _, last = spec.removeprefix("bytes=").partition("-")
            return int(first), min(int(last) if last else size - 1, size - 1)
        return 0, size - 1

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        first, last = self._range()
        self.send_response(206 if "Range" in self.headers else 200)
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(self.server.data)}")
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(self.server.data[first:max(first, min(last + 1, self.server.stall_at))])
            self.wfile.flush()
            self.server.stop.wait(HOLD_S)


@contextlib.contextmanager
def stalling_server(data: bytes, stall_at: int):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    server.data, server.stall_at, server.stop = data, stall_at, threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def half_a_warc(tmp_path):
    """A real WARC (the embedded sample's generator) served up to half its bytes, then silence."""
    from refinery.sample import write_sample_shard

    shard = tmp_path / "shard.warc.gz"
    write_sample_shard(shard, 0)
    data = shard.read_bytes()
    with stalling_server(data, len(data) // 2) as base:
        yield f"{base}/shard.warc.gz"


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


# --- remote inputs ---------------------------------------------------------------------------------

def test_a_silent_input_is_one_config_line_at_expansion(tmp_path, quick):
    """`--dry-run` on a server that accepts and never answers: exit 2, one line naming the input,
    after (retries + 1) tries bounded by the read timeout, never a hang."""
    with silent_server() as (address, accepted):
        url = f"http://{address}/x.warc.gz"
        start = time.monotonic()
        result = run_cli_inprocess("run", quick_config(tmp_path), "--input", url, "--output", tmp_path / "out",
                                   "--dry-run")
        elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert "input.paths[0]" in line and url in line and "2 tries" in line, line
    assert elapsed < 30
    assert accepted[0] == 2  # input.retries 1: tried twice, not forever


def test_expansion_gives_up_within_its_bounds_and_retries_only_what_may_pass(quick):
    from refinery.config import ConfigError, InputConfig
    from refinery.io import expand_inputs

    with silent_server() as (address, accepted):
        start = time.monotonic()
        with pytest.raises(ConfigError) as err:
            expand_inputs([f"http://{address}/a.warc.gz"], InputConfig(read_timeout_s=0.5, retries=2))
        assert time.monotonic() - start < 3 * 0.5 + 0.1 + 0.2 + 5
        assert err.value.key == "input.paths[0]" and "3 tries" in err.value.message
        assert accepted[0] == 3
    with socket.create_server(("127.0.0.1", 0)) as refusing:  # nothing accepts: connection refused, retried
        port = refusing.getsockname()[1]
    with pytest.raises(ConfigError, match=r"input\.paths\[0\].*cannot reach.*2 tries"):
        expand_inputs([f"http://127.0.0.1:{port}/a.warc.gz"])


def test_a_missing_input_is_not_tried_again(tmp_path, quick):
    """A 404 is an answer: one request, 'input not found'."""
    import functools
    from http.server import SimpleHTTPRequestHandler

    from refinery.config import ConfigError
    from refinery.io import expand_inputs

    class Counting(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    requests: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        with pytest.raises(ConfigError, match="input not found"):
            expand_inputs([f"http://127.0.0.1:{server.server_address[1]}/missing.warc.gz"])
    finally:
        server.shutdown()
        server.server_close()
    assert requests == ["/missing.warc.gz"]


def test_a_stream_that_stalls_halfway_raises_within_the_read_timeout(half_a_warc):
    from refinery.config import InputConfig
    from refinery.io import open_input

    start = time.monotonic()
    settings = InputConfig(connect_timeout_s=1, read_timeout_s=1, retries=3)
    with open_input(half_a_warc, settings) as stream, pytest.raises(TimeoutError):  # aiohttp's SocketTimeoutError
        while stream.read(1 << 16):
            pass
    assert time.monotonic() - start < 10  # one read timeout: a stalled read is not tried again


def test_a_run_whose_input_stalls_halfway_ends_with_a_counted_drop(tmp_path, half_a_warc, quick):
    """The reader turns the stalled stream's exception into a counted drop (`read_error`); the run
    finishes (exit 0)."""
    out = tmp_path / "out"
    result = run_cli_inprocess("run", quick_config(tmp_path), "--input", half_a_warc, "--output", out,
                               "--scheduler", "sync")
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    reader = stats["funnel"][0]
    assert reader["stage"] == "warc_reader" and reader["dropped"].get("read_error", 0) >= 1, reader


def test_the_input_timeouts_reach_the_expansion_and_the_reader(tmp_path, monkeypatch):
    """The config's `input:` timeouts are the ones used to list remote inputs (`refinery run`) and
    to open them (the WARC reader, which is built with the config's `input:` section)."""
    from refinery.stages import warc_reader

    from refinery import io
    from refinery.config import InputConfig
    from refinery.sample import write_sample_shard

    seen = []
    real_open, real_expand = io.open_input, io.expand_inputs

    def spy_open(path, config=None):
        seen.append(("open", config))
        return real_open(path, config)

    def spy_expand(patterns, config=None):
        seen.append(("expand", config))
        return real_expand(patterns, config)

    monkeypatch.setattr(io, "expand_inputs", spy_expand)
    monkeypatch.setattr(warc_reader, "open_input", spy_open)
    result = run_cli_inprocess("run", quick_config(tmp_path), "--output", tmp_path / "out", "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    shard = tmp_path / "shard.warc.gz"
    write_sample_shard(shard, 0)
    assert list(warc_reader.WarcReader(InputConfig(**QUICK)).read(str(shard)))
    assert {kind for kind, _ in seen} == {"open", "expand"}
    for kind, config in seen:
        assert config is not None and config.read_timeout_s == QUICK["read_timeout_s"], kind


def test_input_timeouts_are_validated(tmp_path):
    from refinery.config import ConfigError, load_config

    raw = yaml.safe_load(ENGLISH_CONFIG.read_text())
    for key, value in (("connect_timeout_s", 0), ("read_timeout_s", -1), ("read_timeout_s", 10**6),
                       ("retries", -1), ("retries", 1000)):
        bad = {**raw, "input": {**raw.get("input", {}), key: value}}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert err.value.key == f"input.{key}"


def test_s3_options_carry_the_timeouts_and_retries(monkeypatch):
    from refinery.config import InputConfig
    from refinery.io import remote_storage_options

    options = remote_storage_options("s3://commoncrawl/crawl-data/x.warc.gz",
                                     InputConfig(connect_timeout_s=3, read_timeout_s=7, retries=2))
    assert options == {"anon": True, "config_kwargs": {
        "connect_timeout": 3, "read_timeout": 7, "retries": {"total_max_attempts": 3, "mode": "standard"}}}
    monkeypatch.setenv("REFINERY_S3_ANON", "0")
    assert "anon" not in remote_storage_options("s3://bucket/x.warc.gz")
    timeout = remote_storage_options("https://data.commoncrawl.org/x.warc.gz")["client_kwargs"]["timeout"]
    assert (timeout.total, timeout.sock_connect, timeout.sock_read) == (None, 10, 60)  # the defaults


# --- the scheduler and the tokenizer ---------------------------------------------------------------

def test_a_scheduler_that_is_not_there_is_one_line(tmp_path):
    address = f"tcp://127.0.0.1:{closed_port()}"
    start = time.monotonic()
    result = run_cli_subprocess("run", ENGLISH_CONFIG, "--output", tmp_path / "out", "--scheduler", address,
                                timeout=60)
    elapsed = time.monotonic() - start
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(result.stderr_lines) == 1, result.stderr
    assert "--scheduler" in result.stderr and address in result.stderr and "within 10 s" in result.stderr
    assert elapsed < 20


def test_a_scheduler_that_never_answers_is_one_line(tmp_path, monkeypatch):
    from refinery.engine import cluster

    monkeypatch.setattr(cluster, "SCHEDULER_TIMEOUT_S", 1)
    with silent_server() as (address, _):
        start = time.monotonic()
        result = run_cli_inprocess("run", ENGLISH_CONFIG, "--output", tmp_path / "out", "--scheduler",
                                   f"tcp://{address}")
        assert time.monotonic() - start < 10
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(result.stderr_lines) == 1 and "--scheduler" in result.stderr, result.stderr


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """The smallest output `refinery report` accepts: a run that read no records."""
    out = tmp_path / "run"
    out.mkdir()
    stats = {"name": "empty", "funnel": [], "input": {"records": 0, "shards": 0}, "output": {"documents": 0},
             "shards": []}
    (out / "stats.json").write_text(json.dumps(stats))
    return out


@pytest.mark.parametrize("kind", ["missing", "folder", "garbage", "not-a-tokenizer"])
def test_a_tokenizer_that_is_not_one_is_one_line(tmp_path, finished_run, kind):
    path = tmp_path / "tok"
    if kind == "folder":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"\x00\xff not json {")
    elif kind == "not-a-tokenizer":
        path.write_text('{"version": "1.0", "vocab": [1, 2]}')
    result = run_cli_inprocess("report", finished_run, "--tokenizer", path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(result.stderr_lines) == 1 and "--tokenizer" in result.stderr, result.stderr
    assert not (finished_run / "report.html").exists()
