"""Bounded, deterministic fuzzing of the WARC reader: damaged archives never raise and every item is a
Document or a Drop with a declared reason; decoding never raises and never yields a lone surrogate."""

from __future__ import annotations

import encodings.aliases
import gzip
import re
import tempfile
import zlib
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from refinery.config import InputConfig  # noqa: E402
from refinery.document import Document, Drop  # noqa: E402
from refinery.stages.warc_reader import WarcReader, decode_body, decode_html  # noqa: E402
from support import http_response, write_warc  # noqa: E402

SURROGATE = re.compile("[\ud800-\udfff]")
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed_responses():
    page = b"<html><head><meta charset='cp1252'></head><body><p>Gr\xfc\xdfe aus K\xf6ln</p></body></html>"
    chunked = b"5\r\n<html\r\n8\r\n><p>x</p\r\n1\r\n>\r\n0\r\n\r\n"
    return [
        http_response("http://seed.test/a", page, "text/html"),
        http_response("http://seed.test/gz", gzip.compress(page), "text/html", extra_headers=[("Content-Encoding", "gzip")]),
        http_response("http://seed.test/deflate", zlib.compress(page), "text/html; charset=unicode_escape",
                      extra_headers=[("Content-Encoding", "deflate")]),
        http_response("http://seed.test/chunked", chunked, "text/html", extra_headers=[("Transfer-Encoding", "chunked")]),
        http_response("http://seed.test/pdf", b"%PDF-1.4 not html", "application/pdf"),
        http_response("http://seed.test/404", page, status="404 Not Found"),
    ]


def _seeds() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as folder:
        gz = write_warc(Path(folder) / "seed.warc.gz", _seed_responses(), with_warcinfo=True).read_bytes()
        plain = write_warc(Path(folder) / "seed.warc", _seed_responses(), gzip=False, with_warcinfo=True).read_bytes()
    return {"gzip": gz, "plain": plain}


SEEDS = _seeds()

_mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.floats(0, 1, exclude_max=True), st.integers(1, 200)),
    st.tuples(st.just("cut"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("length"), st.floats(0, 1), st.sampled_from([b"0", b"1", b"99999999999999", b"-5", b"x"])),
)


def mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for kind, where, arg in mutations:
        pos = int(where * len(out))
        if kind == "flip" and out:
            out[min(pos, len(out) - 1)] ^= arg
        elif kind == "insert":
            out[pos:pos] = arg
        elif kind == "delete":
            del out[pos:pos + arg]
        elif kind == "cut":
            del out[pos:]
        elif kind == "length":  # rewrite the n-th Content-Length of a plain archive
            found = [m.span(1) for m in re.finditer(rb"Content-Length: (\d+)", out)]
            if found:
                start, end = found[min(int(where * len(found)), len(found) - 1)]
                out[start:end] = arg
    return bytes(out)


def check_read(path: Path, max_record_bytes: int) -> None:
    reader = WarcReader(InputConfig(max_record_bytes=max_record_bytes))
    for item in reader.read(str(path)):
        assert isinstance(item, (Document, Drop)), item
        if isinstance(item, Drop):
            assert item.reason in WarcReader.reasons, item.reason
        else:
            assert isinstance(item.html, str) and not SURROGATE.search(item.html)
            item.html.encode("utf-8")


@pytest.fixture(scope="module")
def fuzz_file():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@pytest.mark.parametrize("seed", ["gzip", "plain"])
def test_mutated_archives_never_raise(fuzz_file, seed):
    suffix = ".warc.gz" if seed == "gzip" else ".warc"

    @FUZZ
    @given(mutations=st.lists(_mutation, min_size=1, max_size=4), max_record_bytes=st.sampled_from([200, 10_000_000]))
    def run(mutations, max_record_bytes):
        path = fuzz_file / f"fuzz{suffix}"
        path.write_bytes(mutate(SEEDS[seed], mutations))
        check_read(path, max_record_bytes)

    run()


def test_the_unmutated_seeds_read(fuzz_file):
    for seed, data in SEEDS.items():
        path = fuzz_file / f"seed-{seed}.warc"
        path.write_bytes(data)
        items = list(WarcReader().read(str(path)))
        assert sum(isinstance(i, Document) for i in items) == 4, (seed, items)


CHARSETS = sorted(set(encodings.aliases.aliases) | set(encodings.aliases.aliases.values())
                  | {"unicode_escape", "raw_unicode_escape", "punycode", "idna", "utf-7", "utf-16", "utf-32",
                     "base64", "rot_13", "hex", "zlib", "bz2", "uu", "quopri", "undefined", "charmap"})
_charset = st.one_of(st.none(), st.sampled_from(["unicode_escape", "raw_unicode_escape", "utf-7", "utf-16"]),
                     st.sampled_from(CHARSETS), st.text(max_size=20))
_html_bytes = st.one_of(
    st.binary(max_size=600),
    st.builds(lambda cs, body: b"<meta charset='" + cs.encode("ascii", "ignore") + b"'>" + body,
              st.sampled_from(CHARSETS), st.binary(max_size=300)),
    st.builds(lambda body: b"\xff" + body.encode("utf-8", "surrogatepass"), st.text(max_size=200)),
    st.builds(lambda text: text.encode("utf-7"), st.text(max_size=100)),
    # escapes that the escape codecs (and UTF-7) turn into lone surrogates, next to a non-UTF-8 byte
    st.lists(st.sampled_from([b"\xff", b"\\ud800", b"\\udfff", b"\\U0010ffff", b"+2AA-", b"<p>", b"\\x41", b"a"]),
             max_size=12).map(b"\xe9".join),
)


@FUZZ
@given(payload=_html_bytes, declared=_charset)
@example(payload=b"\x80\\ud800", declared="unicode_escape")
@example(payload=b"\xff<meta charset='raw_unicode_escape'>\\udfff", declared=None)
@example(payload=b"\xff+2AA-", declared="utf-7")
def test_decode_html_never_raises_nor_yields_surrogates(payload, declared):
    text, used = decode_html(payload, declared)
    assert isinstance(text, str) and isinstance(used, str)
    assert not SURROGATE.search(text)
    text.encode("utf-8")


_encoding_header = st.one_of(st.none(), st.sampled_from(["gzip", "deflate", "chunked", "gzip, chunked", "br", "x-gzip"]),
                             st.text(max_size=12))
_body = st.one_of(
    st.binary(max_size=400),
    st.binary(max_size=400).map(gzip.compress),
    st.binary(max_size=400).map(zlib.compress),
    st.builds(lambda body, cut: gzip.compress(body)[:cut], st.binary(max_size=400), st.integers(0, 60)),
    st.lists(st.binary(max_size=30), max_size=8).map(
        lambda parts: b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"),
)


@FUZZ
@given(payload=_body, transfer=_encoding_header, content=_encoding_header,
       limit=st.one_of(st.none(), st.integers(0, 2000)))
def test_decode_body_never_raises_and_keeps_its_bound(payload, transfer, content, limit):
    out = decode_body(payload, transfer, content, limit)
    if out is None:
        assert limit is not None
    else:
        assert isinstance(out, bytes)
        assert limit is None or len(out) <= limit
