"""`refinery report` and `refinery inspect` on real run outputs, and the report in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import ENGLISH_CONFIG, REPO, run_cli_inprocess

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("REFINERY_TEST_ARTIFACTS", REPO / ".artifacts"))


@pytest.fixture(scope="module")
def english_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "english"
    result = run_cli_inprocess("run", ENGLISH_CONFIG, "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report:    {out / 'report.html'}" in result.stdout  # `refinery run` writes it and says where
    return out


def plain(html: str) -> str:
    """The page's text without tags, for checking figures."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_report_shows_the_runs_own_numbers(english_run):
    html = (english_run / "report.html").read_text()
    stats = json.loads((english_run / "stats.json").read_text())
    for anchor in ("funnel", "languages", "dedup", "tokens", "lengths", "samples"):
        assert f"<section id='{anchor}'>" in html, anchor
    text = plain(html)
    for row in stats["funnel"]:  # every stage's row in the funnel table
        assert f"{row['stage']} {row['docs_in']:,} {row['docs_out']:,} {row['kept_of_input']:.2%}" in text
        for reason, count in row["dropped"].items():
            assert f"{reason} {count:,}" in text
    assert f"{stats['input']['records']:,} input records" in text and f"{stats['output']['documents']:,} documents" in text
    assert "RW-Raw 47.51%" in text and "RefinedWeb 11.67%" in text
    for stage, summary in stats["dedup"]["per_stage"].items():
        assert stage in text
    for domain in stats["dedup"]["top_domains"]:
        assert f"{domain['domain']} {domain['documents']:,} {domain['removed']:,}" in text
    documents = sum(pq.read_metadata(p).num_rows for p in (english_run / "documents").glob("*.parquet"))
    assert f"in {documents:,} documents" in text
    for shard in stats["shards"]:  # the size the run counted as it wrote equals a scan of its output
        texts = pq.read_table(english_run / "documents" / f"{shard['shard_id']}.parquet").column("text").to_pylist()
        assert (shard["characters"], shard["words"]) == (sum(map(len, texts)), sum(len(t.split()) for t in texts))
        assert f"{shard['shard_id']} {shard['records']:,} {shard['documents']:,} {shard['characters']:,} " \
               f"{shard['words']:,}" in text
    assert html.count("<svg") >= 6  # funnel, languages, removed, cluster sizes, tokens, lengths
    assert "before filtering (after language_id)" in html
    # self-contained: no script, no external resource of any kind
    assert "<script" not in html and not re.search(r"\b(src|href)=['\"](?!#)", html.replace("xlink:href='#", ""))


def test_samples_are_escaped(english_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(english_run, out)
    evil = {"id": "evil-1", "url": "https://x.example/\"><img src=x onerror=alert(1)>", "stage": "gopher_quality",
            "reason": "a_hostile_reason", "language": "en", "text": "<script>alert('pwned')</script> & more",
            "kept_id": None}
    pq.write_table(pa.Table.from_pylist([evil]), out / "dropped" / "gopher_quality" / "zz-evil.parquet")
    assert run_cli_inprocess("report", out).returncode == 0
    html = (out / "report.html").read_text()
    assert "a_hostile_reason" in html
    assert "<script>alert" not in html and "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &amp; more" in html
    assert "<img src=x" not in html and "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_multilingual_run_has_a_per_language_funnel(tmp_path):
    out = tmp_path / "europe"
    result = run_cli_inprocess("run", REPO / "configs" / "europe.yaml", "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr[-3000:]
    html = (out / "report.html").read_text()
    stats = json.loads((out / "stats.json").read_text())
    kept = [lang for lang, n in stats["languages"]["languages_kept"].items() if n]
    assert len(kept) > 1
    assert "<h3>Per-language funnel</h3>" in html
    last = stats["funnel"][-1]["languages_out"]
    table = html[html.index("<h3>Per-language funnel</h3>"):]
    assert all(f"<th>{lang}</th>" in table for lang in kept)
    assert f"<td>{stats['funnel'][-1]['stage']}</td>" + "".join(f"<td>{last.get(lang, 0):,}</td>"
                                                                for lang in sorted(kept)) in table


def test_a_mix_report_shows_shares_and_tokens(tmp_path):
    from test_mix import small_mix

    out = tmp_path / "mix"
    result = run_cli_inprocess("run", small_mix(tmp_path), "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr
    html = (out / "report.html").read_text()
    text = plain(html)
    stats = json.loads((out / "stats.json").read_text())
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    for name, source in stats["sources"].items():
        assert f"{name} {source['target_share']:.1%} {source['achieved_share']:.2%} {source['tokens']:,}" in text
    for entry in manifest["files"]:
        assert f"{entry['name']} {entry['documents']:,} {entry['tokens']:,}" in text
    assert "<section id='mix'>" in html and html.count("<svg") >= 2


def test_report_and_inspect_name_a_bad_output(tmp_path):
    result = run_cli_inprocess("report", tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("refinery: error: OUTPUT: no stats.json")
    result = run_cli_inprocess("inspect", tmp_path)
    assert result.returncode == 2 and "OUTPUT:" in result.stderr


def test_inspect_prints_matching_documents(english_run):
    result = run_cli_inprocess("inspect", english_run, "--stage", "gopher_quality", "--reason",
                               "too_many_bullet_lines", "--sample", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("── dropped by gopher_quality: too_many_bullet_lines https://")
    assert lines[0].count("── ") == 1 and "- " in result.stdout  # the bullet lines themselves
    kept = run_cli_inprocess("inspect", english_run, "--stage", "kept", "--grep", r"article|the", "--sample", "3")
    assert kept.returncode == 0 and kept.stdout.count("── kept ") == 3
    dupes = run_cli_inprocess("inspect", english_run, "--reason", "exact_duplicate", "--sample", "50")
    stats = json.loads((english_run / "stats.json").read_text())
    exact = next(s for s in stats["funnel"] if s["stage"] == "exact_dedup")["dropped"]["exact_duplicate"]
    assert dupes.stdout.count("── dropped by exact_dedup: exact_duplicate") == exact  # all of them (fewer than 50)
    assert dupes.stdout.count("(duplicate of ") == exact
    none = run_cli_inprocess("inspect", english_run, "--grep", "no such words anywhere xyzzy")
    assert none.returncode == 0 and none.stdout.strip() == "no matching documents"
    bad = run_cli_inprocess("inspect", english_run, "--stage", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith("refinery: config error: --stage: no documents for 'nope'")
    bad = run_cli_inprocess("inspect", english_run, "--grep", "(")
    assert bad.returncode == 2 and "--grep" in bad.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_report_renders_in_headless_chromium(english_run):
    """No console message of any kind (the page has no script; any message is an error), every chart
    drawn, and a screenshot kept as a test artifact."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-logging=stderr", "--log-level=0"]
    url = (english_run / "report.html").as_uri()
    profile = english_run.parent / "chromium-profile"
    dom = subprocess.run([*flags, f"--user-data-dir={profile}", "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console
    rendered = dom.stdout
    assert rendered.count("<svg") >= 6 and rendered.count("<path") > 50  # the charts are in the rendered DOM
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    taken = subprocess.run([*flags, f"--user-data-dir={profile}", "--window-size=1200,2400",
                            f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
    assert taken.returncode == 0 and shot.stat().st_size > 50_000, taken.stderr[-2000:]
    assert not [line for line in taken.stderr.splitlines() if ":CONSOLE" in line]
