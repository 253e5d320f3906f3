"""The unit that flows between stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Document:
    id: str
    url: str
    warc_date: str = ""
    source: str = "web"
    html: bytes | None = None  # raw payload; released by the extractor
    charset: str | None = None  # from the HTTP header, when declared
    text: str = ""
    language: str = ""
    language_score: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)  # quality_<name> columns (quality_classifier)


def document_key(doc_id: str, shard_id: str, row: int) -> str:
    """The key dedup decides on: unique by construction (the shard and the document's row in its
    chain output), and ordered by the document id first, so "the lowest id is kept" stays the rule
    while two documents that share a web id (a WARC-Record-ID is data, not a key) stay two."""
    return f"{doc_id}\x00{shard_id}\x00{row:010d}"


@dataclass(slots=True)
class Drop:
    """A document a stage removed, and why (one of the stage's declared reasons)."""

    doc: Document
    reason: str
    kept_id: str | None = None  # dedup drops: the document kept in its place
    detail: str | None = None  # what else explains it, e.g. the evaluation item a document contains
