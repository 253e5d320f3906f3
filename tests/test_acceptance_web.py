"""Acceptance: the English pipeline on the real web shards in ../shared/data/web (1,778 records).

One run with 2 workers (about a minute on 2 cores) is shared by every test of this module.
Extraction quality is scored with trafilatura's evaluation set, whose pages are in the shards
under the same URLs: `with` snippets must be in the main text, `without` snippets must not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from support import SHARED_DATA, check_funnel, read_documents, run_cli_subprocess

pytestmark = [pytest.mark.shared, pytest.mark.slow]

WEB_RECORDS = 1778
MENU_LINE = re.compile(
    r"^(home|about|about us|contact|contact us|log ?in|sign ?in|sign ?up|register|search|menu|privacy|"
    r"privacy policy|terms|terms of use|imprint|impressum|faq|help|blog|news|subscribe|newsletter|"
    r"skip to (main )?content|toggle navigation|next|previous|share|tweet)$", re.IGNORECASE)
KNOWN_PAGES = [
    "https://harpers.org/a-letter-on-justice-and-open-debate/",
    "https://www.kxan.com/news/texas/voters-pass-increase-for-retired-public-education-workers-but-future-shortfalls-likely-to-emerge/",
    "https://threatpost.com/android-ransomware-spreads-via-sex-simulation-game-links-on-reddit-sms/146774/",
]


@pytest.fixture(scope="module")
def web_run(tmp_path_factory) -> dict:
    shards = sorted((SHARED_DATA / "web").glob("*.warc.gz"))
    if not shards:
        pytest.skip(f"shared data not available: {SHARED_DATA / 'web'}")
    out = tmp_path_factory.mktemp("web") / "out"
    result = run_cli_subprocess("run", "configs/english.yaml", "--input", str(SHARED_DATA / "web" / "*.warc.gz"),
                                "--output", out, "--workers", "2", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    docs = read_documents(out).to_pylist()
    import pyarrow.dataset as ds

    filtered = ds.dataset(out / "filtered").to_table().to_pylist()  # before dedup
    return {"out": out, "stats": stats, "docs": docs, "filtered": filtered, "result": result}


@pytest.fixture(scope="module")
def evaldata() -> dict:
    path = SHARED_DATA / "extraction" / "trafilatura-evaldata.json"
    if not path.is_file():
        pytest.skip(f"shared data not available: {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_record_is_accounted_for(web_run):
    stats = web_run["stats"]
    funnel = check_funnel(stats)
    assert funnel[0]["docs_in"] == WEB_RECORDS
    assert funnel[0]["docs_out"] == WEB_RECORDS  # every record is a 200 text/html response
    assert stats["input"] == {"shards": 4, "records": WEB_RECORDS}
    assert f"done: {WEB_RECORDS} records in 4 shards" in web_run["result"].stdout
    extract = next(s for s in funnel if s["stage"] == "extract")
    assert extract["docs_out"] >= 0.95 * extract["docs_in"]  # real pages nearly all have text


def test_languages_seen(web_run):
    from collections import Counter

    prefilter = next(row for row in web_run["stats"]["funnel"] if row["stage"] == "language_prefilter")
    # pages plainly in another language are counted by the prefilter, the rest by language_id
    seen = Counter(web_run["stats"]["languages"]["languages_seen"]) + Counter(prefilter["extra"]["languages_skipped"])
    # the pages are mostly German and English, with Spanish, French, Polish, Chinese and others
    assert seen["de"] > seen["en"] > seen.get("es", 0) > 0
    assert {"fr", "pl", "zh"} <= set(seen)
    lid = next(row for row in web_run["stats"]["funnel"] if row["stage"] == "language_id")
    assert web_run["stats"]["languages"]["languages_kept"] == {"en": lid["docs_out"]}


def test_documents_are_english(web_run):
    docs = web_run["docs"]
    assert len(docs) == web_run["stats"]["output"]["documents"]
    assert len(docs) >= 100  # about 360 English pages with the extract + language_id chain
    assert all(d["language"] == "en" and d["language_score"] >= 0.65 for d in docs)
    assert len({d["id"] for d in docs}) == len(docs)
    assert all(d["text"].strip() for d in docs)


def test_no_document_is_only_navigation(web_run):
    for d in web_run["docs"]:
        lines = [line.strip() for line in d["text"].splitlines() if line.strip()]
        menu = [line for line in lines if MENU_LINE.match(line)]
        assert len(menu) < len(lines), (d["url"], lines[:10])
        assert len(menu) <= 3, (d["url"], menu)
    short = [d for d in web_run["docs"] if len(d["text"]) < 100]
    assert len(short) <= 0.02 * len(web_run["docs"]), [d["text"] for d in short]


def score(doc: dict, entry: dict) -> tuple[int, int]:
    found = sum(snippet in doc["text"] for snippet in entry["with"])
    avoided = sum(snippet not in doc["text"] for snippet in entry["without"])
    return found, avoided


def test_extraction_quality_on_the_evaluation_pages(web_run, evaldata):
    found = wanted = avoided = unwanted = pages = 0
    for doc in web_run["filtered"]:  # before dedup, which removes copies of the same page
        entry = evaldata.get(doc["url"])
        if not entry:
            continue
        pages += 1
        f, a = score(doc, entry)
        found, wanted = found + f, wanted + len(entry["with"])
        avoided, unwanted = avoided + a, unwanted + len(entry["without"])
    assert pages >= 150
    assert found / wanted >= 0.85, f"main-text snippets found: {found}/{wanted}"
    assert avoided / unwanted >= 0.90, f"boilerplate snippets avoided: {avoided}/{unwanted}"


@pytest.mark.parametrize("url", KNOWN_PAGES)
def test_known_pages(web_run, evaldata, url):
    entry = evaldata[url]
    docs = [d for d in web_run["docs"] if d["url"] == url]
    assert docs, f"{url} not among the English documents"
    for doc in docs:
        for snippet in entry["with"]:
            assert snippet in doc["text"], snippet
        for snippet in entry["without"]:
            assert snippet not in doc["text"], snippet


MDR_ORDER = ["warc_reader", "url_filter", "language_prefilter", "extract", "language_id", "gopher_repetition", "gopher_quality",
             "line_filter", "exact_dedup", "minhash_dedup", "url_dedup", "substring_dedup"]


def test_full_mdr_order_and_funnel_shares(web_run):
    funnel = web_run["stats"]["funnel"]
    assert [row["stage"] for row in funnel] == MDR_ORDER
    shares = [row["kept_of_input"] for row in funnel]
    assert shares == sorted(shares, reverse=True)
    for row in funnel:
        assert row["kept_of_input"] == pytest.approx(row["docs_out"] / WEB_RECORDS, abs=1e-6)
    by_stage = {row["stage"]: row for row in funnel}
    assert sum(by_stage["gopher_quality"]["dropped"].values()) > 0
    assert sum(by_stage["gopher_repetition"]["dropped"].values()) > 0


def test_dropped_samples_explain_removals(web_run):
    import pyarrow.dataset as ds

    out = web_run["out"]
    funnel = {row["stage"]: row for row in web_run["stats"]["funnel"]}
    for stage in ("url_filter", "language_id", "gopher_repetition", "gopher_quality"):
        table = ds.dataset(out / "dropped" / stage).to_table().to_pylist()
        assert table, stage
        reasons = {row["reason"] for row in table}
        assert reasons <= set(funnel[stage]["dropped"]), stage
        assert all(row["stage"] == stage and row["url"] for row in table)
        if stage != "url_filter":
            assert all(row["text"] for row in table)


def test_dedup_leaves_no_duplicate_text_or_url(web_run):
    """The shards hold 561 byte-identical copies of pages; after filtering, what is left of them
    goes in exact_dedup, and no two documents share a normalised text or a normalised URL."""
    from refinery.minhash import normalize
    from refinery.stages.url_dedup import normalize_url

    funnel = {row["stage"]: row for row in web_run["stats"]["funnel"]}
    exact = funnel["exact_dedup"]
    assert exact["dropped"]["exact_duplicate"] >= 80
    docs = web_run["docs"]
    texts = [normalize(d["text"]) for d in docs]
    assert len(texts) == len(set(texts))
    urls = [normalize_url(d["url"]) for d in docs]
    assert len(urls) == len(set(urls))
    summary = web_run["stats"]["dedup"]
    removed = sum(sum(row["dropped"].values()) for row in funnel.values() if row["stage"].endswith("_dedup"))
    assert sum(s["removed"] for s in summary["per_stage"].values()) == removed
    assert summary["per_language"]["en"]["removed"] == removed


def test_clusters_parquet_on_the_web_shards(web_run):
    import pandas as pd

    clusters = pd.read_parquet(web_run["out"] / "dedup" / "clusters.parquet")
    assert (clusters.groupby("cluster_id").size() >= 2).all()
    assert (clusters.groupby("cluster_id")["kept"].sum() == 1).all()
    kept_ids = {d["id"] for d in web_run["docs"]}
    assert not set(clusters.loc[~clusters["kept"], "id"]) & kept_ids  # every loser is gone


def test_language_prefilter_changes_nothing_but_the_time(web_run, tmp_path):
    """configs/english.yaml skips trafilatura for pages plainly in another language; the documents
    must be exactly those of the same config without that stage."""
    import yaml

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "english.yaml").read_text())
    raw["stages"] = [entry for entry in raw["stages"] if next(iter(entry)) != "language_prefilter"]
    config = tmp_path / "no-prefilter.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    result = run_cli_subprocess("run", config, "--input", str(SHARED_DATA / "web" / "*.warc.gz"),
                                "--output", out, "--workers", "2", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    key = lambda d: d["id"]  # noqa: E731
    assert sorted(read_documents(out).to_pylist(), key=key) == sorted(web_run["docs"], key=key)
    funnel = {row["stage"]: row for row in web_run["stats"]["funnel"]}
    assert funnel["language_prefilter"]["dropped"]["other_language"] > 1000  # of 1,767 pages


def test_substring_dedup_cuts_repeated_spans(web_run):
    """After the whole-document stages, two repeats of 50+ tokens are left in the shards: Belfast
    Live's WhatsApp footer, twice on one page, and a quote that two corkbeo.ie articles share.
    Both are cut after their first occurrence, and no 50-token window repeats afterwards."""
    import pyarrow.dataset as ds

    from refinery.stages.substring_dedup import find_repeats

    spans = ds.dataset(web_run["out"] / "dedup" / "substring_spans").to_table().to_pylist()
    assert any("Join our Belfast Live breaking news service on WhatsApp" in s["text"] for s in spans)
    assert any("corkbeo.ie" in s["url"] and s["tokens"] >= 100 for s in spans)
    assert sum(find_repeats([d["text"] for d in web_run["docs"]]).cut_tokens) == 0
    stage = web_run["stats"]["dedup"]["per_stage"]["substring_dedup"]
    assert stage["documents_touched"] == 2 and stage["bytes_cut"] > 800


def test_documents_clusters_and_funnel_match_the_snapshot(web_run):
    """Byte-identical to the run recorded before the engine refactor (tests/snapshots/behaviour.json)."""
    from test_behaviour_snapshot import SNAPSHOT, funnel_without_times, tree_hashes

    out = web_run["out"]
    assert tree_hashes(out / "documents") == SNAPSHOT["documents"]
    assert tree_hashes(out / "dedup" / "clusters.parquet") == SNAPSHOT["clusters"]
    assert funnel_without_times(web_run["stats"]) == SNAPSHOT["funnel"]
