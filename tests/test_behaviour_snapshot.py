"""The engine refactor changed no output: the token shards and manifest of the Falcon-180B mix hash
exactly as recorded in tests/snapshots/behaviour.json (taken before the refactor). The English
run's documents, clusters and funnel are checked against the same file in test_acceptance_web.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from support import REPO, SHARED_DATA, run_cli_subprocess

SNAPSHOT_PATH = Path(__file__).parent / "snapshots" / "behaviour.json"
SNAPSHOT = json.loads(SNAPSHOT_PATH.read_text())

pytestmark = [pytest.mark.shared, pytest.mark.slow]


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def funnel_without_times(stats: dict) -> list[dict]:
    return [{k: v for k, v in stage.items() if k != "seconds"} for stage in stats["funnel"]]


def test_falcon180b_mix_tokens_are_unchanged(tmp_path):
    if not (SHARED_DATA / "curated").is_dir():
        pytest.skip(f"shared data not available: {SHARED_DATA / 'curated'}")
    out = tmp_path / "mix"
    result = run_cli_subprocess("run", str(REPO / "configs" / "falcon180b_mix.yaml"), "--output", out,
                                "--workers", "2", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    tokens = {k: v for k, v in tree_hashes(out / "tokens").items() if not k.startswith("_work")}
    assert tokens == SNAPSHOT["tokens"]
