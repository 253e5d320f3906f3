"""refinery.lsh: band rows, candidate edges, connected components and the drop list, on Dask."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from refinery.engine.lsh import candidate_edges, connected_components, duplicates_to_drop
from refinery.pipeline.keys import band_rows
from refinery.minhash import MinHasher


@pytest.fixture(autouse=True)
def _sync_dask():
    with dask.config.set({"scheduler": "synchronous", "dataframe.shuffle.method": "tasks"}):
        yield


# --- helpers ----------------------------------------------------------------------------------

def _keys(n_docs: int, bands: int, shared: dict[int, list[int]], seed: int = 0) -> np.ndarray:
    """Random, all-distinct uint64 keys, except that ``shared[band]`` docs get one common key."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 2**63, size=(n_docs, bands), dtype=np.uint64) | np.uint64(1 << 63)
    for i, (band, docs) in enumerate(shared.items()):
        for d in docs:
            keys[d, band] = np.uint64(1000 + i)  # the random keys all have the top bit set
    return keys


def _bands_frame(table: pa.Table, npartitions: int, seed: int = 0) -> dd.DataFrame:
    df = table.to_pandas()
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # input order must not matter
    return dd.from_pandas(df, npartitions=npartitions, sort=False)


def _rows(ddf: dd.DataFrame) -> list[tuple]:
    df = ddf.compute()
    return sorted(map(tuple, df.astype(object).itertuples(index=False, name=None)))


def _reference_components(edges: list[tuple[str, str]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


IDS = ["a", "b", "c", "d", "e", "f"]
# a,b share band 0; b,c share band 3; d,e share band 1; f shares nothing
SHARED = {0: [0, 1], 3: [1, 2], 1: [3, 4]}


# --- band_rows --------------------------------------------------------------------------------

def test_band_rows_layout():
    keys = np.arange(12, dtype=np.uint64).reshape(3, 4)
    t = band_rows(["x", "y", "z"], keys)
    assert t.column_names == ["band", "key", "id"]
    assert t.schema.field("band").type == pa.int32()
    assert t.schema.field("key").type == pa.uint64()
    assert t.schema.field("id").type == pa.string()
    assert t.num_rows == 12
    assert t["band"].to_pylist() == [0, 1, 2, 3] * 3
    assert t["key"].to_pylist() == list(range(12))
    assert t["id"].to_pylist() == ["x"] * 4 + ["y"] * 4 + ["z"] * 4


def test_band_rows_validates():
    with pytest.raises(ValueError):
        band_rows(["x"], np.zeros((2, 3), dtype=np.uint64))
    with pytest.raises(ValueError):
        band_rows(["x"], np.zeros((1, 3), dtype=np.int64))
    with pytest.raises(ValueError):
        band_rows(["x"], np.zeros(3, dtype=np.uint64))
    assert band_rows([], np.zeros((0, 5), dtype=np.uint64)).num_rows == 0


# --- the small planted example ----------------------------------------------------------------

@pytest.mark.parametrize("npartitions", [1, 3, 7])
def test_small_example(npartitions):
    bands = _bands_frame(band_rows(IDS, _keys(6, 8, SHARED)), npartitions)
    edges = candidate_edges(bands)
    assert _rows(edges) == [("b", "a"), ("c", "b"), ("e", "d")]
    comps = connected_components(edges)
    assert list(comps.columns) == ["id", "cluster"]
    assert _rows(comps) == [("a", "a"), ("b", "a"), ("c", "a"), ("d", "d"), ("e", "d")]
    drops = duplicates_to_drop(comps)
    assert list(drops.columns) == ["id", "kept_id"]
    assert _rows(drops) == [("b", "a"), ("c", "a"), ("e", "d")]


def test_edges_are_deduplicated_and_star_shaped():
    # a, b, c share bands 0, 2 and 5 (three buckets, same star); c, d share band 7
    shared = {0: [0, 1, 2], 2: [0, 1, 2], 5: [2, 1, 0], 7: [0, 3]}
    bands = _bands_frame(band_rows(["c", "a", "b", "d"], _keys(4, 8, shared)), 4)
    assert _rows(candidate_edges(bands)) == [("b", "a"), ("c", "a"), ("d", "c")]
    assert _rows(connected_components(candidate_edges(bands))) == [
        ("a", "a"), ("b", "a"), ("c", "a"), ("d", "a")]


def test_identical_results_across_partitionings():
    rng = np.random.default_rng(5)
    n, nb = 60, 16
    ids = [f"doc-{i:03d}" for i in rng.permutation(n)]
    shared = {int(b): sorted(rng.choice(n, size=int(rng.integers(2, 4)), replace=False).tolist())
              for b in rng.choice(nb, size=10, replace=False)}
    table = band_rows(ids, _keys(n, nb, shared, seed=7))
    results = []
    for p in (1, 3, 7):
        edges = candidate_edges(_bands_frame(table, p, seed=p))
        comps = connected_components(edges)
        results.append((_rows(edges), _rows(comps), _rows(duplicates_to_drop(comps))))
    assert results[0] == results[1] == results[2]
    # and they agree with a union-find reference
    pairs = [(ids[a], ids[b]) for docs in shared.values() for a in docs for b in docs if a < b]
    ref = _reference_components(pairs)
    assert results[0][1] == sorted(ref.items())


def test_no_edges():
    bands = _bands_frame(band_rows(IDS, _keys(6, 8, {})), 3)
    edges = candidate_edges(bands)
    assert _rows(edges) == []
    comps = connected_components(edges)
    assert _rows(comps) == []
    assert _rows(duplicates_to_drop(comps)) == []


# --- connected components directly ------------------------------------------------------------

def _edges_frame(pairs: list[tuple[str, str]], npartitions: int) -> dd.DataFrame:
    df = pd.DataFrame(pairs, columns=["id", "kept"])
    return dd.from_pandas(df, npartitions=npartitions, sort=False)


def test_long_chain_converges_to_one_cluster():
    rng = np.random.default_rng(11)
    n = 200
    names = [f"n{i:03d}" for i in rng.permutation(n)]  # chain positions get random ids
    pairs = [(names[i], names[i + 1]) for i in range(n - 1)]
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]  # edges in shuffled order
    pairs = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in pairs]  # either direction
    comps = connected_components(_edges_frame(pairs, 5), max_iter=30).compute()
    assert len(comps) == n
    assert set(comps["cluster"]) == {"n000"}
    assert sorted(comps["id"]) == sorted(names)


def test_two_chains_and_a_cycle_match_reference():
    rng = np.random.default_rng(3)
    names = [f"x{i:03d}" for i in rng.permutation(90)]
    pairs = [(names[i], names[i + 1]) for i in range(0, 39)]            # chain 0..39
    pairs += [(names[i], names[i + 1]) for i in range(40, 69)]          # chain 40..69
    pairs += [(names[i], names[i + 1]) for i in range(70, 89)] + [(names[89], names[70])]  # cycle
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    comps = connected_components(_edges_frame(pairs, 4))
    assert _rows(comps) == sorted(_reference_components(pairs).items())


def test_max_iter_exceeded_raises():
    pairs = [(f"n{i:02d}", f"n{i + 1:02d}") for i in range(20)]
    with pytest.raises(RuntimeError, match="did not converge"):
        connected_components(_edges_frame(pairs, 2), max_iter=1)


# --- end to end with refinery.minhash ---------------------------------------------------------

def _paragraph(rng: np.random.Generator, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words, size=n))


def test_end_to_end_with_minhash_finds_planted_pair():
    rng = np.random.default_rng(2024)
    vocab = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(rng.integers(3, 9))))
             for _ in range(2000)]
    base = _paragraph(rng, vocab, 150)
    words = base.split()
    words[75] = "zzzchanged"
    near = " ".join(words)
    texts = {"doc-07": base, "doc-03": near}
    for i in (1, 2, 4, 5, 6):
        texts[f"doc-{i:02d}"] = _paragraph(rng, vocab, 150)
    ids = sorted(texts)
    mh = MinHasher()  # 9000 permutations, 450 bands x 20 rows
    assert (mh.bands, mh.rows) == (450, 20)
    keys = mh.band_keys(mh.signatures([texts[i] for i in ids]))
    bands = _bands_frame(band_rows(ids, keys), 3)
    edges = candidate_edges(bands)
    assert _rows(edges) == [("doc-07", "doc-03")]
    comps = connected_components(edges)
    assert _rows(comps) == [("doc-03", "doc-03"), ("doc-07", "doc-03")]
    assert _rows(duplicates_to_drop(comps)) == [("doc-07", "doc-03")]
