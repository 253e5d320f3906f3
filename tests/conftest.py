"""Shared fixtures: the real data in ../shared/data, temporary outputs, and running the CLI.

The embedded sample (sample://english) is materialised under REFINERY_CACHE, which points at
a per-session temporary folder, so each session regenerates it and never touches ~/.cache.
Helpers live in tests/support.py (importable as `support`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support import SHARED_DATA, run_cli_inprocess, run_cli_subprocess


@pytest.fixture(scope="session", autouse=True)
def _refinery_cache(tmp_path_factory):
    """REFINERY_CACHE in a fresh folder for the whole session (subprocesses inherit it)."""
    cache = tmp_path_factory.mktemp("refinery-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REFINERY_CACHE", str(cache))
        mp.setenv("COLUMNS", "200")  # rich's progress line on stderr stays on one line
        mp.setenv("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # never reach the network for it
        yield cache


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that use it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not available: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def out_dir(tmp_path) -> Path:
    """An output directory that does not exist yet (refinery creates it)."""
    return tmp_path / "out"


@pytest.fixture
def run_cli():
    """Runs `refinery.cli.main([...])` in-process; returns a CliResult."""
    return run_cli_inprocess


@pytest.fixture
def run_cli_proc():
    """Runs `python -m refinery ...` as a subprocess; returns a CliResult."""
    return run_cli_subprocess


def pytest_collection_modifyitems(config, items):
    """Tests marked `shared` skip cleanly where ../shared/data is absent."""
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"shared data not available: {SHARED_DATA}")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)
