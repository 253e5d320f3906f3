"""Hostile inputs, written as WARC files: each breaks a promise a naive reader makes (bounded memory,
every record counted, text that any writer accepts). `write_all(folder)` writes one file per class
so that one `refinery run` can take them all; tests/test_warc_reader.py checks each one alone.

Generation is fast and small on disk: the bombs are a few tens of KB that decode to 64 MiB."""

from __future__ import annotations

import functools
import gzip
import random
import zlib
from pathlib import Path

from support import http_response, write_warc

BOMB_BYTES = 64 << 20  # what each bomb decodes to
NESTING = 100_000  # <div> levels of the nested page (about 1 MB)
LYING_LENGTH = 10**12
BINARY_CHARSETS = ("base64", "zlib", "rot_13", "hex", "uu", "bz2", "quopri", "unicode_escape",
                   "raw_unicode_escape", "punycode", "idna", "utf-7")


def good_page(word: str) -> bytes:
    return (f"<html><head><title>{word}</title></head><body><p>The {word} page is an ordinary page with "
            f"a paragraph of text next to the hostile one.</p></body></html>").encode()


@functools.lru_cache(maxsize=None)
def _bomb(wbits: int) -> bytes:
    """BOMB_BYTES of one repeated HTML line, deflated once (gzip for wbits 31, zlib for 15)."""
    line = b"<p>" + b"a" * 1020 + b"</p>\n"
    block = b"<html><body>" + line * (BOMB_BYTES // len(line) // 64)
    deflater = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [deflater.compress(block) for _ in range(64)]  # 64 equal blocks: 64 MiB without holding it
    return b"".join(parts) + deflater.flush()


def _chunked(body: bytes, size: int) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + b"0\r\n\r\n"


def _then_good(path: Path, word: str, hostile) -> Path:
    """A shard with the hostile responses, then a good page that must survive them."""
    return write_warc(path, [*hostile, http_response(f"http://good.test/{word}", good_page(word))])


def surrogate_page(folder: Path) -> Path:
    """Pages whose declared charset turns escapes into lone surrogates (unicode_escape, utf-7); a
    non-UTF-8 byte keeps them off the UTF-8 path."""
    escaped = b"<html><head><meta charset='unicode_escape'></head><body><p>caf\xe9 \\ud800 \\udfff x</p></body></html>"
    utf7 = b"<html><head><meta charset='utf-7'></head><body><p>caf\xe9 +2AA- +3/8- x</p></body></html>"
    return _then_good(folder / "surrogate.warc.gz", "surrogate", [
        http_response("http://hostile.test/unicode-escape", escaped, "text/html"),
        http_response("http://hostile.test/unicode-escape-header", escaped, "text/html; charset=unicode_escape"),
        http_response("http://hostile.test/utf-7", utf7, "text/html; charset=utf-7"),
    ])


def gzip_bomb(folder: Path) -> Path:
    return _then_good(folder / "gzip-bomb.warc.gz", "gzip-bomb", [http_response(
        "http://hostile.test/gzip-bomb", _bomb(31), "text/html", extra_headers=[("Content-Encoding", "gzip")])])


def deflate_bomb(folder: Path) -> Path:
    return _then_good(folder / "deflate-bomb.warc.gz", "deflate-bomb", [http_response(
        "http://hostile.test/deflate-bomb", _bomb(15), "text/html", extra_headers=[("Content-Encoding", "deflate")])])


def chunked_bomb(folder: Path) -> Path:
    """A gzip bomb sent in 4 KB chunks: dechunking, then inflating."""
    return _then_good(folder / "chunked-bomb.warc.gz", "chunked-bomb", [http_response(
        "http://hostile.test/chunked-bomb", _chunked(_bomb(31), 4096), "text/html",
        extra_headers=[("Transfer-Encoding", "chunked"), ("Content-Encoding", "gzip")])])


def _raw_response(n: int, body: bytes, content_length: int | None = None) -> bytes:
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
    length = len(block) if content_length is None else content_length
    return (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:00000000-0000-4000-8000-{n:012d}>\r\n"
            f"WARC-Target-URI: http://lying.test/{n}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {length}\r\n\r\n").encode() \
        + block + b"\r\n\r\n"


def lying_length(folder: Path, compress: bool = False) -> Path:
    """A good record, one that declares 10^12 bytes, then a good record the lie would swallow."""
    records = [_raw_response(0, good_page("before")), _raw_response(1, good_page("liar"), LYING_LENGTH),
               _raw_response(2, good_page("after"))]
    path = folder / ("lying-length.warc.gz" if compress else "lying-length.warc")
    path.write_bytes(b"".join(gzip.compress(r) for r in records) if compress else b"".join(records))
    return path


def binary_charset(folder: Path) -> Path:
    """Latin-1 pages (not valid UTF-8) that declare codecs that are no text encodings."""
    body = "<html><body><p>Grüße aus Köln, schöne Äpfel für den Markt.</p></body></html>".encode("latin-1")
    return write_warc(folder / "binary-charset.warc.gz", [
        http_response(f"http://charset.test/{name}", body, f"text/html; charset={name}") for name in BINARY_CHARSETS])


def nested_html(folder: Path) -> Path:
    """NESTING nested <div>s around one paragraph (for the extractor's depth bound)."""
    body = (b"<html><body>" + b"<div>" * NESTING + b"<p>Deep inside the page there is one sentence.</p>"
            + b"</div>" * NESTING + b"</body></html>")
    return write_warc(folder / "nested.warc.gz", [http_response("http://nested.test/", body)])


def random_bytes(folder: Path) -> Path:
    path = folder / "random.warc.gz"
    path.write_bytes(random.Random(0).randbytes(50_000))
    return path


def empty_file(folder: Path) -> Path:
    path = folder / "empty.warc.gz"
    path.write_bytes(b"")
    return path


TRUNCATED_GOOD = 3  # whole records before the cut


def truncated_gzip(folder: Path) -> Path:
    """TRUNCATED_GOOD whole records, then a long page whose gzip member is cut in the middle."""
    words = random.Random(3).choices(["harbour", "pier", "boat", "storm", "council", "spring", "tide"], k=4000)
    long_page = b"<html><body><p>" + " ".join(words).encode() + b"</p></body></html>"
    pages = [good_page(f"cut-{n}") for n in range(TRUNCATED_GOOD)] + [long_page]
    whole = write_warc(folder / "whole.tmp.warc.gz", [http_response(f"http://cut.test/{n}", page)
                                                       for n, page in enumerate(pages)])
    data = whole.read_bytes()
    whole.unlink()
    last = data.rfind(b"\x1f\x8b\x08")  # the last member: the long page
    path = folder / "truncated.warc.gz"
    path.write_bytes(data[:last + (len(data) - last) // 2])
    return path


WRITERS = {
    "surrogate": surrogate_page, "gzip_bomb": gzip_bomb, "deflate_bomb": deflate_bomb,
    "chunked_bomb": chunked_bomb, "lying_length": lying_length,
    "lying_length_gz": functools.partial(lying_length, compress=True), "binary_charset": binary_charset,
    "nested": nested_html, "random": random_bytes, "empty": empty_file, "truncated_gzip": truncated_gzip,
}


def write_all(folder: Path) -> dict[str, Path]:
    """Every hostile class as one file in `folder`, by class name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: write(folder) for name, write in WRITERS.items()}
