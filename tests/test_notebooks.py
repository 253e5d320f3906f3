"""The notebooks run headless (nbclient) on real `refinery run` outputs.

dedup_stats.ipynb: one run of configs/english.yaml on the embedded sample (which has exact,
MinHash and URL duplicates), and one with `--limit 3`, which has no cluster of any kind: every
cell must print a note there instead of failing. funnel.ipynb: the English run and a
multilingual (Europe) run. mix_and_tokens.ipynb: a small mix with a pipeline source.
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


def execute(run_dir: Path, monkeypatch, notebook: Path = NOTEBOOK):
    """The notebook, executed with REFINERY_RUN=run_dir in the repository root, plus a last cell
    that reports the kernel's sys.prefix (the kernel must be this venv's Python)."""
    nb = nbformat.read(notebook, as_version=4)
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


def images(cell) -> int:
    return len(mime_outputs(cell, "image/png"))


@pytest.fixture(scope="module")
def english_run(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("nb") / "english"
    return run_dir, run_english(run_dir)


def test_funnel_notebook_on_the_english_sample(english_run, monkeypatch):
    run_dir, stats = english_run
    nb = execute(run_dir, monkeypatch, REPO / "notebooks" / "funnel.ipynb")
    assert stdout(cell_with(nb, "RUN = find_run(")).strip() == (
        f"run: {run_dir.resolve()} ({stats['name']}): {stats['input']['records']:,} input records, "
        f"{stats['output']['documents']:,} documents kept")
    chart = cell_with(nb, "REFINEDWEB_FUNNEL")
    assert images(chart) == 1
    (table,) = mime_outputs(chart, "text/html")
    assert all(s["stage"] in table for s in stats["funnel"])
    assert images(cell_with(nb, "share_of_input")) == 1
    languages = cell_with(nb, "languages_seen")
    assert images(languages) == 1 and "one language kept (en)" in stdout(languages)
    assert images(cell_with(nb, "lengths_out")) == 1
    samples = cell_with(nb, "dropped_dir")
    reasons = {(s["stage"], r) for s in stats["funnel"] for r, n in s["dropped"].items() if n}
    assert len([h for h in mime_outputs(samples, "text/html") if "<details>" in h]) == len(reasons)


def test_funnel_notebook_draws_a_per_language_funnel(tmp_path, monkeypatch):
    run_dir = tmp_path / "europe"
    result = run_cli_inprocess("run", REPO / "configs" / "europe.yaml", "--output", run_dir, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr[-3000:]
    nb = execute(run_dir, monkeypatch, REPO / "notebooks" / "funnel.ipynb")
    languages = cell_with(nb, "languages_seen")
    assert images(languages) == 2  # identified/kept, and the per-language funnel
    kept = [lang for lang, n in json.loads((run_dir / "stats.json").read_text())["languages"]["languages_kept"].items() if n]
    (table,) = mime_outputs(languages, "text/html")
    assert all(f">{lang}</th>" in table for lang in kept)


def test_mix_and_tokens_notebook_on_a_small_mix(tmp_path, monkeypatch):
    from test_reliability import small_web_mix

    run_dir = tmp_path / "mix"
    result = run_cli_inprocess("run", small_web_mix(tmp_path / "data"), "--output", run_dir, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((run_dir / "tokens" / "manifest.json").read_text())
    nb = execute(run_dir, monkeypatch, REPO / "notebooks" / "mix_and_tokens.ipynb")
    assert f"{manifest['tokens']:,} tokens" in stdout(cell_with(nb, "RUN = find_run("))
    shares = cell_with(nb, "target_share")
    assert images(shares) == 1 and all(name in mime_outputs(shares, "text/html")[0] for name in manifest["sources"])
    per_file = cell_with(nb, "per_file")
    assert images(per_file) == 1 and f"{len(manifest['files'])} files" in stdout(per_file)
    shard = cell_with(nb, "decodes to its Parquet text")
    first = manifest["files"][0]
    assert stdout(shard).startswith(f"{first['name']}: {first['documents']:,} documents, {first['tokens']:,} tokens")
    assert images(cell_with(nb, "tokens per document")) == 1
    heldout = cell_with(nb, "heldout_fraction")
    assert "web: " in stdout(heldout) and mime_outputs(heldout, "text/html")
