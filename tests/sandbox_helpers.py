"""Functions the sandbox tests run in a child process (resolved as `sandbox_helpers:NAME`).

The child is `python -m refinery.sandbox`, a fresh interpreter, so tests put this folder on
PYTHONPATH for it (see the `sandbox_path` fixture in test_extract.py).
"""

from __future__ import annotations

import os
import time

from refinery.stages.html_extract import extract_text

HANG, CRASH, RAISE = "<!--test:hang-->", "<!--test:crash-->", "<!--test:raise-->"


def echo(value, *, suffix: str = ""):
    return f"{value}{suffix}"


def pid() -> int:
    return os.getpid()


def misbehave(command: str):
    if command == "sleep":
        time.sleep(600)
    if command == "crash":
        os._exit(3)
    if command == "raise":
        raise ValueError("boom")
    if command == "unpicklable":
        return lambda: None
    return command.upper()


def extract_or_misbehave(html: str, url: str, **kwargs) -> str:
    """The real extractor, except for pages carrying a test marker."""
    if HANG in html:
        time.sleep(600)
    if CRASH in html:
        os._exit(3)
    if RAISE in html:
        raise RuntimeError("extractor blew up on this page")
    return extract_text(html, url, **kwargs)


# warm the extractor at import time (before the sandbox reports "ready"), so the first call
# is not slowed by importing trafilatura
extract_text("<html><body><p>warm up</p></body></html>", "", "trafilatura", True, True, False)
