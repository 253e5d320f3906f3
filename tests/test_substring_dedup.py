"""Exact-substring dedup: the suffix-array search against a brute-force reference, planted
repeats, cutting, and the stage inside the dedup phases."""

from __future__ import annotations

import random

import dask
import pytest

from refinery.config import ConfigError
from refinery.stages.substring_dedup import cut_text, find_repeats
from test_dedup import _config, _doc, _run


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set({"scheduler": "sync", "dataframe.shuffle.method": "tasks"}):
        yield


def words(rng: random.Random, n: int, vocab: int = 10**6) -> str:
    return " ".join(f"w{rng.randrange(vocab)}" for _ in range(n))


def reference(texts: list[str], min_tokens: int, keep_first: bool) -> list[set[int]]:
    """Brute force: token indexes per document covered by a repeated min_tokens-window."""
    tokens = [t.split() for t in texts]
    seen: dict[tuple, list[tuple[int, int]]] = {}
    for d, toks in enumerate(tokens):
        for i in range(len(toks) - min_tokens + 1):
            seen.setdefault(tuple(toks[i:i + min_tokens]), []).append((d, i))
    cut = [set() for _ in texts]
    for places in seen.values():
        if len(places) > 1:
            for d, i in places[1:] if keep_first else places:
                cut[d].update(range(i, i + min_tokens))
    return cut


def token_cut(texts: list[str], found) -> list[set[int]]:
    out = []
    for text, ranges in zip(texts, found.cuts):
        starts = [m for m, _ in _spans(text)]
        out.append({k for k, start in enumerate(starts) if any(a <= start < b for a, b in ranges)})
    return out


def _spans(text: str):
    import re

    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("keep_first", [True, False])
def test_matches_a_brute_force_reference(seed, keep_first):
    rng = random.Random(seed)
    pieces = [words(rng, rng.randint(3, 15), vocab=30) for _ in range(6)]  # small vocabulary: many repeats
    texts = [" ".join(rng.choice(pieces) if rng.random() < 0.6 else words(rng, 5, 50) for _ in range(rng.randint(1, 12)))
             for _ in range(12)]
    found = find_repeats(texts, min_tokens=8, keep_first=keep_first)
    assert token_cut(texts, found) == reference(texts, 8, keep_first)
    assert found.cut_tokens == [len(s) for s in reference(texts, 8, keep_first)]


def test_a_60_token_span_in_3_documents_is_cut_after_its_first_occurrence():
    rng = random.Random(1)
    span = words(rng, 60)
    texts = [f"{words(rng, 80)} {span} {words(rng, 30)}", f"{span}\n\n{words(rng, 70)}", f"{words(rng, 40)}\n\n{span}"]
    found = find_repeats(texts)
    assert found.cut_tokens == [0, 60, 60]
    cut = [cut_text(t, r) for t, r in zip(texts, found.cuts)]
    assert span in cut[0] and span not in cut[1] and span not in cut[2]
    assert cut[1] == texts[1].removeprefix(span).strip() and "\n\n\n" not in cut[2]
    assert find_repeats(texts, keep_first=False).cut_tokens == [60, 60, 60]  # Lee et al.'s variant


def test_a_40_token_repeat_is_kept():
    rng = random.Random(2)
    span = words(rng, 40)
    texts = [f"{words(rng, 50)} {span}", f"{span} {words(rng, 50)}", f"{words(rng, 10)} {span} {words(rng, 10)}"]
    assert find_repeats(texts).cut_tokens == [0, 0, 0]
    assert find_repeats(texts, min_tokens=40).cut_tokens == [0, 40, 40]


def test_repeats_never_cross_documents():
    rng = random.Random(3)
    a, b = words(rng, 30), words(rng, 30)
    texts = [f"{a}", f"{b}", f"{a} {b}"]  # a+b only exists joined in the third document
    assert find_repeats(texts).cut_tokens == [0, 0, 0]


def test_empty_input():
    assert find_repeats([]).cuts == [] and find_repeats(["", "  "]).cut_tokens == [0, 0]


# --- the stage in the dedup phases --------------------------------------------------------------

def test_stage_cuts_and_drops_what_is_left_too_short(tmp_path):
    rng = random.Random(4)
    footer = words(rng, 60)
    shards = [
        [_doc("a", f"{words(rng, 200)}\n\n{footer}"), _doc("b", f"{words(rng, 120)}\n\n{footer}")],
        [_doc("c", f"{words(rng, 20)}\n\n{footer}"), _doc("d", words(rng, 100))],
    ]
    summary, _, kept = _run(tmp_path, shards, {"substring_dedup": {}})
    assert sorted(kept) == ["a", "b", "d"]  # c keeps 20 words: fewer than min_words_after_cut
    import pyarrow.parquet as pq

    texts = {r["id"]: r["text"] for f in sorted((tmp_path / "documents").glob("*.parquet"))
             for r in pq.read_table(f).to_pylist()}
    assert footer in texts["a"] and footer not in texts["b"]
    stage = summary["per_stage"]["substring_dedup"]
    assert stage["documents_touched"] == 2 and stage["tokens_cut"] == 120 and stage["removed"] == 1
    spans = pq.read_table(tmp_path / "dedup" / "substring_spans").to_pylist()
    assert [(s["id"], s["text"]) for s in spans] == [("b", footer), ("c", footer)]


def test_groups_and_parts_bound_the_scope(tmp_path):
    rng = random.Random(5)
    footer = words(rng, 60)
    shards = [[_doc(f"{n}", f"{words(rng, 100)} {footer}")] for n in range(4)]
    summary, _, _ = _run(tmp_path / "all", shards, {"substring_dedup": {}})
    assert summary["per_stage"]["substring_dedup"]["documents_touched"] == 3
    summary, _, _ = _run(tmp_path / "pairs", shards, {"substring_dedup": {"shards_per_group": 2}})
    assert summary["per_stage"]["substring_dedup"]["groups"] == 2
    assert summary["per_stage"]["substring_dedup"]["documents_touched"] == 2  # one per group
    forced = {"max_part_bytes": 1, "method": "suffix_array"}
    summary, _, _ = _run(tmp_path / "parts", shards, {"substring_dedup": forced})
    assert summary["per_stage"]["substring_dedup"]["parts"] == 4
    assert summary["per_stage"]["substring_dedup"]["documents_touched"] == 0  # each part holds one document
    # auto: a group bigger than one suffix array goes through window hashes, across the parts
    summary, _, _ = _run(tmp_path / "windows", shards, {"substring_dedup": {"max_part_bytes": 1}})
    stage = summary["per_stage"]["substring_dedup"]
    assert (stage["methods"], stage["parts"], stage["hash_ranges"]) == (["window_hash"], 0, 1)
    assert stage["documents_touched"] == 3 and stage["tokens_cut"] == 3 * 60


@pytest.mark.parametrize("shards_per_group", [None, 2])
@pytest.mark.parametrize("keep_first", [True, False])
@pytest.mark.parametrize("chunk_windows", [1 << 22, 40])
def test_window_hashes_cut_exactly_what_the_suffix_array_cuts(tmp_path, monkeypatch, shards_per_group, keep_first,
                                                             chunk_windows):
    """Same documents, same cuts, whichever path; several hash ranges, repeats inside one document
    too, and (with small chunks) repeats within a chunk and across chunks of one shard."""
    import refinery.pipeline.windows as windows

    monkeypatch.setattr(windows, "MIN_RANGE_TEXT_BYTES", 1)
    monkeypatch.setattr(windows, "CHUNK_WINDOWS", chunk_windows)
    rng = random.Random(9)
    pool = [words(rng, n) for n in (55, 70, 120, 30)]
    shards = [[_doc(f"s{s}d{d}", "\n\n".join([words(rng, rng.randint(5, 80))] +
                                             [rng.choice(pool) for _ in range(rng.randint(0, 3))]))
               for d in range(rng.randint(1, 4))] for s in range(5)]
    shards[0][0]["text"] += "\n\n" + pool[2] + " " + pool[2]  # a repeat inside one document
    stage = {"keep_first": keep_first, "shards_per_group": shards_per_group, "min_words_after_cut": 0}
    kept = {}
    for method, size in (("suffix_array", 50_000_000), ("window_hash", 300)):
        folder = tmp_path / method
        summary, _, _ = _run(folder, shards, {"substring_dedup": {**stage, "method": method, "max_part_bytes": size}})
        import pyarrow.parquet as pq

        kept[method] = sorted((r["id"], r["text"]) for f in sorted((folder / "documents").glob("*.parquet"))
                              for r in pq.read_table(f).to_pylist())
        totals = summary["per_stage"]["substring_dedup"]
        kept[method].append(("totals", str([totals[k] for k in ("documents_in", "documents_touched", "tokens_cut", "bytes_cut")])))
        if method == "window_hash":
            assert totals["hash_ranges"] > 1
    assert kept["window_hash"] == kept["suffix_array"]
    assert any("_work" in str(p) for p in tmp_path.rglob("*")) is False  # the work folder is gone


def test_substring_dedup_must_be_last():
    with pytest.raises(ConfigError) as err:
        _config({"substring_dedup": {}}, {"url_dedup": {}})
    assert err.value.key == "dedup[0]"


def test_window_hashes_take_tokens_as_str_split_does():
    """Every Unicode whitespace character separates tokens, as in find_repeats; the same window
    hashes the same in any text, whatever surrounds it."""
    import numpy as np

    from refinery.stages.substring_dedup import window_hashes

    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    rng = random.Random(2)
    alphabet = list("abcé中😀\u200b-") + spaces  # \u200b (zero width) is not whitespace
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        tokens = text.split()
        assert len(window_hashes(text, 1)) == len(tokens)
        assert list(window_hashes(text, 1)) == [window_hashes(t, 1)[0] for t in tokens]
    window = "one two three four five"
    a = window_hashes(f"x y {window} z", 5)
    b = window_hashes(f"{window}\u3000q", 5)
    assert a[2] == b[0] and len(set(a.tolist())) == len(a) and a.dtype == np.uint64


def test_hash_ranges_divide_the_text_evenly_and_keep_sorted_hashes_in_order():
    import numpy as np

    from refinery.pipeline.windows import range_count, section_of

    assert [range_count(n << 20, 50_000_000) for n in (1, 47, 48, 2200)] == [1, 1, 2, 47]
    rng = np.random.default_rng(3)
    hashes = np.sort(np.concatenate([rng.integers(0, 2**63, 100_000, dtype=np.uint64) * np.uint64(2) + np.uint64(1),
                                     np.array([0, 2**64 - 1], dtype=np.uint64)]))
    for ranges in (1, 3, 44, 1000):
        sections = section_of(hashes, ranges)
        assert sections[0] == 0 and sections[-1] == ranges - 1
        assert np.all(np.diff(sections) >= 0)
        counts = np.bincount(sections, minlength=ranges)
        assert counts.max() < 1.2 * len(hashes) / ranges + 50  # even, up to chance
