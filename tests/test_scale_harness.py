"""benchmarks/scale.py's generator (issue 20): the planted duplicates are what the ground truth
says they are, so the recall the harness reports at 10^6 documents means something."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter

import pyarrow.parquet as pq
import pytest
from support import REPO

pytestmark = pytest.mark.shared

N, K = 2000, 4


def load_harness():
    spec = importlib.util.spec_from_file_location("scale_harness", REPO / "benchmarks" / "scale.py")
    harness = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = harness  # its dataclasses look their module up while it loads
    spec.loader.exec_module(harness)
    return harness


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    harness = load_harness()
    folder = tmp_path_factory.mktemp("scale")
    manifest = harness.generate(folder, N, K, seed=0, processes=1)
    docs = {}
    shard_of = {}
    for path in sorted((folder / "filtered").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            assert row["id"] not in docs, f"id {row['id']} twice"
            docs[row["id"]] = row
            shard_of[row["id"]] = path.stem
    truth = pq.read_table(folder / "truth.parquet").to_pylist()
    return harness, folder, manifest, docs, shard_of, truth


def test_documents_shards_and_ids(generated):
    harness, folder, manifest, docs, shard_of, _ = generated
    assert sorted(p.name for p in (folder / "filtered").glob("*.parquet")) == \
        [f"{harness.shard_id(s)}.parquet" for s in range(K)]
    assert len(docs) == N == manifest["documents"]  # ids unique: checked while reading
    assert Counter(shard_of.values()) == {harness.shard_id(s): N // K for s in range(K)}
    assert all(d["id"].startswith("<urn:uuid:") and len(d["id"]) == 47 for d in docs.values())
    assert 2000 <= manifest["mean_chars"] <= 3000


def test_planted_kinds_at_their_rates(generated):
    harness, _, manifest, docs, _, truth = generated
    counts = Counter(r["kind"] for r in truth)
    assert counts == {kind: round(rate * N) for kind, rate in harness.RATES.items()} == manifest["planted"]
    copies = [r["copy_id"] for r in truth]
    originals = [r["original_id"] for r in truth]
    assert len(set(copies)) == len(copies) and len(set(originals)) == len(originals)  # every original used once
    assert not set(copies) & set(originals)
    assert set(copies) | set(originals) <= docs.keys()
    assert len({r["original_shard"] for r in truth}) == K and len({r["copy_shard"] for r in truth}) == K


def test_exact_copies_normalise_to_their_original(generated):
    from refinery.text import normalize

    *_, docs, _, truth = generated
    rows = [r for r in truth if r["kind"] == "exact"]
    assert {r["variant"] for r in rows} == {"identical", "whitespace"}
    for r in rows:
        copy, original = docs[r["copy_id"]], docs[r["original_id"]]
        assert normalize(copy["text"]) == normalize(original["text"])
        assert (copy["text"] == original["text"]) == (r["variant"] == "identical")
        assert copy["url"] != original["url"]


def test_near_copies_have_jaccard_about_0_8(generated):
    from refinery.minhash import jaccard

    *_, docs, _, truth = generated
    rows = [r for r in truth if r["kind"] == "near"]
    scores = [jaccard(docs[r["original_id"]]["text"], docs[r["copy_id"]]["text"]) for r in rows]
    assert all(0.7 <= j <= 0.9 for j in scores), sorted(scores)[:3] + sorted(scores)[-3:]
    assert 0.77 <= sum(scores) / len(scores) <= 0.83
    assert [round(j, 4) for j in scores] == [r["jaccard"] for r in rows]


def test_url_recrawls_are_later_captures_of_the_same_url(generated):
    from refinery.stages.url_dedup import normalize_url

    *_, docs, _, truth = generated
    rows = [r for r in truth if r["kind"] == "url"]
    assert {r["variant"] for r in rows} == {"same", "normalised"}
    for r in rows:
        copy, original = docs[r["copy_id"]], docs[r["original_id"]]
        assert normalize_url(copy["url"]) == normalize_url(original["url"])
        assert (copy["url"] == original["url"]) == (r["variant"] == "same")
        assert copy["warc_date"] > original["warc_date"]
        assert copy["text"] != original["text"]
    assert len({normalize_url(d["url"]) for d in docs.values()}) == N - len(rows)


def test_spans_cross_shards_into_later_ones(generated):
    *_, docs, shard_of, truth = generated
    rows = [r for r in truth if r["kind"] == "span"]
    for r in rows:
        copy = docs[r["copy_id"]]["text"]
        span = copy[r["span_start"]:r["span_end"]]
        assert shard_of[r["original_id"]] == r["original_shard"] < r["copy_shard"] == shard_of[r["copy_id"]]
        assert 60 <= len(span.split()) == r["span_tokens"] <= 120
        assert span in docs[r["original_id"]]["text"]


def test_documents_outside_the_planted_copies_share_no_50_token_span_and_few_5_grams(generated):
    """What substring and MinHash dedup would find outside the planted pairs: nothing."""
    from refinery.stages.substring_dedup import find_repeats

    from refinery.minhash import jaccard

    *_, docs, _, truth = generated
    copies = {r["copy_id"] for r in truth if r["kind"] in ("exact", "near", "span")}
    texts = [d["text"] for key, d in docs.items() if key not in copies]
    assert sum(map(bool, find_repeats(texts, 50).cuts)) == 0
    rng = random.Random(0)
    pairs = [rng.sample(texts, 2) for _ in range(300)]
    assert max(jaccard(a, b) for a, b in pairs) < 0.05


def test_same_seed_same_documents(generated, tmp_path):
    harness, folder, *_ = generated
    harness.generate(tmp_path, N, K, seed=0, processes=1)
    for s in (0, K - 1):
        name = f"filtered/{harness.shard_id(s)}.parquet"
        assert pq.read_table(tmp_path / name).equals(pq.read_table(folder / name))
    assert pq.read_table(tmp_path / "truth.parquet").equals(pq.read_table(folder / "truth.parquet"))


def test_removal_check_scores_pairs_from_removed_ids(generated):
    """The datatrove comparison's recall, from removed ids alone: a pair counts once one of its two is gone."""
    harness, *_, docs, _, truth = generated
    ids = list(docs)
    exact = [r for r in truth if r["kind"] == "exact"]
    near = [r for r in truth if r["kind"] == "near"]
    url = next(r for r in truth if r["kind"] == "url")
    removed = {r["copy_id"] for r in exact} | {near[0]["copy_id"], near[0]["original_id"]} | {url["copy_id"]}
    report = harness.removal_check(truth, ids, removed)
    assert report["exact"]["recall"] == 1.0
    assert report["near"]["resolved"] == 0 and report["near"]["both_removed"] == 1
    assert report["near"]["neither_removed"] == len(near) - 1
    assert report["false_positives"]["removed_outside_pairs"] == 1
    assert report["false_positives"]["by_role"] == {"url_copy": 1}


def test_compare_runs_names_the_files_that_differ(tmp_path):
    harness = load_harness()
    for side, text in (("a", b"same"), ("b", b"other")):
        (tmp_path / side / "documents").mkdir(parents=True)
        (tmp_path / side / "dedup" / "clusters.parquet").mkdir(parents=True)
        (tmp_path / side / "documents" / "s0.parquet").write_bytes(b"x")
        (tmp_path / side / "dedup" / "clusters.parquet" / "part.0.parquet").write_bytes(text)
    (tmp_path / "a" / "dedup" / "other.parquet").write_bytes(b"not compared")
    stats = {"per_stage": {"minhash_dedup": {"removed": 1}}}
    result = harness.compare_runs(tmp_path / "a", tmp_path / "b", stats, stats)
    assert not result["identical"] and result["differ"] == ["dedup/clusters.parquet/part.0.parquet"]
    assert result["files_compared"] == 2 and result["per_stage_identical"]
    (tmp_path / "b" / "dedup" / "clusters.parquet" / "part.0.parquet").write_bytes(b"same")
    assert harness.compare_runs(tmp_path / "a", tmp_path / "b", stats, stats)["identical"]
    assert not harness.compare_runs(tmp_path / "a", tmp_path / "b", stats, {"per_stage": {}})["identical"]
