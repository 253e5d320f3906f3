"""WarcReader on real crawl files (../shared/data) and on damaged or unusual generated inputs."""

from __future__ import annotations

import gzip
import io
import random
import re
import zlib
from pathlib import Path

import pytest

from refinery.config import InputConfig
from refinery.document import Document, Drop
from refinery.sample import write_sample_shard
from refinery.stages.warc_reader import (WarcReader, charset_codec, dechunk, decode_body, decode_html,
                                         looks_binary, sanitise)
import hostile
from support import http_response, outcome_counts, read_all, shared_path, write_warc

# Measured on the files as shipped; "DOC" counts the HTML documents the reader yields, every
# other key is a drop reason. Each count is checked against the README of ../shared/data where
# it says something (e.g. 16 responses / 17 requests / 16 metadata in resiliparse--warcfile).
EXPECTED_SAMPLES = {
    "aut--example.arc.gz": {"DOC": 94, "empty_payload": 1, "http_status": 47, "non_html": 157, "warcinfo": 1},
    "aut--example.docs.warc.gz": {"non_html": 9, "request": 9, "warcinfo": 3},
    "aut--example.pdf.warc.gz": {"DOC": 1, "http_status": 3, "non_html": 31, "request": 37, "revisit": 2,
                                 "warcinfo": 2},
    "aut--example.warc.gz": {"DOC": 94, "empty_payload": 1, "http_status": 47, "metadata": 261, "non_html": 157,
                             "request": 261, "warcinfo": 1},
    "aut--issue-493.warc": {"DOC": 4, "http_status": 1, "non_html": 5, "request": 15, "revisit": 5, "warcinfo": 2},
    "dolma--sample-0000.warc.gz": {"DOC": 22, "metadata": 1, "request": 22, "resource": 2, "warcinfo": 1},
    "dolma--sample-0001.warc.gz": {"DOC": 15, "metadata": 1, "request": 15, "resource": 2, "warcinfo": 1},
    "pywb--dupes.warc.gz": {"DOC": 1, "empty_payload": 1, "http_status": 1, "request": 12, "revisit": 9,
                            "warcinfo": 1},
    "resiliparse--clipped.warc.gz": {"truncated": 1},
    "resiliparse--clueweb-quirk.warc.gz": {"DOC": 29, "warcinfo": 1},
    "resiliparse--warcfile.warc.gz": {"DOC": 16, "metadata": 16, "request": 17, "warcinfo": 1},
    "warcio--example-iana.org-chunked.warc": {"DOC": 1, "request": 1, "warcinfo": 1},
    "whirlwind--whirlwind.warc.gz": {"DOC": 1, "metadata": 1, "request": 1, "warcinfo": 1},
    "whirlwind--whirlwind.warc.wat.gz": {"metadata": 1, "warcinfo": 1},
    "whirlwind--whirlwind.warc.wet.gz": {"conversion": 1, "warcinfo": 1},
}
WEB_SHARDS = {"dev-00000.warc.gz": 445, "dev-00001.warc.gz": 445, "dev-00002.warc.gz": 444,
              "dev-00003.warc.gz": 444}


def check_items(items) -> None:
    """Every item is a Document with decoded HTML or a Drop with one of the declared reasons."""
    for item in items:
        assert isinstance(item, (Document, Drop)), item
        if isinstance(item, Drop):
            assert item.reason in WarcReader.reasons, item.reason
            assert isinstance(item.doc, Document)
        else:
            assert isinstance(item.html, str) and item.html.strip()
            assert item.id and item.text == "" and item.source == "web"
            assert item.charset


def docs_of(items) -> list[Document]:
    return [item for item in items if isinstance(item, Document)]


# --- real crawl files ----------------------------------------------------------------------

@pytest.mark.shared
def test_every_sample_file_is_read_without_raising(shared_data):
    files = sorted(p for p in (shared_data / "warc-samples").iterdir() if p.is_file())
    assert files
    for path in files:
        items = read_all(path)
        check_items(items)
        ids = [d.id for d in docs_of(items)]
        assert len(ids) == len(set(ids)), f"duplicate document ids in {path.name}"


@pytest.mark.shared
@pytest.mark.parametrize("name", sorted(EXPECTED_SAMPLES))
def test_sample_file_counts(name):
    path = shared_path("warc-samples", name)
    items = read_all(path)
    check_items(items)
    assert outcome_counts(items) == EXPECTED_SAMPLES[name]


@pytest.mark.shared
def test_warc_and_arc_of_the_same_crawl_give_the_same_documents():
    warc = docs_of(read_all(shared_path("warc-samples", "aut--example.warc.gz")))
    arc = docs_of(read_all(shared_path("warc-samples", "aut--example.arc.gz")))
    assert len(warc) == len(arc) == 94
    assert [d.url for d in warc] == [d.url for d in arc]
    assert [d.html for d in warc] == [d.html for d in arc]
    assert [d.warc_date for d in warc] == [d.warc_date for d in arc]
    # ARC records have no record id: theirs is a stable hash of file name and position.
    assert all(d.id.startswith("arc-") for d in arc)
    again = docs_of(read_all(shared_path("warc-samples", "aut--example.arc.gz")))
    assert [d.id for d in again] == [d.id for d in arc]
    assert len({d.id for d in arc}) == 94


@pytest.mark.shared
def test_arc_format_forced_equals_auto():
    path = shared_path("warc-samples", "aut--example.arc.gz")
    auto = read_all(path)
    forced = read_all(path, WarcReader(InputConfig(format="arc")))
    assert outcome_counts(forced) == outcome_counts(auto)
    assert [d.html for d in docs_of(forced)] == [d.html for d in docs_of(auto)]


@pytest.mark.shared
def test_warc_ids_are_the_record_ids():
    doc, = docs_of(read_all(shared_path("warc-samples", "whirlwind--whirlwind.warc.gz")))
    assert doc.id == "2aabeff2-67f5-4608-8466-e87c6296e2b6"
    assert doc.url == "https://an.wikipedia.org/wiki/Escopete"
    assert doc.warc_date == "2024-05-18T01:58:10Z"


@pytest.mark.shared
def test_clipped_record_is_counted_as_truncated():
    items = read_all(shared_path("warc-samples", "resiliparse--clipped.warc.gz"))
    assert [(type(i), getattr(i, "reason", None)) for i in items] == [(Drop, "truncated")]


@pytest.mark.shared
def test_revisit_records_are_dropped_as_revisit():
    counts = outcome_counts(read_all(shared_path("warc-samples", "pywb--dupes.warc.gz")))
    assert counts["revisit"] == 9


@pytest.mark.shared
def test_clueweb_warc_018_japanese_is_decoded():
    items = read_all(shared_path("warc-samples", "resiliparse--clueweb-quirk.warc.gz"))
    docs = docs_of(items)
    assert len(docs) == 29
    japanese = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")
    for doc in docs:
        assert doc.url.startswith("http://")
        assert "\ufffd" not in doc.html
        assert len(japanese.findall(doc.html)) > 100, doc.url
    assert "ブリーフケース" in docs[0].html


@pytest.mark.shared
def test_chunked_response_is_dechunked():
    raw = shared_path("warc-samples", "warcio--example-iana.org-chunked.warc").read_bytes()
    assert b"Transfer-Encoding: chunked" in raw and b"\r\n001c37\r\n" in raw  # the file really is chunked
    doc, = docs_of(read_all(shared_path("warc-samples", "warcio--example-iana.org-chunked.warc")))
    assert doc.url == "http://www.iana.org/"
    assert doc.html.startswith("<!doctype html>")
    assert doc.html.rstrip().endswith("</html>")
    assert "001c37" not in doc.html
    assert not re.search(r"^[0-9a-fA-F]+\r?$", doc.html, re.MULTILINE)  # no chunk-size lines left


@pytest.mark.shared
def test_web_shards_give_1778_documents():
    total, ids = 0, set()
    for name, expected in WEB_SHARDS.items():
        items = read_all(shared_path("web", name))
        check_items(items)
        assert outcome_counts(items) == {"DOC": expected}
        total += expected
        ids.update(d.id for d in items)
    assert total == 1778
    assert len(ids) == 1778  # record ids are unique across the shards


@pytest.mark.shared
def test_limit_stops_after_n_records():
    path = shared_path("warc-samples", "resiliparse--warcfile.warc.gz")
    items = list(WarcReader(limit=5).read(str(path)))
    assert len(items) == 5
    assert outcome_counts(items) == outcome_counts(read_all(path)[:5])


# --- generated damaged inputs ---------------------------------------------------------------

def gzip_members(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each gzip member of a file."""
    members, pos = [], 0
    while pos < len(data):
        inflater = zlib.decompressobj(wbits=31)
        inflater.decompress(data[pos:])
        end = len(data) - len(inflater.unused_data)
        members.append((pos, end))
        pos = end
    return members


@pytest.fixture(scope="module")
def sample_shard(tmp_path_factory) -> Path:
    """One shard of the embedded sample, generated (no third-party data needed)."""
    path = tmp_path_factory.mktemp("sample") / "sample-00000.warc.gz"
    write_sample_shard(path, 0)
    return path


def test_embedded_sample_shard_reads_completely(sample_shard):
    items = read_all(sample_shard)
    check_items(items)
    counts = outcome_counts(items)
    assert counts == {"DOC": 57, "request": 4, "non_html": 2, "http_status": 1}


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_gzip_member_cut_in_the_middle_is_truncated(sample_shard, tmp_path, fraction):
    data = sample_shard.read_bytes()
    members = gzip_members(data)
    full = read_all(sample_shard)
    assert len(members) == len(full)  # one record per gzip member
    # the largest member is a long HTML response; cut it inside its compressed body
    index = max(range(len(members)), key=lambda i: members[i][1] - members[i][0])
    start, end = members[index]
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[:start + int((end - start) * fraction)])
    items = read_all(cut)
    check_items(items)
    assert len(items) == index + 1
    assert outcome_counts(items[:-1]) == outcome_counts(full[:index])
    assert isinstance(items[-1], Drop) and items[-1].reason == "truncated"


@pytest.mark.parametrize("extra", [2, 15, 40])  # inside the next gzip header, or its WARC header
def test_a_file_cut_just_after_a_member_boundary_is_truncated(sample_shard, tmp_path, extra):
    data = sample_shard.read_bytes()
    members = gzip_members(data)
    full = read_all(sample_shard)
    cut = tmp_path / "cut.warc.gz"
    cut.write_bytes(data[:members[10][1] + extra])
    items = read_all(cut)
    check_items(items)
    assert outcome_counts(items[:-1]) == outcome_counts(full[:11])
    assert isinstance(items[-1], Drop) and items[-1].reason == "truncated"


def test_a_whole_file_has_no_clipped_tail(sample_shard, tmp_path):
    data = sample_shard.read_bytes()
    exact = tmp_path / "exact.warc.gz"
    exact.write_bytes(data[:gzip_members(data)[10][1]])  # cut exactly on a member boundary: nothing lost to see
    assert "truncated" not in outcome_counts(read_all(exact))


@pytest.mark.shared
def test_real_shard_cut_in_half_is_truncated(tmp_path):
    data = shared_path("web", "dev-00000.warc.gz").read_bytes()
    cut = tmp_path / "dev-cut.warc.gz"
    cut.write_bytes(data[: len(data) // 2])
    items = read_all(cut)
    check_items(items)
    assert outcome_counts(items) == {"DOC": 237, "truncated": 1}
    assert items[-1].reason == "truncated"


def test_corrupt_bytes_inside_a_member_end_the_shard_once(sample_shard, tmp_path):
    data = bytearray(sample_shard.read_bytes())
    start, end = gzip_members(bytes(data))[20]
    data[start + 20:start + 60] = random.Random(7).randbytes(40)  # inside the deflate stream
    bad = tmp_path / "corrupt.warc.gz"
    bad.write_bytes(bytes(data))
    items = read_all(bad)
    check_items(items)
    # the 20 intact records before the damage, then one unreadable_archive for the rest
    assert len(items) == 21
    assert outcome_counts(items[:20]) == outcome_counts(read_all(sample_shard)[:20])
    assert isinstance(items[-1], Drop) and items[-1].reason == "unreadable_archive"


@pytest.mark.parametrize("name", ["empty.warc.gz", "empty.warc", "empty.arc.gz"])
def test_empty_file_is_counted_once(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    items = read_all(path)
    assert [i.reason for i in items] == ["empty_file"]


def _random_bytes(path: Path) -> Path:
    path.write_bytes(random.Random(0).randbytes(20_000))
    return path


def _html_error_page(path: Path) -> Path:
    path.write_bytes(b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>")
    return path


def _gzip_of_junk(path: Path) -> Path:
    path.write_bytes(gzip.compress(random.Random(1).randbytes(20_000)))
    return path


BAD_ARCHIVES = [_random_bytes, _html_error_page, _gzip_of_junk]


@pytest.mark.parametrize("make", BAD_ARCHIVES, ids=lambda f: f.__name__.strip("_"))
def test_non_warc_file_never_raises(tmp_path, make):
    items = read_all(make(tmp_path / "bad.warc.gz"))
    check_items(items)
    assert docs_of(items) == []


@pytest.mark.parametrize("make", BAD_ARCHIVES, ids=lambda f: f.__name__.strip("_"))
def test_non_warc_file_counts_one_unreadable_archive(tmp_path, make):
    items = read_all(make(tmp_path / "bad.warc.gz"))
    assert outcome_counts(items) == {"unreadable_archive": 1}


def _raw_response(record_id: str, url: str, body: bytes, content_length: int | None = None) -> bytes:
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + body
    length = len(block) if content_length is None else content_length
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{record_id}>\r\n"
            f"WARC-Target-URI: {url}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {length}\r\n\r\n").encode()
    return head + block + b"\r\n\r\n"


def _page(word: str) -> bytes:
    return f"<html><body><p>The {word} page has a paragraph of text.</p></body></html>".encode()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_content_length_longer_than_the_record_is_truncated(tmp_path, compress):
    records = [_raw_response("1", "http://x.test/1", _page("first")),
               _raw_response("2", "http://x.test/2", _page("second"), content_length=50_000)]
    data = b"".join(gzip.compress(r) for r in records) if compress else b"".join(records)
    path = tmp_path / ("lying.warc.gz" if compress else "lying.warc")
    path.write_bytes(data)
    items = read_all(path)
    check_items(items)
    assert outcome_counts(items) == {"DOC": 1, "truncated": 1}
    assert items[0].html == _page("first").decode()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_content_length_shorter_than_the_record_drops_only_that_record(tmp_path, compress):
    records = [_raw_response("1", "http://x.test/1", _page("first"), content_length=30),
               _raw_response("2", "http://x.test/2", _page("second")),
               _raw_response("3", "http://x.test/3", _page("third"))]
    data = b"".join(gzip.compress(r) for r in records) if compress else b"".join(records)
    path = tmp_path / ("short.warc.gz" if compress else "short.warc")
    path.write_bytes(data)
    items = read_all(path)
    check_items(items)
    assert isinstance(items[0], Drop)
    assert [(d.url, d.html) for d in docs_of(items)] == [
        ("http://x.test/2", _page("second").decode()), ("http://x.test/3", _page("third").decode())]


UMLAUT_PAGE = "<html><head><title>Grüße</title></head><body><p>Grüße aus Köln: schöne Äpfel für 3 €.</p></body></html>"


def test_declared_charset_wrong_utf8_body_is_decoded_as_utf8(tmp_path):
    path = write_warc(tmp_path / "cs.warc.gz", [
        http_response("http://x.test/a", UMLAUT_PAGE.encode("utf-8"), "text/html; charset=iso-8859-1")])
    doc, = read_all(path)
    assert isinstance(doc, Document)
    assert "Grüße aus Köln: schöne Äpfel für 3 €." in doc.html
    assert doc.charset == "utf-8"


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "text/html", "text/html; charset=bogus-cs"])
def test_latin1_body_is_decoded_whatever_the_header_says(tmp_path, content_type):
    page = UMLAUT_PAGE.replace("€", "EUR")
    path = write_warc(tmp_path / "lat.warc.gz", [http_response("http://x.test/a", page.encode("latin-1"),
                                                               content_type)])
    doc, = read_all(path)
    assert isinstance(doc, Document)
    assert "Grüße aus Köln: schöne Äpfel für 3 EUR." in doc.html


def test_meta_charset_is_used_when_the_header_has_none(tmp_path):
    page = ('<html><head><meta charset="windows-1252"></head><body><p>„Grüße“ – 5 € – naïve café</p>'
            "</body></html>")
    path = write_warc(tmp_path / "meta.warc.gz", [http_response("http://x.test/a", page.encode("cp1252"),
                                                                "text/html")])
    doc, = read_all(path)
    assert "„Grüße“ – 5 € – naïve café" in doc.html
    assert doc.charset == "cp1252"


def test_binary_junk_labelled_html_is_binary_payload(tmp_path):
    junk = random.Random(3).randbytes(8000)
    path = write_warc(tmp_path / "bin.warc.gz", [http_response("http://x.test/junk", junk, "text/html"),
                                                 http_response("http://x.test/ok", _page("fine"))])
    items = read_all(path)
    check_items(items)
    assert [getattr(i, "reason", "DOC") for i in items] == ["binary_payload", "DOC"]


@pytest.mark.parametrize("content_type,body", [
    ("application/pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"),
    ("image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))),
    ("text/plain", b"Just some plain text, not a web page."),
    ("application/json", b'{"html": "<html><body>x</body></html>"}'),
    (None, b"plain text with no content type at all"),
])
def test_non_html_content_is_non_html(tmp_path, content_type, body):
    path = write_warc(tmp_path / "nonhtml.warc.gz", [http_response("http://x.test/f", body, content_type)])
    assert [getattr(i, "reason", "DOC") for i in read_all(path)] == ["non_html"]


@pytest.mark.parametrize("content_type", ["application/xhtml+xml", "TEXT/HTML; charset=UTF-8", None])
def test_html_content_types_and_sniffing(tmp_path, content_type):
    path = write_warc(tmp_path / "html.warc.gz", [http_response("http://x.test/f", _page("html"), content_type)])
    doc, = read_all(path)
    assert isinstance(doc, Document) and doc.html == _page("html").decode()


def test_payload_above_max_record_bytes_is_too_large(tmp_path):
    big = b"<html><body>" + b"<p>lots of text in this page</p>" * 200 + b"</body></html>"
    path = write_warc(tmp_path / "big.warc.gz", [http_response("http://x.test/big", big),
                                                 http_response("http://x.test/small", _page("small"))])
    reader = WarcReader(InputConfig(max_record_bytes=2000))
    assert [getattr(i, "reason", "DOC") for i in read_all(path, reader)] == ["too_large", "DOC"]
    assert [getattr(i, "reason", "DOC") for i in read_all(path)] == ["DOC", "DOC"]


def test_http_status_and_empty_payload(tmp_path):
    path = write_warc(tmp_path / "status.warc.gz", [
        http_response("http://x.test/404", _page("missing"), status="404 Not Found"),
        http_response("http://x.test/301", b"", status="301 Moved Permanently",
                      extra_headers=[("Location", "http://x.test/")]),
        http_response("http://x.test/empty", b""),
        http_response("http://x.test/blank", b"  \r\n\t "),
        http_response("http://x.test/ok", _page("ok")),
    ])
    assert [getattr(i, "reason", "DOC") for i in read_all(path)] == [
        "http_status", "http_status", "empty_payload", "empty_payload", "DOC"]
    kept = read_all(path, WarcReader(InputConfig(keep_status=[200, 404])))
    assert [getattr(i, "reason", "DOC") for i in kept] == ["DOC", "http_status", "empty_payload",
                                                           "empty_payload", "DOC"]


def test_uncompressed_warc_with_warcinfo(tmp_path):
    path = write_warc(tmp_path / "plain.warc", [http_response("http://x.test/a", _page("a"))], gzip=False,
                      with_warcinfo=True)
    assert outcome_counts(read_all(path)) == {"warcinfo": 1, "DOC": 1}


def test_gzip_content_encoding_is_undone(tmp_path):
    path = write_warc(tmp_path / "enc.warc.gz", [
        http_response("http://x.test/gz", gzip.compress(_page("zipped")), "text/html",
                      extra_headers=[("Content-Encoding", "gzip")]),
        # archives often store the decoded body under the original header
        http_response("http://x.test/plain", _page("stored decoded"), "text/html",
                      extra_headers=[("Content-Encoding", "gzip")]),
    ])
    assert [d.html for d in read_all(path)] == [_page("zipped").decode(), _page("stored decoded").decode()]


def _chunked(body: bytes, size: int, terminate: bool = True) -> bytes:
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size))
    return out + (b"0\r\n\r\n" if terminate else b"")


def test_chunked_transfer_encoding_is_undone(tmp_path):
    page = _page("chunked") * 20
    path = write_warc(tmp_path / "chunked.warc.gz", [
        http_response("http://x.test/c", _chunked(page, 97), "text/html",
                      extra_headers=[("Transfer-Encoding", "chunked")]),
        # stored decoded under the original header: left as it is
        http_response("http://x.test/d", page, "text/html", extra_headers=[("Transfer-Encoding", "chunked")]),
    ])
    assert [d.html for d in read_all(path)] == [page.decode(), page.decode()]


def test_chunked_body_without_final_chunk_leaves_no_chunk_sizes(tmp_path):
    page = _page("unterminated") * 20
    path = write_warc(tmp_path / "unterminated.warc.gz", [
        http_response("http://x.test/u", _chunked(page, 97, terminate=False), "text/html",
                      extra_headers=[("Transfer-Encoding", "chunked")])])
    item, = read_all(path)
    if isinstance(item, Drop):
        assert item.reason == "truncated"
    else:
        assert not re.search(r"(^|\n)[0-9a-f]+\r\n", item.html), item.html[:80]


# --- unit tests -----------------------------------------------------------------------------

def test_decode_html_prefers_valid_utf8():
    text = "Grüße – ☃ – 日本語"
    assert decode_html(text.encode("utf-8"), "iso-8859-1") == (text, "utf-8")
    assert decode_html(b"plain ascii", None) == ("plain ascii", "utf-8")


def test_decode_html_uses_declared_then_meta_then_detection():
    latin = "Grüße aus Köln".encode("latin-1")
    assert decode_html(latin, "iso-8859-1") == ("Grüße aus Köln", "iso8859-1")
    meta = b'<meta charset="windows-1252"><p>' + "Café – 5 €".encode("cp1252")
    assert decode_html(meta, None) == ('<meta charset="windows-1252"><p>Café – 5 €', "cp1252")
    # an unknown declared charset falls through to the <meta> one
    assert decode_html(meta, "no-such-charset")[1] == "cp1252"
    # a charset that is not a text encoding at all is skipped, not fatal
    assert decode_html(meta, "base64")[1] == "cp1252"
    # nothing declared: detection still gets the umlauts right
    text, _ = decode_html("<p>Grüße aus Köln, schöne Äpfel</p>".encode("latin-1"), None)
    assert text == "<p>Grüße aus Köln, schöne Äpfel</p>"


def test_decode_html_japanese_legacy_encodings():
    text = "<html><body><p>日本語のウェブページです。ブリーフケース</p></body></html>"
    for codec in ("shift_jis", "euc_jp"):
        decoded, used = decode_html(text.encode(codec), codec)
        assert decoded == text
        assert used == codec


def test_looks_binary():
    assert looks_binary("")
    assert looks_binary("\x00\x01\x02\x03 abc")
    assert looks_binary("\ufffd" * 10 + "a" * 50)
    assert not looks_binary("<html><body>Grüße\n\tüber\r\n</body></html>")


def test_looks_binary_counts_what_the_control_pattern_matches():
    """The byte-level count equals the regex's on random text mixing every kind of character,
    around the threshold and past the 64 Ki head."""
    import random

    from refinery.stages.warc_reader import _CONTROL, BINARY_FRACTION

    alphabet = ["a", " ", "\n", "\r", "\t", "\x0c", "\x00", "\x08", "\x0b", "\x1f", "\x7f", "\x85", "\ufffd", "é",
                "中", "\U0001f600", "\ud800"]
    rng = random.Random(7)
    for n in range(300):
        weights = [rng.random() ** 3 for _ in alphabet]
        text = "".join(rng.choices(alphabet, weights, k=rng.choice([1, 20, 500, 70_000])))
        head = text[:65536]
        assert looks_binary(text) == (len(_CONTROL.findall(head)) > BINARY_FRACTION * len(head)), n


@pytest.mark.parametrize("raw,expected", [
    (b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n", b"Wikipedia"),
    (b"4;name=value\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n", b"Wikipedia"),
    (b"4\r\nWiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n", b"Wikipedia"),  # trailer ignored
    (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),  # hex sizes
    (b"0\r\n\r\n", b""),
])
def test_dechunk(raw, expected):
    assert dechunk(raw) == expected


@pytest.mark.parametrize("raw", [
    b"<html><body>not chunked</body></html>",
    b"<html>\r\n<body>x</body></html>",  # CRLF, but the first line is not a size
    b"ff\r\nshort",  # declared chunk longer than the data
    b"",
])
def test_dechunk_leaves_unchunked_bodies_alone(raw):
    assert dechunk(raw) == raw


def test_decode_body():
    page = _page("body")
    assert decode_body(_chunked(page, 10), "chunked", None) == page
    assert decode_body(gzip.compress(page), None, "gzip") == page
    assert decode_body(_chunked(gzip.compress(page), 7), "Chunked", "gzip") == page
    assert decode_body(page, None, "gzip") == page  # stored decoded
    assert decode_body(b"\x1f\x8bnot really gzip", None, "gzip") == b"\x1f\x8bnot really gzip"


# --- hostile inputs (tests/hostile.py): every promise kept, every record counted ------------

@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory) -> dict[str, Path]:
    return hostile.write_all(tmp_path_factory.mktemp("hostile"))


def reasons_of(items) -> list[str]:
    return [getattr(item, "reason", "DOC") for item in items]


def no_surrogates(text: str) -> bool:
    return not re.search("[\ud800-\udfff]", text)


def test_hostile_write_all_writes_every_class(hostile_files):
    assert set(hostile_files) == set(hostile.WRITERS)
    assert all(path.exists() for path in hostile_files.values())
    assert all(path.stat().st_size < 100_000 for path in hostile_files.values())  # small on disk


def test_unicode_escape_and_utf7_pages_give_no_surrogates(hostile_files):
    items = read_all(hostile_files["surrogate"])
    check_items(items)
    assert reasons_of(items) == ["DOC"] * 4
    for doc in items:
        assert no_surrogates(doc.html)
        doc.html.encode("utf-8")  # what the Parquet writer and fastText need
        assert doc.charset not in ("unicode-escape", "raw-unicode-escape", "utf-7")
    assert "caf" in items[0].html and "\\ud800" in items[0].html  # the escape stays text


@pytest.mark.parametrize("name", ["gzip_bomb", "deflate_bomb", "chunked_bomb"])
def test_compression_bomb_is_decoded_too_large_in_bounded_memory(hostile_files, name):
    import tracemalloc

    reader = WarcReader(InputConfig(max_record_bytes=10_000_000))
    tracemalloc.start()
    try:
        items = read_all(hostile_files[name], reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    check_items(items)
    assert reasons_of(items) == ["decoded_too_large", "DOC"]  # the page after the bomb survives
    assert peak < 64_000_000, peak  # decoding stops at max_record_bytes; the bomb holds 64 MiB
    # with the bound above the bomb's size, the same body decodes (so the bound is what stopped it)
    assert reasons_of(read_all(hostile_files[name], WarcReader(InputConfig(max_record_bytes=80_000_000)))) \
        == ["DOC", "DOC"]


@pytest.mark.parametrize("name", ["lying_length", "lying_length_gz"])
def test_content_length_of_10_12_drops_that_record_and_reads_the_next(hostile_files, name):
    items = read_all(hostile_files[name])
    check_items(items)
    assert reasons_of(items) == ["DOC", "too_large", "DOC"]
    assert [d.url for d in docs_of(items)] == ["http://lying.test/0", "http://lying.test/2"]


def test_binary_codec_charsets_are_refused_and_the_page_is_detected(hostile_files):
    items = read_all(hostile_files["binary_charset"])
    check_items(items)
    assert reasons_of(items) == ["DOC"] * len(hostile.BINARY_CHARSETS)
    for doc in items:
        assert "Grüße aus Köln, schöne Äpfel" in doc.html
        assert charset_codec(doc.charset) is not None


def test_deeply_nested_page_is_read(hostile_files):
    doc, = read_all(hostile_files["nested"])
    assert isinstance(doc, Document)
    assert doc.html.count("<div>") == hostile.NESTING


@pytest.mark.parametrize("name,expected", [("random", ["unreadable_archive"]), ("empty", ["empty_file"]),
                                           ("truncated_gzip", ["DOC"] * hostile.TRUNCATED_GOOD + ["truncated"])])
def test_broken_files_are_counted(hostile_files, name, expected):
    items = read_all(hostile_files[name])
    check_items(items)
    assert reasons_of(items) == expected


def test_every_hostile_file_is_read_without_raising(hostile_files):
    for path in hostile_files.values():
        items = read_all(path)
        check_items(items)
        assert all(no_surrogates(d.html) for d in docs_of(items))


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_lying_length_inside_the_file_still_counts_the_last_record(tmp_path, compress):
    """A length that overruns the file by less than its own header: what follows is still read."""
    first, second = _raw_response("1", "http://x.test/1", _page("first")), _raw_response("2", "http://x.test/2",
                                                                                          _page("second"))
    liar = _raw_response("9", "http://x.test/9", _page("liar"), content_length=len(second) + 400)
    records = [first, liar, second]
    data = b"".join(gzip.compress(r) for r in records) if compress else b"".join(records)
    path = tmp_path / ("liar.warc.gz" if compress else "liar.warc")
    path.write_bytes(data)
    items = read_all(path)
    check_items(items)
    assert reasons_of(items) == ["DOC", "truncated", "DOC"]


class FlakyStream(io.RawIOBase):
    """A seekable file that raises `error` once a read reaches byte `fail_at` (a dropped connection)."""

    def __init__(self, data: bytes, fail_at: int, error: BaseException):
        self._data, self._pos, self._fail_at, self._error = data, 0, fail_at, error

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = [offset, self._pos + offset, len(self._data) + offset][whence]
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size is None or size < 0 else self._pos + min(size, 4096)
        if end > self._fail_at and self._pos < len(self._data):
            raise self._error
        chunk = self._data[self._pos:end]
        self._pos += len(chunk)
        return chunk


def _flaky_open(monkeypatch, data: bytes, fail_at: int, error: BaseException) -> None:
    import contextlib

    from refinery.stages import warc_reader

    @contextlib.contextmanager
    def open_input(path):
        yield FlakyStream(data, fail_at, error)

    monkeypatch.setattr(warc_reader, "open_input", open_input)


def _aiohttp_error() -> BaseException:
    import aiohttp

    return aiohttp.ClientPayloadError("Response payload is not completed")


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), TimeoutError("read timed out"),
                                   _aiohttp_error()], ids=["oserror", "timeout", "aiohttp"])
@pytest.mark.parametrize("fraction", [0.0, 0.4, 0.9])
def test_stream_that_raises_mid_read_is_one_read_error(sample_shard, monkeypatch, error, fraction):
    data = sample_shard.read_bytes()
    full = read_all(sample_shard)
    _flaky_open(monkeypatch, data, int(len(data) * fraction), error)
    items = read_all(sample_shard)
    check_items(items)
    assert items[-1].reason == "read_error"
    assert reasons_of(items).count("read_error") == 1
    assert reasons_of(items[:-1]) == reasons_of(full[:len(items) - 1])  # what came before is read as usual
    assert len(items) <= len(full)


def test_plain_warc_stream_that_raises_is_a_read_error(tmp_path, monkeypatch):
    path = write_warc(tmp_path / "plain.warc", [http_response(f"http://x.test/{n}", _page(str(n)) * 50)
                                                for n in range(5)], gzip=False)
    data = path.read_bytes()
    _flaky_open(monkeypatch, data, len(data) // 2, TimeoutError("read timed out"))
    items = read_all(path)
    check_items(items)
    assert items[-1].reason == "read_error" and 1 <= len(items) <= 5


def test_decode_html_sanitises_and_refuses_escape_codecs():
    for name in ("unicode_escape", "raw_unicode_escape", "utf-7", "punycode", "idna", "base64", "rot_13"):
        assert charset_codec(name) is None, name
    assert charset_codec("latin-1") == "iso8859-1" and charset_codec("Shift_JIS") == "shift_jis"
    assert charset_codec("no-such-charset") is None and charset_codec("") is None
    text, used = decode_html(b"\xff<p>\\ud800</p>", "unicode_escape")
    assert no_surrogates(text) and used != "unicode-escape"
    # a real text encoding that can still yield a lone surrogate (UTF-16 via surrogatepass-like input)
    assert sanitise("a\ud800b\udfffc") == "a\ufffdb\ufffdc"
    assert sanitise("plain") == "plain"


def test_decode_body_stops_at_the_limit():
    page = _page("body") * 100
    assert decode_body(gzip.compress(page), None, "gzip", limit=len(page)) == page
    assert decode_body(gzip.compress(page), None, "gzip", limit=len(page) - 1) is None
    assert decode_body(zlib.compress(page), None, "deflate", limit=len(page)) == page
    assert decode_body(zlib.compress(page), None, "deflate", limit=100) is None
    assert decode_body(_chunked(page, 50), "chunked", None, limit=len(page)) == page
    assert decode_body(_chunked(page, 50), "chunked", None, limit=len(page) - 1) is None
    assert decode_body(page, None, None, limit=10) is None  # nothing to decode, still bounded
    assert dechunk(_chunked(page, 50), limit=100) is None
    # a zlib header under a gzip-only header, or text that merely starts like one, is left alone
    assert decode_body(b"x^not zlib at all", None, "deflate") == b"x^not zlib at all"


@pytest.mark.parametrize("raw", [b"-5\r\nabc\r\n0\r\n\r\n", b"0x4\r\nWiki\r\n0\r\n\r\n", b"+4\r\nWiki\r\n0\r\n\r\n",
                                 b"4_0\r\nWiki\r\n0\r\n\r\n", b"fffffffffffffffffffff\r\nx\r\n"])
def test_dechunk_refuses_malformed_sizes(raw):
    assert dechunk(raw) == raw
