"""Corpus-wide dedup (refinery/dedup.py): URL, exact and MinHash stages over hand-made shards,
the planted near-duplicates of ../shared, config errors and resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import dask
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from refinery.config import ConfigError, parse_config
from refinery.pipeline.run import deduplicate
from refinery.io import InputShard
from refinery.minhash import jaccard
from refinery.pipeline.chain import DOCUMENT_SCHEMA
from refinery.pipeline.keys import dedup_paths, write_keys
from refinery.stages.url_dedup import normalize_url
from support import ENGLISH_CONFIG, run_cli_inprocess, shared_path


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set({"scheduler": "sync", "dataframe.shuffle.method": "tasks"}):
        yield


def _config(*dedup: dict):
    return parse_config({"name": "t", "stages": [{"language_id": {}}], "dedup": list(dedup)})


def _doc(doc_id: str, text: str, url: str | None = None, date: str = "2024-01-01T00:00:00Z") -> dict:
    return {"id": doc_id, "url": url or f"https://example.org/{doc_id}", "warc_date": date, "source": "web",
            "language": "en", "language_score": 0.9, "text": text}


def _run(tmp_path: Path, shards: list[list[dict]], *dedup: dict) -> tuple[dict, pd.DataFrame, list[str]]:
    """Writes the shards as filtered/ output, deduplicates, returns (summary, clusters, kept ids)."""
    config = _config(*dedup)
    inputs = [InputShard(path=f"mem-{n}", shard_id=f"s{n:03d}") for n in range(len(shards))]
    for shard, docs in zip(inputs, shards):
        path = tmp_path / "filtered" / f"{shard.shard_id}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(docs, schema=DOCUMENT_SCHEMA), path)
    applied, summary = deduplicate(config, inputs, str(tmp_path))
    kept = [i for f in sorted((tmp_path / "documents").glob("*.parquet")) for i in pq.read_table(f)["id"].to_pylist()]
    folder = tmp_path / "dedup" / "clusters.parquet"
    clusters = pd.read_parquet(folder) if any(folder.glob("*.parquet")) else pd.DataFrame()
    for result in applied:
        for stage in result.funnel:
            assert stage["docs_in"] == stage["docs_out"] + sum(stage["dropped"].values())
    return summary, clusters, kept


def _prose(seed: int, words: int = 120) -> str:
    import random

    rng = random.Random(seed)
    vocab = [f"w{n}" for n in range(5000)]
    return " ".join(rng.choice(vocab) for _ in range(words))


# --- URL normalisation --------------------------------------------------------------------------

@pytest.mark.parametrize("url, expected", [
    ("HTTPS://www.Example.com:443/a/?b=2&utm_source=x&a=1#top", "example.com/a?a=1&b=2"),
    ("http://example.com/a", "example.com/a"),
    ("https://example.com:8080/a", "example.com:8080/a"),
    ("https://example.com/a?fbclid=1", "example.com/a"),
    ("https://example.com/A", "example.com/A"),  # paths are case-sensitive
    ("https://[::1/broken", "https://[::1/broken"),  # unparsable: compared as written
])
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


# --- the three stages ---------------------------------------------------------------------------

def test_url_dedup_keeps_the_newest_capture(tmp_path):
    shards = [
        [_doc("a", _prose(1), "https://example.org/page", "2024-01-01T00:00:00Z")],
        [_doc("b", _prose(2), "http://www.example.org/page/", "2024-03-01T00:00:00Z"),
         _doc("c", _prose(3), "https://example.org/other", "2024-02-01T00:00:00Z")],
    ]
    summary, clusters, kept = _run(tmp_path / "newest", shards, {"url_dedup": {}})
    assert sorted(kept) == ["b", "c"]
    assert summary["per_stage"]["url_dedup"]["removed"] == 1
    row = clusters.set_index("id").loc["a"]
    assert row["kept_id"] == "b" and not row["kept"] and row["cluster_id"] == "url_dedup/b"
    _, _, kept = _run(tmp_path / "oldest", shards, {"url_dedup": {"keep": "oldest"}})
    assert sorted(kept) == ["a", "c"]


def _kept_texts(tmp_path: Path) -> list[str]:
    return sorted(t for f in sorted((tmp_path / "documents").glob("*.parquet")) for t in pq.read_table(f)["text"].to_pylist())


def test_a_unique_page_that_shares_a_web_id_with_a_duplicate_is_kept(tmp_path):
    """WARC-Record-IDs are data, not keys: a copy dropped under id "b" does not take the other "b" with it."""
    copy, unique = _prose(1), _prose(2)
    shards = [[_doc("a", copy), _doc("b", copy)], [_doc("b", unique)]]
    summary, clusters, kept = _run(tmp_path, shards, {"exact_dedup": {}}, {"minhash_dedup": {}})
    assert _kept_texts(tmp_path) == sorted([copy, unique]) and sorted(kept) == ["a", "b"]
    assert summary["per_stage"]["exact_dedup"]["removed"] == 1
    assert clusters["key"].is_unique


def test_one_warc_given_under_two_names_is_deduplicated(tmp_path):
    """The same records (same ids, same texts, same URLs) in two shards: one copy of each stays."""
    docs = [_doc(f"rec-{n}", _prose(n)) for n in range(3)]
    summary, _, kept = _run(tmp_path, [docs, [dict(d) for d in docs]], {"exact_dedup": {}}, {"minhash_dedup": {}},
                            {"url_dedup": {}})
    assert sorted(kept) == ["rec-0", "rec-1", "rec-2"]
    assert summary["per_stage"]["exact_dedup"]["removed"] == 3


def test_exact_dedup_ignores_case_punctuation_and_spacing(tmp_path):
    text = _prose(5)
    shards = [[_doc("m", text), _doc("z", text.upper() + " !!")], [_doc("b", "  " + text.replace(" ", "   ")),
                                                                 _doc("q", _prose(6))]]
    summary, clusters, kept = _run(tmp_path, shards, {"exact_dedup": {}})
    assert sorted(kept) == ["b", "q"]  # the lowest id of the three copies
    assert summary["per_stage"]["exact_dedup"]["cluster_sizes"] == {"3": 1}
    losers = clusters[~clusters["kept"]]
    assert set(losers["id"]) == {"m", "z"} and (losers["jaccard_to_kept"] == 1.0).all()


def test_minhash_links_near_duplicates_across_shards_transitively(tmp_path):
    base = _prose(7, 300).split()
    a = " ".join(base)
    b = " ".join(base[:290] + ["edit"] * 10)  # J(a, b) about 0.9
    c = " ".join(base[:280] + ["other"] * 20)  # J(a, c) about 0.86
    shards = [[_doc("d3", a), _doc("x", _prose(8))], [_doc("d1", c)], [_doc("d2", b), _doc("y", _prose(9))]]
    summary, clusters, kept = _run(tmp_path, shards, {"minhash_dedup": {}})
    assert sorted(kept) == ["d1", "x", "y"]
    members = clusters.set_index("id")
    assert set(members.index) == {"d1", "d2", "d3"} and set(members["kept_id"]) == {"d1"}
    assert members.loc["d2", "jaccard_to_kept"] == pytest.approx(jaccard(b, c))
    assert summary["per_stage"]["minhash_dedup"] == {
        "reason": "minhash_duplicate", "clusters": 1, "documents_in_clusters": 3, "removed": 2,
        "cluster_sizes": {"3": 1}}


def test_verification_rejects_candidates_below_the_threshold(tmp_path):
    base = _prose(11, 300).split()
    a, b = " ".join(base), " ".join(base[:285] + ["edit"] * 15)
    shards = [[_doc("a", a), _doc("b", b)]]
    _, _, kept = _run(tmp_path / "loose", shards, {"minhash_dedup": {"verify": True, "verify_threshold": 0.5}})
    assert kept == ["a"]
    _, clusters, kept = _run(tmp_path / "strict", shards, {"minhash_dedup": {"verify": True, "verify_threshold": 0.99}})
    assert sorted(kept) == ["a", "b"] and clusters.empty


def test_stages_run_in_order_on_what_the_previous_kept(tmp_path):
    text = _prose(12)
    near = " ".join(text.split()[:-3] + ["x", "y", "z"])
    shards = [[_doc("a", text, "https://e.org/1", "2024-01-01"), _doc("b", text, "https://e.org/2"),
               _doc("c", near, "https://e.org/1", "2024-05-01")]]
    summary, _, kept = _run(tmp_path, shards, {"exact_dedup": {}}, {"minhash_dedup": {}}, {"url_dedup": {}})
    # b is a's exact copy; c is a near copy of a, so MinHash drops it before the URL stage could
    assert kept == ["a"]
    assert [summary["per_stage"][s]["removed"] for s in ("exact_dedup", "minhash_dedup", "url_dedup")] == [1, 1, 0]


def test_results_do_not_depend_on_how_documents_are_sharded(tmp_path):
    base = [_prose(n, 200) for n in range(12)]
    docs = [_doc(f"d{n:02d}", t) for n, t in enumerate(base)]
    docs += [_doc(f"e{n:02d}", " ".join(t.split()[:-4] + ["q"] * 4)) for n, t in enumerate(base[:6])]
    docs += [_doc(f"f{n:02d}", t.upper()) for n, t in enumerate(base[6:])]
    stages = ({"exact_dedup": {}}, {"minhash_dedup": {}})
    _, one, kept_one = _run(tmp_path / "one", [docs], *stages)
    _, five, kept_five = _run(tmp_path / "five", [docs[n::5] for n in range(5)], *stages)
    assert sorted(kept_one) == sorted(kept_five) == [f"d{n:02d}" for n in range(12)]
    columns = ["cluster_id", "id", "kept", "kept_id"]
    assert one[columns].sort_values("id").reset_index(drop=True).equals(five[columns].sort_values("id").reset_index(drop=True))


def test_shorter_band_keys_find_the_same_clusters_and_take_less_disk(tmp_path):
    base = [_prose(n, 200) for n in range(12)]
    docs = [_doc(f"d{n:02d}", t) for n, t in enumerate(base)]
    docs += [_doc(f"e{n:02d}", " ".join(t.split()[:-4] + ["q"] * 4)) for n, t in enumerate(base[:6])]
    results, sizes = [], []
    for key_bytes in (8, 4):
        folder = tmp_path / str(key_bytes)
        _, clusters, kept = _run(folder, [docs[:9], docs[9:]], {"minhash_dedup": {"band_key_bytes": key_bytes}})
        results.append((sorted(kept), clusters[["id", "kept_id"]].sort_values("id").values.tolist()))
        assert not (folder / "dedup" / "bands").exists()  # consumed by the resolution
        shard = InputShard(path="mem-0", shard_id="s000")
        write_keys(shard, _config({"minhash_dedup": {"band_key_bytes": key_bytes}}), str(folder))
        sizes.append(dedup_paths(folder, shard)["bands"].stat().st_size)
    assert results[0] == results[1] and len(results[0][1]) == 12
    assert sizes == [32 + 9 * 450 * 8, 32 + 9 * 450 * 4]


def test_partitions_follow_the_documents_not_the_shards():
    from refinery.engine.resolve import partitions

    assert partitions([2, 2, 2, 2, 9], 5) == [(0, 1), (2, 3), (4,)]
    assert partitions([1] * 500, 200_000) == [tuple(range(500))]
    assert partitions([], 5) == []


def test_many_shards(tmp_path):
    """Past 10 partitions Dask turns group-bys into shuffles; the summary must survive that."""
    texts = [_prose(100 + n, 80) for n in range(24)]
    shards = [[_doc(f"a{n:02d}", texts[n]), _doc(f"b{n:02d}", texts[n].upper())] for n in range(12)]
    shards += [[_doc(f"c{n:02d}", texts[n])] for n in range(12, 24)]
    summary, clusters, kept = _run(tmp_path, shards, {"exact_dedup": {}}, {"minhash_dedup": {}})
    assert sorted(kept) == [f"a{n:02d}" for n in range(12)] + [f"c{n:02d}" for n in range(12, 24)]
    assert summary["per_stage"]["exact_dedup"]["cluster_sizes"] == {"2": 12}


def test_no_documents_at_all(tmp_path):
    summary, clusters, kept = _run(tmp_path, [[], []], {"exact_dedup": {}}, {"minhash_dedup": {}})
    assert kept == [] and clusters.empty
    assert summary["per_stage"]["minhash_dedup"]["removed"] == 0


# --- ground truth: planted near-duplicates, through the whole dedup path ------------------------

@pytest.mark.shared
@pytest.mark.parametrize("size", [1000, 2500])
def test_ground_truth_through_the_pipeline(tmp_path, size):
    train = shared_path("dedup", "minhash-articles", f"articles_{size}.train")
    truth_path = shared_path("dedup", "minhash-articles", f"articles_{size}.truth")
    texts = {}
    for line in train.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc_id, _, text = line.partition(" ")
            texts[doc_id] = text
    truth = {tuple(sorted(line.split())) for line in truth_path.read_text().splitlines() if line.strip()}
    docs = [_doc(doc_id, text) for doc_id, text in texts.items()]
    _, clusters, kept = _run(tmp_path, [docs[n::4] for n in range(4)], {"minhash_dedup": {}})

    cluster_of = dict(zip(clusters["id"], clusters["cluster_id"]))
    found = {pair for pair in truth if pair[0] in cluster_of and cluster_of[pair[0]] == cluster_of.get(pair[1])}
    pairs = {tuple(sorted(p)) for _, group in clusters.groupby("cluster_id")
             for p in itertools.combinations(group["id"], 2)}
    false = [p for p in pairs if jaccard(texts[p[0]], texts[p[1]]) < 0.5]
    print(f"\narticles_{size} through refinery.dedup: {len(truth)} planted pairs, {len(pairs)} pairs in clusters, "
          f"recall {len(found) / len(truth):.3f}, precision {len(pairs & truth) / max(len(pairs), 1):.3f}, "
          f"false (J<0.5) {len(false)}")
    assert found == truth
    assert len(false) <= 0.01 * len(pairs)
    assert len(kept) == len(docs) - (len(clusters) - clusters["cluster_id"].nunique())


# --- config and resume --------------------------------------------------------------------------

@pytest.mark.parametrize("dedup, key", [
    ([{"fuzzy": {}}], "dedup[0]"),
    ([{"minhash_dedup": {"bands": 0}}], "dedup[0].minhash_dedup.bands"),
    ([{"url_dedup": {"keep": "random"}}], "dedup[0].url_dedup.keep"),
    ([{"exact_dedup": {}}, {"exact_dedup": {}}], "dedup"),
    ([{"extract": {}}], "dedup[0]"),  # a chain stage is not a dedup stage
])
def test_bad_dedup_config_names_the_key(dedup, key):
    with pytest.raises(ConfigError) as err:
        _config(*dedup)
    assert err.value.key == key


def test_dedup_settings_do_not_change_the_chain_fingerprint():
    a = _config({"minhash_dedup": {}})
    b = _config({"minhash_dedup": {"bands": 14, "rows": 8}})
    assert a.fingerprint() == b.fingerprint()
    assert a.dedup_fingerprint() != b.dedup_fingerprint()
    assert _config().fingerprint() != a.fingerprint()  # without dedup the chain writes documents/ directly


@pytest.mark.slow
def test_changing_only_dedup_settings_reuses_the_chain_output(tmp_path):
    out = tmp_path / "out"
    first = run_cli_inprocess("run", ENGLISH_CONFIG, "--output", out, "--scheduler", "sync")
    assert first.returncode == 0, first.stderr
    raw = yaml.safe_load(ENGLISH_CONFIG.read_text())
    raw["dedup"] = [{"minhash_dedup": {"bands": 14, "rows": 8}}]
    config = tmp_path / "fineweb-shape.yaml"
    config.write_text(yaml.safe_dump(raw))
    second = run_cli_inprocess("run", config, "--output", out, "--scheduler", "sync")
    assert second.returncode == 0, second.stderr
    assert "2 shards resumed" in second.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert [s["stage"] for s in stats["funnel"]][-1] == "minhash_dedup"
    assert not (out / "dropped" / "url_dedup").exists()  # outputs of stages no longer configured are gone
    assert stats["dedup"]["per_stage"]["minhash_dedup"]["removed"] >= 9  # exact copies are near copies too


def test_band_files_are_consumed_and_come_back_when_the_resolution_runs_again(tmp_path):
    base = [_prose(n, 200) for n in range(8)]
    docs = [_doc(f"d{n:02d}", t) for n, t in enumerate(base)]
    docs += [_doc(f"e{n:02d}", " ".join(t.split()[:-4] + ["q"] * 4)) for n, t in enumerate(base[:3])]
    stage = {"minhash_dedup": {}}
    _, clusters, kept = _run(tmp_path, [docs[:6], docs[6:]], stage)
    bands, keys = tmp_path / "dedup" / "bands", sorted((tmp_path / "dedup" / "keys").glob("*.parquet"))
    assert not bands.exists() and len(clusters) == 6
    written = [k.stat().st_mtime_ns for k in keys]
    inputs = [InputShard(path=f"mem-{n}", shard_id=f"s{n:03d}") for n in range(2)]
    deduplicate(_config(stage), inputs, str(tmp_path))  # all done: the keys are not computed again
    assert [k.stat().st_mtime_ns for k in keys] == written and not bands.exists()
    (tmp_path / "_markers" / "dedup.done").unlink()  # the resolution must run again: keys come back
    deduplicate(_config(stage), inputs, str(tmp_path))
    again = pd.read_parquet(tmp_path / "dedup" / "clusters.parquet")
    columns = ["cluster_id", "id", "kept", "kept_id"]
    assert again[columns].sort_values("id").values.tolist() == clusters[columns].sort_values("id").values.tolist()
    assert not bands.exists()
