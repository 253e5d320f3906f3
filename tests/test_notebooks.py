"""notebooks/dedup_stats.ipynb runs headless (nbclient) on real `refinery run` outputs.

One run of configs/english.yaml on the embedded sample (which has exact, MinHash and URL
duplicates), and one with `--limit 3`, which has no cluster of any kind: every cell must
print a note there instead of failing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from support import ENGLISH_CONFIG, REPO, run_cli_inprocess

pytestmark = pytest.mark.slow

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = REPO / "notebooks" / "dedup_stats.ipynb"
KERNEL_CHECK = "import sys; print('kernel prefix:', sys.prefix)"


def run_english(out: Path, *extra) -> dict:
    result = run_cli_inprocess("run", ENGLISH_CONFIG, "--output", out, "--scheduler", "sync", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "stats.json").read_text())


def execute(run_dir: Path, monkeypatch):
    """The notebook, executed with REFINERY_RUN=run_dir in the repository root, plus a last cell
    that reports the kernel's sys.prefix (the kernel must be this venv's Python)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in nb.cells if cell.cell_type == "code"), "store the notebook without outputs"
    nb.cells.append(nbformat.v4.new_code_cell(KERNEL_CHECK))
    monkeypatch.setenv("REFINERY_RUN", str(run_dir))  # the kernel inherits os.environ
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert stdout(nb.cells[-1]).strip() == f"kernel prefix: {sys.prefix}"
    return nb


def cell_with(nb, marker: str):
    """The one code cell whose source contains `marker`."""
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, (marker, len(cells))
    return cells[0]


def stdout(cell) -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def mime_outputs(cell, mime: str) -> list[str]:
    return [o.data[mime] for o in cell.outputs
            if o.output_type in ("display_data", "execute_result") and mime in o.data]


def test_dedup_notebook_on_english_sample(tmp_path, monkeypatch):
    run_dir = tmp_path / "english"
    stats = run_english(run_dir)
    per_stage = stats["dedup"]["per_stage"]
    assert per_stage["minhash_dedup"]["removed"] > 0, "the embedded sample should have near-duplicates"

    nb = execute(run_dir, monkeypatch)

    assert stdout(cell_with(nb, "RUN = find_run(")).strip() == f"run: {run_dir.resolve()}"

    funnel = cell_with(nb, "highlight_dedup")
    (table,) = mime_outputs(funnel, "text/html")
    assert "minhash_dedup" in table and "background-color: #fff3cd" in table

    kinds = cell_with(nb, "share_of_stage_input")
    removed = sum(s["removed"] for s in per_stage.values())
    assert f"dedup removed {removed} documents in all" in stdout(kinds)

    histogram = cell_with(nb, "size_bin")
    assert len(mime_outputs(histogram, "image/png")) == 1
    assert "note:" not in stdout(histogram)

    domains = cell_with(nb, "domains.parquet")
    assert len(mime_outputs(domains, "image/png")) == 1
    top_domain = stats["dedup"]["top_domains"][0]["domain"]
    assert any(top_domain in html for html in mime_outputs(domains, "text/html"))

    languages = cell_with(nb, "per_language")
    assert len(mime_outputs(languages, "image/png")) == 1

    pairs = cell_with(nb, "word_diff")
    text = stdout(pairs)
    shown = min(3, per_stage["minhash_dedup"]["removed"])
    assert [line.split(":")[0] for line in text.splitlines() if line.startswith("pair ")] == \
        [f"pair {n}" for n in range(1, shown + 1)], text
    assert "jaccard_to_kept=0." in text  # english.yaml computes jaccard_to_kept
    assert f"{shown} near-duplicate pair(s) shown, of {per_stage['minhash_dedup']['removed']} documents" in text
    diffs = mime_outputs(pairs, "text/html")
    assert len(diffs) == shown
    assert all("<ins" in html or "<del" in html for html in diffs)


def test_dedup_notebook_without_clusters(tmp_path, monkeypatch):
    run_dir = tmp_path / "tiny"
    stats = run_english(run_dir, "--limit", "3")  # 3 records per shard: no duplicates at all
    assert all(s.get("clusters", 0) == 0 and s["removed"] == 0 for s in stats["dedup"]["per_stage"].values())

    nb = execute(run_dir, monkeypatch)

    histogram = cell_with(nb, "size_bin")
    assert "note: no clusters in this run" in stdout(histogram)
    assert not mime_outputs(histogram, "image/png")
    assert "note: no domain lost a document" in stdout(cell_with(nb, "domains.parquet"))
    assert "note: minhash_dedup removed no document" in stdout(cell_with(nb, "word_diff"))
    # the syndication paragraph of article 2 is in both shards: cut once even in this tiny run
    spans = cell_with(nb, "substring_spans")
    assert "documents_touched: 1," in stdout(spans) and len(mime_outputs(spans, "text/html")) == 1
