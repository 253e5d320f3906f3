"""HtmlExtract with the real extractors, and the process sandbox that bounds each document."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from refinery.document import Document, Drop
from refinery.sandbox import ProcessSandbox, SandboxCrashed, SandboxError, SandboxTimeout
from refinery.stages.html_extract import ExtractConfig, HtmlExtract, extract_text
from support import REPO, TESTS_DIR, article_html

PARAGRAPHS = [
    "The harbour committee published its long awaited report on the northern ferry on Tuesday evening. "
    "It describes how the timetable will change during the winter months and why the last crossing "
    "of the day will leave thirty minutes earlier than it does today.",
    "Residents who attended the public meeting asked many questions about the cost of the new vessel. "
    "The chair of the committee explained that most of the money comes from a regional fund and that "
    "ticket prices for families will stay the same for at least two more years.",
    "A second meeting is planned for the spring, when the committee will present detailed drawings of "
    "the new landing stage. Anyone who wants to comment can write to the town office before the end of March.",
]
NAV = ["Home", "News", "Events", "About us", "Contact", "Sign in", "Newsletter"]
FOOTER = "Copyright 2024 Harbour Town Network. All rights reserved. Privacy policy. Cookie settings."
PAGE = article_html("Ferry timetable changes for the winter", PARAGRAPHS, nav=NAV, footer=FOOTER)
KEY_SENTENCES = [
    "published its long awaited report on the northern ferry",
    "ticket prices for families will stay the same",
    "present detailed drawings of the new landing stage",
]


def doc(html, n: int = 0, url: str = "https://harbour.example.org/news/ferry") -> Document:
    return Document(id=f"doc-{n}", url=url, html=html)


def run_stage(config: ExtractConfig, docs: list[Document]) -> list[Document | Drop]:
    stage = HtmlExtract(config)
    stage.setup()
    try:
        return stage.process_batch(docs)
    finally:
        stage.teardown()


def outcome(item) -> str:
    return item.reason if isinstance(item, Drop) else "DOC"


@pytest.mark.parametrize("isolation", ["process", "inline"])
@pytest.mark.parametrize("extractor", ["trafilatura", "fast", "resiliparse"])
def test_main_text_kept_navigation_and_footer_removed(extractor, isolation):
    out, = run_stage(ExtractConfig(extractor=extractor, isolation=isolation), [doc(PAGE)])
    assert isinstance(out, Document), out
    for sentence in KEY_SENTENCES:
        assert sentence in out.text
    lines = [line.strip() for line in out.text.splitlines()]
    for item in NAV:
        assert item not in lines
    assert "Sign in" not in out.text
    assert "Newsletter" not in out.text
    assert "Copyright 2024" not in out.text
    assert "Cookie settings" not in out.text
    assert out.text == out.text.strip()
    assert out.html is None  # released once the text is extracted


@pytest.mark.parametrize("extractor", ["trafilatura", "fast", "resiliparse"])
def test_process_and_inline_isolation_agree(extractor):
    pages = [PAGE, article_html("Second page", PARAGRAPHS[::-1]), "<html><body><p>Short note.</p></body></html>"]
    results = {iso: run_stage(ExtractConfig(extractor=extractor, isolation=iso), [doc(p, i) for i, p in enumerate(pages)])
               for iso in ("process", "inline")}
    assert [(outcome(o), getattr(o, "text", "")) for o in results["process"]] == \
        [(outcome(o), getattr(o, "text", "")) for o in results["inline"]]


@pytest.mark.parametrize("extractor", ["trafilatura", "fast", "resiliparse"])
def test_pages_without_text_are_no_text(extractor):
    pages = ["", "<html><body></body></html>", "<html><head><title>t</title></head><body><div> </div></body></html>"]
    out = run_stage(ExtractConfig(extractor=extractor, isolation="inline"), [doc(p, i) for i, p in enumerate(pages)])
    assert [outcome(o) for o in out] == ["no_text"] * 3
    # a dropped document keeps its HTML for inspection
    assert [o.doc.html for o in out] == pages


def test_min_chars():
    short = "<html><body><article><p>Only a few words here.</p></article></body></html>"
    out = run_stage(ExtractConfig(isolation="inline", min_chars=200), [doc(short, 0), doc(PAGE, 1)])
    assert [outcome(o) for o in out] == ["no_text", "DOC"]


def test_extract_text_is_a_pure_function():
    for extractor in ("trafilatura", "fast", "resiliparse"):
        first = extract_text(PAGE, "https://harbour.example.org/", extractor, True, True, False)
        assert first == extract_text(PAGE, "https://harbour.example.org/", extractor, True, True, False)
        assert extract_text("", "", extractor, True, True, False) == ""


def test_extract_config_validation():
    with pytest.raises(ValidationError):
        ExtractConfig(extractor="beautifulsoup")
    with pytest.raises(ValidationError):
        ExtractConfig(timeout_s=0)
    with pytest.raises(ValidationError):
        ExtractConfig(isolation="thread")
    with pytest.raises(ValidationError):
        ExtractConfig(timeout=5)  # unknown key


# --- the sandbox -------------------------------------------------------------------------------

@pytest.fixture
def sandbox_path(monkeypatch):
    """Lets the sandbox child (a fresh interpreter) import tests/sandbox_helpers.py."""
    parts = [str(TESTS_DIR), str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(parts))


def test_sandbox_calls_with_kwargs(sandbox_path):
    with ProcessSandbox("sandbox_helpers:echo", {"suffix": "!"}, timeout_s=30) as box:
        assert box.call("hello") == "hello!"
        assert box.call(42) == "42!"
        assert box.restarts == 0


def test_sandbox_runs_in_another_process(sandbox_path):
    with ProcessSandbox("sandbox_helpers:pid", {}, timeout_s=30) as box:
        child = box.call()
        assert child != os.getpid()
        assert box.call() == child  # the same child serves call after call


def test_sandbox_error_is_reported_and_the_child_survives(sandbox_path):
    with ProcessSandbox("sandbox_helpers:misbehave", {}, timeout_s=30) as box:
        assert box.call("ok") == "OK"
        with pytest.raises(SandboxError, match="ValueError: boom"):
            box.call("raise")
        with pytest.raises(SandboxError):
            box.call("unpicklable")  # a result that cannot be sent back is an error, not a hang
        assert box.call("again") == "AGAIN"
        assert box.restarts == 0


def test_sandbox_timeout_then_recovers(sandbox_path):
    with ProcessSandbox("sandbox_helpers:misbehave", {}, timeout_s=1.0) as box:
        assert box.call("before") == "BEFORE"
        with pytest.raises(SandboxTimeout):
            box.call("sleep")
        assert box.restarts == 1
        assert box.call("after") == "AFTER"
        assert box.restarts == 1


def test_sandbox_crash_then_recovers(sandbox_path):
    with ProcessSandbox("sandbox_helpers:misbehave", {}, timeout_s=30) as box:
        with pytest.raises(SandboxCrashed):
            box.call("crash")
        assert box.call("after") == "AFTER"
        with pytest.raises(SandboxCrashed):
            box.call("crash")
        assert box.restarts == 2
        assert box.call("still fine") == "STILL FINE"


def test_sandbox_calls_sent_ahead_keep_their_order_and_their_own_outcomes(sandbox_path):
    """call_each sends calls ahead of the answers; a hang or a crash costs only its own call,
    and the calls queued behind it are answered by the next child, in order."""
    big = "x" * 300_000  # more than half the pipe can hold ahead: sent only when the child is idle
    calls = [("a",), ("raise",), ("sleep",), ("b",), (big,), ("crash",), ("c",), ("d",)]
    with ProcessSandbox("sandbox_helpers:misbehave", {}, timeout_s=2.0) as box:
        outcomes = box.call_each(calls)
        assert outcomes == [("ok", "A"), ("error", "ValueError: boom"), ("timeout", "no answer within 2.0s"),
                            ("ok", "B"), ("ok", big.upper()), ("crashed", "the sandbox process died"),
                            ("ok", "C"), ("ok", "D")]
        assert box.restarts == 2
        assert box.call_each([("e",)] * 40) == [("ok", "E")] * 40


@pytest.mark.parametrize("ref", ["no_such_module_anywhere:fn", "sandbox_helpers:no_such_function"])
def test_sandbox_unresolvable_function(sandbox_path, ref):
    box = ProcessSandbox(ref, {}, timeout_s=30)
    try:
        with pytest.raises(SandboxCrashed, match="failed to start"):
            box.call("x")
    finally:
        box.close()


def test_sandbox_close_is_idempotent(sandbox_path):
    box = ProcessSandbox("sandbox_helpers:echo", {}, timeout_s=30)
    assert box.call("a") == "a"
    box.close()
    box.close()
    assert box.call("b") == "b"  # starts a new child on demand
    box.close()


def test_extractor_failures_drop_only_their_document(sandbox_path):
    """Timeout, crash and exception inside the real stage: each drops one page, the next is extracted.

    The stage's sandbox is pointed at tests/sandbox_helpers.py:extract_or_misbehave, which runs the
    real extractor except on pages carrying a marker that makes it hang, crash or raise.
    """
    from sandbox_helpers import CRASH, HANG, RAISE

    stage = HtmlExtract(ExtractConfig(extractor="trafilatura", isolation="process", timeout_s=3))
    stage.setup()
    stage._sandbox.close()
    stage._sandbox = ProcessSandbox("sandbox_helpers:extract_or_misbehave", stage._kwargs, timeout_s=3)
    pages = [PAGE, PAGE + HANG, PAGE, PAGE + CRASH, PAGE, PAGE + RAISE, PAGE, "<html></html>"]
    try:
        out = stage.process_batch([doc(p, i) for i, p in enumerate(pages)])
    finally:
        stage.teardown()
    assert [outcome(o) for o in out] == ["DOC", "extract_timeout", "DOC", "extractor_crashed", "DOC",
                                         "extract_error", "DOC", "no_text"]
    assert [o.doc.id if isinstance(o, Drop) else o.id for o in out] == [f"doc-{i}" for i in range(len(pages))]
    texts = {o.text for o in out if isinstance(o, Document)}
    assert len(texts) == 1 and KEY_SENTENCES[0] in texts.pop()
    for dropped in out[1], out[3], out[5]:
        assert dropped.doc.html == pages[out.index(dropped)]  # kept for inspection
    assert HtmlExtract.reasons == ("extract_timeout", "extract_error", "extractor_crashed", "no_text", "html_too_deep",
                                   "text_too_long")
