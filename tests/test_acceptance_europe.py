"""Acceptance: configs/europe.yaml keeps German, French and Spanish pages of the real shards."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from support import SHARED_DATA, check_funnel, read_documents, run_cli_subprocess

pytestmark = [pytest.mark.shared, pytest.mark.slow]

EUROPE = {"de", "es", "fr", "it", "pt", "pl", "nl", "ro", "cs", "sv"}


def test_europe_keeps_german_french_spanish(tmp_path):
    if not (SHARED_DATA / "web").is_dir():
        pytest.skip("shared data not available")
    out = tmp_path / "out"
    result = run_cli_subprocess("run", "configs/europe.yaml", "--input", str(SHARED_DATA / "web" / "*.warc.gz"),
                                "--output", out, "--workers", "2", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    check_funnel(stats)
    languages = Counter(read_documents(out).column("language").to_pylist())
    assert set(languages) <= EUROPE
    assert languages["de"] > 500 and languages["fr"] > 20 and languages["es"] > 20
