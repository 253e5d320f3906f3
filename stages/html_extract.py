"""Main-text extraction from HTML: trafilatura (RefinedWeb's choice), refinery's fast extractor
(resiliparse blocks kept by a learned classifier, stages/fast_extractor.py), their union, or plain
resiliparse main content."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from refinery.document import Document, Drop
from refinery.html_bounds import tag_depth
from refinery.sandbox import shared_sandbox
from refinery.stage import Stage, StageConfig

MAX_TIMEOUT_S = 3600.0
UNION_BAND, UNION_UNSURE_SHARE = (0.2, 0.8), 0.2


class ExtractConfig(StageConfig):
    extractor: Literal["trafilatura", "fast", "union", "resiliparse"] = "trafilatura"
    # "process" isolates the extractor in a child process so timeouts and crashes drop one
    # document; "inline" is faster to debug but has no time bound.
    isolation: Literal["process", "inline"] = "process"
    # per page; Connection.poll takes at most ~2,147,483 s (milliseconds in an int32) and a page
    # that needs more than an hour is a hung extractor
    timeout_s: float = Field(default=5.0, gt=0, le=MAX_TIMEOUT_S)
    # favor_precision and include_tables are trafilatura's; include_comments is trafilatura's and
    # resiliparse's ("fast" always leaves comment sections out).
    favor_precision: bool = True
    include_tables: bool = True
    include_comments: bool = False
    min_chars: int = Field(default=1, ge=0)
    # deeper pages are dropped (html_too_deep) before any parser sees them: parse time grows with
    # the square of the depth (refinery/html_bounds.py)
    max_tag_depth: int = Field(default=2000, ge=16, le=100_000)
    # longer texts are dropped (text_too_long): every later stage's cost grows with the text, and
    # a real article is far shorter (gopher_repetition takes ~0.5 s on 1 M characters)
    max_text_chars: int = Field(default=1_000_000, ge=1, le=100_000_000)
    # union: trafilatura runs on a page when the fast model's blocks with a probability inside
    # union_band hold at least union_unsure_share of its text (docs/EXTRACTION.md, "Union")
    union_band: tuple[float, float] = UNION_BAND
    union_unsure_share: float = Field(default=UNION_UNSURE_SHARE, ge=0, le=1)

    @model_validator(mode="after")
    def _band(self):
        low, high = self.union_band
        if not 0 <= low <= high <= 1:
            raise ValueError("union_band must be [low, high] with 0 <= low <= high <= 1")
        return self


def extract_text(html: str, url: str, extractor: str, favor_precision: bool,
                 include_tables: bool, include_comments: bool, union_band: tuple[float, float] = UNION_BAND,
                 union_unsure_share: float = UNION_UNSURE_SHARE) -> str:
    """Pure function run in the sandbox; returns "" when nothing was extracted."""
    from refinery.stages import fast_extractor

    if extractor == "trafilatura":
        # deduplicate stays off there: trafilatura's cache spans documents, which would make output
        # depend on the order in which a worker sees them. Dedup is refinery's own stage.
        return fast_extractor.trafilatura_text(html, url, favor_precision, include_tables, include_comments)
    if extractor == "fast":
        return fast_extractor.extract_fast(html)
    if extractor == "union":
        return fast_extractor.extract_union(html, url, favor_precision, include_tables, include_comments,
                                            union_band, union_unsure_share)
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    return extract_plain_text(tree, main_content=True, alt_texts=False, links=False,
                              list_bullets=True, comments=include_comments) or ""


class HtmlExtract(Stage):
    name: ClassVar[str] = "extract"
    reasons: ClassVar[tuple[str, ...]] = ("extract_timeout", "extract_error", "extractor_crashed", "no_text",
                                          "html_too_deep", "text_too_long")
    Config = ExtractConfig
    # pages handed to the sandbox together: it goes from one to the next without a round trip
    # (each keeps its own timeout); 16 pages of HTML are a few MB
    batch_size: ClassVar[int] = 16

    def setup(self) -> None:
        c = self.config
        self._kwargs = dict(extractor=c.extractor, favor_precision=c.favor_precision,
                            include_tables=c.include_tables, include_comments=c.include_comments,
                            union_band=tuple(c.union_band), union_unsure_share=c.union_unsure_share)
        self._sandbox = None
        if c.isolation == "process":
            self._sandbox = shared_sandbox("refinery.stages.html_extract:extract_text", self._kwargs, c.timeout_s)

    def process_batch(self, docs: list[Document]) -> list[Document | Drop]:
        out: list[Document | Drop | None] = [None] * len(docs)
        parse = []
        for n, doc in enumerate(docs):
            if tag_depth(doc.html or "", self.config.max_tag_depth) > self.config.max_tag_depth:
                out[n] = Drop(doc, "html_too_deep")
            else:
                parse.append(n)
        calls = [(docs[n].html or "", docs[n].url) for n in parse]
        if self._sandbox is not None:
            outcomes = self._sandbox.call_each(calls)
        else:
            outcomes = [self._inline(*call) for call in calls]
        for n, (status, value) in zip(parse, outcomes):
            out[n] = self._finish(docs[n], status, value)
        return out  # type: ignore[return-value]

    def process_doc(self, doc: Document) -> Document | Drop:
        return self.process_batch([doc])[0]

    def _inline(self, html: str, url: str) -> tuple[str, object]:
        try:
            return "ok", extract_text(html, url, **self._kwargs)
        except Exception as err:  # noqa: BLE001 - one page's failure, not the shard's
            return "error", repr(err)

    def _finish(self, doc: Document, status: str, text) -> Document | Drop:
        if status != "ok":
            return Drop(doc, {"timeout": "extract_timeout", "crashed": "extractor_crashed"}.get(status, "extract_error"))
        text = text.strip()
        if len(text) < max(self.config.min_chars, 1):
            return Drop(doc, "no_text")
        if len(text) > self.config.max_text_chars:
            return Drop(doc, "text_too_long")
        doc.text, doc.html = text, None  # dropped documents keep their HTML for inspection
        return doc
