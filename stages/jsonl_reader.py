"""Reads JSON Lines (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``): one document a line, for corpora a
curator already holds (a downloaded dataset, refinery's own output) that are to be filtered or
deduplicated again.

The ``text``, ``id`` and ``url`` fields are named by ``input.text_field``, ``id_field`` and
``url_field``; ``warc_date``, ``language`` and ``language_score`` are kept where present, and the
fields in ``input.metadata_fields`` are carried through to the output's ``metadata`` column. A
document without an id gets a stable one, a hash of the file's name and the line's number.

A line longer than ``input.max_record_bytes`` is skipped without being held (``too_large``); a
line that is not a JSON object is ``malformed_line``, one whose text is missing or not a string
``missing_text``, one whose text is blank ``empty_text``. A damaged compressed stream ends the
file as one ``read_error``. Nothing here raises on the input's content."""

from __future__ import annotations

import hashlib
import io
import json
from typing import ClassVar, Iterator

from refinery.config import InputConfig
from refinery.document import Document, Drop
from refinery.io import open_input
from refinery.stage import SourceStage
from refinery.stages.warc_reader import _fatal, _file_drop, sanitise

READ_CHUNK = 1 << 16  # small reads: a damaged stream loses at most this much before its error


def stable_id(kind: str, shard_name: str, position: int) -> str:
    """An id for a document that has none: the same file and position give the same id."""
    return f"{kind}-" + hashlib.sha1(f"{shard_name}:{position}".encode()).hexdigest()[:32]


def document_from_fields(row: dict, config: InputConfig, source: str, shard_name: str, position: int,
                         kind: str) -> Document | Drop:
    """A document from one record's fields, or the drop that says what is wrong with it."""
    raw_id = row.get(config.id_field)
    url = row.get(config.url_field)
    doc = Document(id=str(raw_id) if raw_id not in (None, "") else stable_id(kind, shard_name, position),
                   url=url if isinstance(url, str) else "", source=source)
    text = row.get(config.text_field)
    if not isinstance(text, str):
        return Drop(doc, "missing_text")
    limit = config.max_record_bytes
    if len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit):
        return Drop(doc, "too_large")
    if not text.strip():
        return Drop(doc, "empty_text")
    doc.text = sanitise(text)
    date, language, score = row.get("warc_date"), row.get("language"), row.get("language_score")
    doc.warc_date = date if isinstance(date, str) else ""
    doc.language = language if isinstance(language, str) else ""
    doc.language_score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else 0.0
    for name in config.metadata_fields:
        if name in row:
            doc.metadata[name] = row[name]
    return doc


def _decompressed(raw, path: str):
    name = path.lower()
    if name.endswith(".gz"):
        import gzip

        return gzip.GzipFile(fileobj=raw)
    if name.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw)
    return raw


def bounded_lines(stream, limit: int) -> Iterator[bytes | None]:
    """Each line of a binary stream (without its newline), or None for a line longer than
    ``limit`` bytes, which is read past in chunks and never held whole."""
    buffer = b""
    skipping = False
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            break
        buffer += chunk
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            line, buffer = buffer[:end], buffer[end + 1:]
            if skipping:
                skipping = False
                continue
            yield None if len(line) > limit else line
        if len(buffer) > limit:
            if not skipping:
                yield None
            skipping, buffer = True, b""
    if buffer and not skipping:
        yield None if len(buffer) > limit else buffer


def counted(items: Iterator[Document | Drop], shard_name: str, limit: int | None) -> Iterator[Document | Drop]:
    """A document reader's items, at most ``limit``; an exception from the input (a damaged
    stream, a failing read) ends the file as one ``read_error``, and a file with no record at all
    is one ``empty_file``."""
    count = 0
    try:
        for item in items:
            count += 1
            yield item
            if limit is not None and count >= limit:
                return
    except BaseException as exc:
        if _fatal(exc):
            raise
        yield _file_drop(shard_name, "read_error")
        return
    if not count:
        yield _file_drop(shard_name, "empty_file")


class DocumentFileReader(SourceStage):
    """A reader of files that hold documents rather than pages: ``_records`` yields each one."""

    def __init__(self, config: InputConfig | None = None, source: str = "web", limit: int | None = None):
        self.config = config or InputConfig()
        self.source = source
        self.limit = limit

    def read(self, path: str, start: int = 0, end: int | None = None) -> Iterator[Document | Drop]:
        shard_name = path.rstrip("/").rsplit("/", 1)[-1]
        return counted(self._records(path, shard_name), shard_name, self.limit)

    def _records(self, path: str, shard_name: str) -> Iterator[Document | Drop]:
        raise NotImplementedError


class JsonlReader(DocumentFileReader):
    name: ClassVar[str] = "jsonl_reader"
    reasons: ClassVar[tuple[str, ...]] = (
        "malformed_line", "missing_text", "empty_text", "too_large", "read_error", "empty_file",
    )

    def _records(self, path: str, shard_name: str) -> Iterator[Document | Drop]:
        with open_input(path, self.config) as raw:
            compressed = path.lower().endswith((".gz", ".zst"))
            stream = io.BufferedReader(_decompressed(raw, path), READ_CHUNK) if compressed else raw
            for number, line in enumerate(bounded_lines(stream, self.config.max_record_bytes)):
                if line is None or line.strip():  # blank lines are not records
                    yield self._document(line, shard_name, number)

    def _document(self, line: bytes | None, shard_name: str, number: int) -> Document | Drop:
        placeholder = Document(id=stable_id("jsonl", shard_name, number), url="", source=self.source)
        if line is None:
            return Drop(placeholder, "too_large")
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            return Drop(placeholder, "malformed_line")
        if not isinstance(row, dict):
            return Drop(placeholder, "malformed_line")
        return document_from_fields(row, self.config, self.source, shard_name, number, "jsonl")
