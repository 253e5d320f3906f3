"""Reads WARC (fastwarc) and ARC (warcio) files into HTML documents; every other record is counted.

fastwarc is about 2x faster than warcio on the shared shards and, in quirks mode, also reads
WARC/0.18 with bare-LF headers. It cannot read ARC, so ARC files go through warcio's arc2warc.
Neither library raises on a truncated gzip member or a clipped record, so truncation is detected
by comparing the payload read with the declared length.

Every per-record cost is bounded by `max_record_bytes`: a record that declares more is not read, a
body whose Content-Encoding or chunking decodes to more is dropped as `decoded_too_large`, and a
record whose declared length runs past the end of the file (fastwarc then skips to the end) is
followed by a search for the records it hid. An exception from the stream itself (an I/O error,
a timeout) ends the shard as one `read_error`; a parse failure as one `unreadable_archive`.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import zlib
from typing import ClassVar, Iterator

from refinery.config import InputConfig
from refinery.document import Document, Drop
from refinery.io import open_input
from refinery.stage import SourceStage

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_HTML_SNIFF = re.compile(rb"<\s*(!doctype\s+html|html|head|body)[\s>]", re.IGNORECASE)
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\ufffd]")
BINARY_FRACTION = 0.05  # share of control/replacement characters that marks a payload as binary


# Codecs that are "text encodings" to Python yet turn escape sequences in the bytes into any code
# point (lone surrogates included), or that are not charsets at all.
_NOT_CHARSETS = frozenset({"unicode-escape", "raw-unicode-escape", "punycode", "idna", "utf-7"})
_SURROGATES = re.compile("[\ud800-\udfff]")


def charset_codec(name: str | None) -> str | None:
    """Python's codec for a declared charset, or None when it is unknown or no real text encoding
    (base64, zlib, rot_13, unicode_escape, punycode, ... are refused)."""
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def sanitise(text: str) -> str:
    """Replaces code points no UTF-8 writer accepts (lone surrogates) with U+FFFD."""
    return _SURROGATES.sub("\ufffd", text) if _SURROGATES.search(text) else text


def decode_html(payload: bytes, declared: str | None) -> tuple[str, str]:
    """Decodes a payload: valid UTF-8 first, then the declared charset, then detection. The text
    is sanitised here, once: it never holds a lone surrogate, whatever the bytes or charset."""
    try:
        return payload.decode("utf-8"), "utf-8"  # strict UTF-8 never yields a surrogate
    except UnicodeDecodeError:
        pass
    candidates = [declared] if declared else []
    match = _META_CHARSET.search(payload[:4096])
    if match:
        candidates.append(match.group(1).decode("ascii", "ignore"))
    for name in candidates:
        codec = charset_codec(name)
        if codec is None:
            continue
        try:
            return sanitise(payload.decode(codec)), codec
        except (UnicodeError, ValueError, TypeError):
            continue
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    encoding = detect_encoding(payload)
    return sanitise(bytes_to_str(payload, encoding, errors="replace")), encoding


_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20)])
_REPLACEMENT_UTF8 = "\ufffd".encode("utf-8")


def looks_binary(text: str) -> bool:
    """More than BINARY_FRACTION of the first 64 Ki characters are ``_CONTROL`` characters.
    Counted on the UTF-8 bytes, where those are single bytes and U+FFFD one 3-byte sequence:
    C-speed translate and count instead of a regex scan (a third of the reader's time)."""
    head = text[:65536]
    if not head:
        return True
    encoded = head.encode("utf-8", "surrogatepass")
    controls = len(encoded) - len(encoded.translate(None, _CONTROL_BYTES)) + encoded.count(_REPLACEMENT_UTF8)
    return controls > BINARY_FRACTION * len(head)


def _record_id(raw_id: str | None, shard_name: str, index: int) -> str:
    if raw_id:
        return raw_id.strip("<>").removeprefix("urn:uuid:")
    # ARC records have no id (warcio invents a random one); their place in the file is stable.
    return "arc-" + hashlib.sha1(f"{shard_name}:{index}".encode()).hexdigest()[:32]


def _file_drop(shard_name: str, reason: str) -> Drop:
    """A problem with the file rather than a record, counted as one pseudo-record."""
    return Drop(Document(id=f"{shard_name}:{reason}", url=""), reason)


class _RangeStream:
    """A seekable byte stream that ends at ``end`` (a byte range of a split file)."""

    def __init__(self, stream, end: int | None):
        self._stream, self.end = stream, end

    def read(self, size: int = -1) -> bytes:
        if self.end is None:
            return self._stream.read(size)
        left = self.end - self._stream.tell()
        if left <= 0:
            return b""
        return self._stream.read(left if size is None or size < 0 else min(size, left))

    def tell(self) -> int:
        return self._stream.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2 and self.end is not None:
            return self._stream.seek(self.end + offset)
        return self._stream.seek(offset, whence)


class _GuardedStream:
    """Passes reads through and remembers an exception the stream itself raised (an I/O error, a
    timeout), so that it is told apart from a parse failure of the bytes read."""

    def __init__(self, stream):
        self._stream = stream
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        return self._guard(self._stream.read, size)

    def tell(self) -> int:
        return self._guard(self._stream.tell)

    def _guard(self, method, *args):
        try:
            return method(*args)
        except BaseException as exc:
            self.error = exc
            raise


def _fatal(exc: BaseException) -> bool:
    """Exceptions that stop the process or the generator, never counted as a drop. Everything else
    is (fastwarc's Rust panics derive from BaseException, not Exception)."""
    return isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit))


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length:[ \t]*(\d{1,20})", re.IGNORECASE)
_WARC_LINE = re.compile(rb"\nWARC/\d")
_SCAN_STEP = 1 << 20


def _hidden_records(path: str, last_pos: int, gzipped: bool, config: InputConfig | None = None,
                    end: int | None = None) -> int | None:
    """Where bytes that made no record begin, after the last record fastwarc returned (at
    `last_pos`); None when there are none. Such bytes follow a file cut inside a gzip or WARC
    header, or a record whose declared length ran past the end of the file and so hid the records
    after it (fastwarc skips the declared length)."""
    with open_input(path, config) as raw:
        stream = _RangeStream(raw, end)
        if gzipped:
            return _after_member(stream, last_pos)
        size = stream.seek(0, 2)
        stream.seek(last_pos)
        head = stream.read(1 << 16)
        end, length = _HEADER_END.search(head), _CONTENT_LENGTH.search(head)
        if end is None or length is None or last_pos + end.end() + int(length.group(1)) <= size:
            return None  # the last record ends inside the file: nothing hidden
        return _next_warc_line(stream, last_pos + end.end())


def _after_member(stream, pos: int) -> int | None:
    """The offset after the gzip member at `pos`, when non-padding bytes follow it."""
    stream.seek(pos)
    inflater = zlib.decompressobj(wbits=31)
    read = 0
    try:
        while not inflater.eof:
            chunk = stream.read(1 << 16)
            if not chunk:  # the last record's own member is cut: that record was counted already
                return None
            read += len(chunk)
            inflater.decompress(chunk, 1 << 20)
            while inflater.unconsumed_tail and not inflater.eof:
                inflater.decompress(inflater.unconsumed_tail, 1 << 20)
    except zlib.error:
        return None
    rest = inflater.unused_data + stream.read(1 << 16)
    return pos + read - len(inflater.unused_data) if rest.strip(b"\0") else None


def _next_warc_line(stream, pos: int) -> int | None:
    """The offset of the first line from `pos` on that starts a WARC header, read in steps."""
    stream.seek(pos)
    carry = b"\n"  # `pos` itself starts a line
    while True:
        chunk = stream.read(_SCAN_STEP)
        if not chunk:
            return None
        window = carry + chunk
        match = _WARC_LINE.search(window)
        if match:
            return pos - len(carry) + match.start() + 1
        carry = window[-8:]
        pos += len(chunk)


def _plain_head(head: bytes) -> bytes:
    """The first bytes of the first record, through one gzip member if the file is gzipped."""
    if head[:2] == b"\x1f\x8b":
        try:
            return zlib.decompressobj(wbits=31).decompress(head, 64)
        except zlib.error:
            return b""
    return head


def _archive_kind(head: bytes) -> str | None:
    """'warc', 'arc', or None when the file is not an archive fastwarc or warcio can read."""
    plain = _plain_head(head).lstrip(b"\r\n")
    if plain.startswith(b"WARC/"):
        return "warc"
    if plain.startswith(b"filedesc://"):
        return "arc"
    return None


class WarcReader(SourceStage):
    name: ClassVar[str] = "warc_reader"
    reasons: ClassVar[tuple[str, ...]] = (
        "warcinfo", "request", "metadata", "revisit", "resource", "conversion", "other_record_type",
        "http_status", "non_html", "truncated", "too_large", "empty_payload", "binary_payload",
        "unreadable_archive", "empty_file", "decoded_too_large", "read_error",
    )

    def __init__(self, config: InputConfig | None = None, source: str = "web", limit: int | None = None):
        self.config = config or InputConfig()
        self.source = source
        self.limit = limit
        self._keep_status = frozenset(self.config.keep_status)

    def read(self, path: str, start: int = 0, end: int | None = None) -> Iterator[Document | Drop]:
        """The records of ``path``, or of its byte range [start, end) (whole gzip members)."""
        shard_name = path.rstrip("/").rsplit("/", 1)[-1]
        try:
            with open_input(path, self.config) as stream:
                head = stream.read(4096)
        except BaseException as exc:
            if _fatal(exc):
                raise
            yield _file_drop(shard_name, "read_error")
            return
        if not head:
            yield _file_drop(shard_name, "empty_file")
            return
        kind = _archive_kind(head)
        if kind is None:  # fastwarc stops silently on such files; count them instead
            yield _file_drop(shard_name, "unreadable_archive")
            return
        arc = self.config.format == "arc" or (self.config.format == "auto" and kind == "arc")
        if arc:
            records = self._read_arc(path, shard_name)
        else:
            records = self._read_warc(path, shard_name, gzipped=head[:2] == b"\x1f\x8b", start=start, end=end)
        for count, item in enumerate(records, start=1):
            yield item
            if self.limit is not None and count >= self.limit:
                return

    def _read_warc(self, path: str, shard_name: str, gzipped: bool, start: int = 0,
                   end: int | None = None) -> Iterator[Document | Drop]:
        """Reads the file (or its range), then, while bytes after its last record made no record,
        reads on from there: what they hold is read or counted as one `truncated`, never lost."""
        first = start
        while True:
            count, last_pos, ended = yield from self._read_warc_from(path, shard_name, start, end)
            if ended:
                return
            if start != first and not count:
                yield _file_drop(shard_name, "truncated")
                return
            if last_pos is None:
                return
            try:
                start = _hidden_records(path, last_pos, gzipped, self.config, end)
            except BaseException as exc:
                if _fatal(exc):
                    raise
                yield _file_drop(shard_name, "read_error")
                return
            if start is None:
                return

    def _read_warc_from(self, path: str, shard_name: str, start: int, end: int | None = None):
        """Records from offset `start` on; returns (records read, offset of the last, whether an
        exception ended the shard, counted as one drop)."""
        from fastwarc.warc import ArchiveIterator

        count, last_pos, stream = 0, None, None
        try:
            with open_input(path, self.config) as raw:
                stream = _GuardedStream(_RangeStream(raw, end))
                if start:
                    raw.seek(start)
                # auto_decode stays off: many archives keep "chunked"/"gzip" headers on bodies stored decoded.
                iterator = ArchiveIterator(stream, parse_http=True, quirks_mode=True, auto_decode="none")
                for record in iterator:
                    count, last_pos = count + 1, record.stream_pos
                    yield self._from_fastwarc(record, shard_name, stream)
                    if stream.error is not None:  # that record was the read_error; the stream is broken
                        return count, last_pos, True
        except BaseException as exc:
            if _fatal(exc):
                raise
            if stream is None or stream.error is not None:
                reason = "read_error"
            else:  # a corrupt archive ends its shard, counted once; bytes after a clipped tail are truncated
                reason = "truncated" if start and not count else "unreadable_archive"
            yield _file_drop(shard_name, reason)
            return count, last_pos, True
        return count, last_pos, False

    def _record_document(self, record, shard_name: str) -> tuple[str, Document]:
        """A fastwarc record's type and the document its WARC headers describe."""
        headers = record.headers
        return str(record.record_type).rsplit(".", 1)[-1], Document(
            id=_record_id(record.record_id, shard_name, record.stream_pos),
            url=headers.get("WARC-Target-URI") or "",
            warc_date=headers.get("WARC-Date") or "",
            source=self.source,
        )

    def _payload(self, record, doc: Document, stream: _GuardedStream) -> bytes | Drop:
        """The record's body, read only when it declares at most ``max_record_bytes``; a drop when
        it is marked or found truncated, too large, or unreadable."""
        if record.headers.get("WARC-Truncated"):
            return Drop(doc, "truncated")
        if record.content_length > self.config.max_record_bytes:
            return Drop(doc, "too_large")
        try:
            payload = record.reader.read(self.config.max_record_bytes + 1)
        except BaseException as exc:  # a damaged record body, or the stream failing under it
            if _fatal(exc):
                raise
            return Drop(doc, "read_error" if stream.error is not None else "truncated")
        if len(payload) < record.content_length:
            return Drop(doc, "truncated")
        return payload

    def _from_fastwarc(self, record, shard_name: str, stream: _GuardedStream) -> Document | Drop:
        kind, doc = self._record_document(record, shard_name)
        if kind != "response":
            return Drop(doc, kind if kind in self.reasons else "other_record_type")
        if not record.is_http:
            return Drop(doc, "non_html")
        status = record.http_headers.status_code
        if status not in self._keep_status:
            return Drop(doc, "http_status")
        content_type = record.http_content_type
        payload = self._payload(record, doc, stream)
        if isinstance(payload, Drop):
            return payload
        http = record.http_headers
        return self._decoded(doc, payload, http.get("Transfer-Encoding"), http.get("Content-Encoding"),
                             content_type, record.http_charset)

    def _decoded(self, doc: Document, payload: bytes, transfer_encoding: str | None, content_encoding: str | None,
                 content_type: str | None, charset: str | None) -> Document | Drop:
        payload = decode_body(payload, transfer_encoding, content_encoding, self.config.max_record_bytes)
        if payload is None:
            return Drop(doc, "decoded_too_large")
        return self._finish(doc, payload, content_type, charset)

    def _finish(self, doc: Document, payload: bytes, content_type: str | None, charset: str | None) -> Document | Drop:
        if not payload.strip():
            return Drop(doc, "empty_payload")
        if content_type:
            if content_type.lower() not in HTML_TYPES:
                return Drop(doc, "non_html")
        elif not _HTML_SNIFF.search(payload[:2048]):
            return Drop(doc, "non_html")
        html, used = decode_html(payload, charset)
        if looks_binary(html):
            return Drop(doc, "binary_payload")
        doc.html = html
        doc.charset = used
        return doc

    def _read_arc(self, path: str, shard_name: str) -> Iterator[Document | Drop]:
        from warcio.archiveiterator import ArchiveIterator

        stream = None
        try:
            with open_input(path, self.config) as raw:
                stream = _GuardedStream(raw)
                for index, record in enumerate(ArchiveIterator(stream, arc2warc=True)):
                    yield self._from_warcio(record, shard_name, index, stream)
                    if stream.error is not None:
                        return
        except BaseException as exc:
            if _fatal(exc):
                raise
            yield _file_drop(shard_name, "read_error" if stream is None or stream.error is not None
                             else "unreadable_archive")

    def _from_warcio(self, record, shard_name: str, index: int, stream: _GuardedStream) -> Document | Drop:
        headers = record.rec_headers
        doc = Document(
            id=_record_id(None, shard_name, index),
            url=headers.get_header("WARC-Target-URI") or "",
            warc_date=headers.get_header("WARC-Date") or "",
            source=self.source,
        )
        kind = record.rec_type
        if kind != "response":
            return Drop(doc, kind if kind in self.reasons else "other_record_type")
        http = record.http_headers
        if http is None:
            content_type, charset = None, None
        else:
            try:
                if int(http.get_statuscode() or 0) not in self._keep_status:
                    return Drop(doc, "http_status")
            except ValueError:
                return Drop(doc, "http_status")
            content_type, charset = _split_content_type(http.get_header("Content-Type"))
        try:
            length = int(headers.get_header("Content-Length") or 0)
        except ValueError:
            return Drop(doc, "truncated")
        if length > self.config.max_record_bytes:
            return Drop(doc, "too_large")
        limit = self.config.max_record_bytes
        try:
            # warcio undoes chunking and Content-Encoding itself; a bounded read bounds what it decodes
            payload = record.content_stream().read(limit + 1)
        except BaseException as exc:
            if _fatal(exc):
                raise
            return Drop(doc, "read_error" if stream.error is not None else "truncated")
        if len(payload) > limit:
            return Drop(doc, "decoded_too_large")
        if record.raw_stream.limit:
            return Drop(doc, "truncated")
        return self._finish(doc, payload, content_type, charset)


_INFLATE_STEP = 1 << 20
_HEX_SIZE = re.compile(rb"0*[0-9A-Fa-f]{1,16}")


def decode_body(payload: bytes, transfer_encoding: str | None, content_encoding: str | None,
                limit: int | None = None) -> bytes | None:
    """Undoes chunking and gzip/deflate only where the body really is encoded; archives often store
    decoded bodies under the original headers. None when the decoded body would pass `limit` bytes:
    decoding stops there, so a compression bomb costs at most `limit` bytes of memory."""
    if transfer_encoding and "chunked" in transfer_encoding.lower():
        payload = dechunk(payload, limit)
        if payload is None:
            return None
    if content_encoding and _compressed(payload, content_encoding):
        return _inflate(payload, limit)
    if limit is not None and len(payload) > limit:
        return None
    return payload


def _compressed(payload: bytes, content_encoding: str) -> bool:
    """A gzip member, or a zlib stream under a `deflate` header (its 2-byte header checks out)."""
    if payload[:2] == b"\x1f\x8b":
        return True
    return ("deflate" in content_encoding.lower() and len(payload) > 1 and payload[0] & 0x0F == 8
            and (payload[0] << 8 | payload[1]) % 31 == 0)


def _inflate(payload: bytes, limit: int | None) -> bytes | None:
    """The first gzip member or zlib stream of `payload`, decoded in steps; a truncated stream gives
    what it holds, a corrupt one the payload unchanged, one longer than `limit` None."""
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    out = bytearray()
    try:
        piece = inflater.decompress(payload, _INFLATE_STEP)
        while True:
            out += piece
            if limit is not None and len(out) > limit:
                return None
            if inflater.eof or not (piece or inflater.unconsumed_tail):
                return bytes(out)
            piece = inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP)
    except zlib.error:
        return payload


def dechunk(payload: bytes, limit: int | None = None) -> bytes | None:
    """HTTP/1.1 chunked body to plain bytes; returns the input unchanged if it is not chunked, and
    None when the dechunked body would pass `limit` bytes.

    A body whose chunks run to its end without the closing zero-size chunk is still chunked."""
    out, pos = bytearray(), 0
    while pos < len(payload):
        end = payload.find(b"\r\n", pos)
        if end < 0:
            return _within(payload, limit)
        size_field = payload[pos:end].split(b";", 1)[0].strip()
        if not _HEX_SIZE.fullmatch(size_field):
            return _within(payload, limit)
        size = int(size_field, 16)
        if size == 0:
            return bytes(out)
        start = end + 2
        if start + size > len(payload):
            return _within(payload, limit)
        if limit is not None and len(out) + size > limit:
            return None
        out += payload[start:start + size]
        pos = start + size + 2
    return bytes(out) if out else _within(payload, limit)


def _within(payload: bytes, limit: int | None) -> bytes | None:
    return payload if limit is None or len(payload) <= limit else None


def _split_content_type(value: str | None) -> tuple[str | None, str | None]:
    if not value:
        return None, None
    parts = [p.strip() for p in value.split(";")]
    charset = next((p.split("=", 1)[1].strip("\"' ") for p in parts[1:] if p.lower().startswith("charset=")), None)
    return parts[0].lower() or None, charset
