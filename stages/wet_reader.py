"""Reads Common Crawl WET files: each ``conversion`` record's plain text becomes a document, and the
chain can skip extraction (``configs/english_wet.yaml``). Every other record is counted.

The archive handling (gzip members, a clipped tail, records a bad length hides, a failing
stream) is the WARC reader's; only what a record becomes differs. A text is bounded by
``input.max_record_bytes``, and its bytes are decoded as UTF-8, the charset WET files are written in
(an invalid byte becomes U+FFFD)."""

from __future__ import annotations

from typing import ClassVar

from refinery.document import Document, Drop
from refinery.stages.warc_reader import WarcReader, _file_drop, _GuardedStream, looks_binary, sanitise


class WetReader(WarcReader):
    name: ClassVar[str] = "wet_reader"
    reasons: ClassVar[tuple[str, ...]] = (
        "warcinfo", "request", "metadata", "revisit", "resource", "response", "other_record_type",
        "truncated", "too_large", "empty_payload", "binary_payload", "unreadable_archive", "empty_file",
        "read_error",
    )

    def _from_fastwarc(self, record, shard_name: str, stream: _GuardedStream) -> Document | Drop:
        kind, doc = self._record_document(record, shard_name)
        if kind != "conversion":
            return Drop(doc, kind if kind in self.reasons else "other_record_type")
        payload = self._payload(record, doc, stream)
        if isinstance(payload, Drop):
            return payload
        text = sanitise(payload.decode("utf-8", "replace")).strip()
        if not text:
            return Drop(doc, "empty_payload")
        if looks_binary(text):
            return Drop(doc, "binary_payload")
        doc.text = text
        return doc

    def _read_arc(self, path: str, shard_name: str):
        yield _file_drop(shard_name, "unreadable_archive")  # an ARC file holds no conversion records
