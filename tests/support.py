"""Helpers shared by the tests (importable as `support`: tests/ is on sys.path under pytest)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import os
import subprocess
import sys
import threading
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ENGLISH_CONFIG = REPO / "configs" / "english.yaml"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data; the calling test skips when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# --- running the CLI ---------------------------------------------------------------------

@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli_inprocess(*args) -> CliResult:
    """`refinery.cli.main([...])` in this process, with stdout/stderr captured."""
    from refinery.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: --help and bad flags exit
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli_subprocess(*args, timeout: float = 300, cwd: Path = REPO) -> CliResult:
    """`python -m refinery ...` in a fresh interpreter, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "refinery", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=os.environ.copy())
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# --- reading ------------------------------------------------------------------------------

def read_all(path, reader=None):
    """Every item the WARC reader yields for `path` (Documents and Drops, in order)."""
    from refinery.stages.warc_reader import WarcReader

    return list((reader or WarcReader()).read(str(path)))


def outcome_counts(items) -> dict[str, int]:
    """{'DOC': n, reason: n, ...} for a list of reader items."""
    from refinery.document import Drop

    return dict(Counter(item.reason if isinstance(item, Drop) else "DOC" for item in items))


# --- writing WARCs with warcio -----------------------------------------------------------

def http_response(url: str, body: bytes, content_type: str | None = "text/html; charset=utf-8",
                  status: str = "200 OK", extra_headers: list[tuple[str, str]] | None = None,
                  record_id: str | None = None):
    """(url, body, http header list, status, record_id) for write_warc."""
    headers = [("Content-Type", content_type)] if content_type else []
    headers += extra_headers or []
    return url, body, headers, status, record_id


def write_warc(path: Path, responses, gzip: bool = True, with_warcinfo: bool = False) -> Path:
    """Writes HTTP response records with warcio's WARCWriter."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as handle:
        writer = WARCWriter(handle, gzip=gzip)
        if with_warcinfo:
            writer.write_record(writer.create_warcinfo_record(path.name, {"software": "refinery-tests"}))
        for n, (url, body, headers, status, record_id) in enumerate(responses):
            http = StatusAndHeaders(status, list(headers), protocol="HTTP/1.1")
            warc_headers = {"WARC-Date": "2024-01-01T00:00:00Z"}
            warc_headers["WARC-Record-ID"] = record_id or f"<urn:uuid:00000000-0000-4000-8000-{n:012d}>"
            record = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                               warc_headers_dict=warc_headers)
            writer.write_record(record)
    return path


def article_html(title: str, paragraphs: list[str], nav: list[str] | None = None, footer: str = "",
                 lang: str = "en", charset: str = "utf-8") -> str:
    """A page with navigation, main article, aside and footer, like a real news site."""
    nav = nav if nav is not None else ["Home", "News", "Events", "About us", "Contact", "Sign in", "Newsletter"]
    links = "".join(f'<li><a href="/{item.lower().replace(" ", "-")}">{item}</a></li>' for item in nav)
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="{charset}"><title>{title}</title></head>'
            f"<body><header><nav><ul>{links}</ul></nav></header>"
            f"<main><article><h1>{title}</h1>{body}</article></main>"
            f'<aside><h3>Related</h3><ul><li><a href="/more">Read more</a></li></ul></aside>'
            f"<footer><p>{footer}</p></footer></body></html>")


# --- checking run outputs -----------------------------------------------------------------

CONTRACT_COLUMNS = ["id", "url", "warc_date", "source", "language", "language_score", "text"]


def check_funnel(stats: dict) -> list[dict]:
    """The funnel adds up within each stage and from stage to stage; returns it."""
    funnel = stats["funnel"]
    assert funnel and funnel[0]["stage"] == "warc_reader"
    for stage in funnel:
        assert stage["docs_in"] == stage["docs_out"] + sum(stage["dropped"].values()), stage
        assert all(count > 0 for count in stage["dropped"].values()), stage
    for before, after in zip(funnel, funnel[1:]):
        assert after["docs_in"] == before["docs_out"], (before["stage"], after["stage"])
    records = funnel[0]["docs_in"]
    assert stats["input"]["records"] == records
    assert stats["output"]["documents"] == funnel[-1]["docs_out"]
    for stage in funnel:
        assert abs(stage["kept_of_input"] - (stage["docs_out"] / records if records else 0.0)) < 1e-6
    return funnel


def read_documents(out_dir: Path):
    """All documents of a run, as one pyarrow table (shards in file-name order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted((Path(out_dir) / "documents").glob("*.parquet"))
    assert files, f"no documents in {out_dir}"
    return pa.concat_tables([pq.read_table(f) for f in files])


# --- serving files over HTTP --------------------------------------------------------------

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder without logging; a client that stops reading early is not an error."""

    def log_message(self, *args) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # --limit stops reading a shard early
            super().handle()


class RangeHandler(QuietHandler):
    """The same, with HTTP range requests (as object stores and data.commoncrawl.org serve)."""

    def send_head(self):
        spec = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not spec.startswith("bytes=") or not path.is_file():
            return super().send_head()
        size = path.stat().st_size
        first, _, last = spec.removeprefix("bytes=").partition("-")
        first, last = int(first or 0), min(int(last) if last else size - 1, size - 1)
        with open(path, "rb") as file:
            file.seek(first)
            data = file.read(last - first + 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)


@contextlib.contextmanager
def http_server(folder: Path, ranges: bool = False):
    """``folder`` served on 127.0.0.1 (a free port) for the duration; yields the base URL."""
    handler = functools.partial(RangeHandler if ranges else QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
