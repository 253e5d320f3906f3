"""refinery.engine.lsh and refinery.bandfile: band files, bucket edges, connected components and the
drop list, on Dask."""

from __future__ import annotations

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from refinery.bandfile import BandWriter, band_file_info, read_band
from refinery.engine.lsh import band_edges, band_tasks, bucket_edges, connected_components, duplicates_to_drop
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


def _write_bands(path, keys: np.ndarray, chunk_rows: int = 3, key_bytes: int = 8) -> str:
    with open(path, "wb") as file:
        writer = BandWriter(file, keys.shape[1], chunk_rows, key_bytes)
        for start in range(0, len(keys), chunk_rows):
            writer.write(keys[start:start + chunk_rows])
        writer.close()
    return str(path)


def _candidate_edges(folder, ids: list[str], keys: np.ndarray, shards: int = 1, max_task_bytes: int = 2**28,
                     dropped: list[str] = ()) -> dd.DataFrame:
    """band_edges over ``shards`` band files (documents in id order, so numbers order like ids),
    with the numbers mapped back to ids."""
    order = np.argsort(ids, kind="stable")
    ids, keys = [ids[i] for i in order], keys[order]
    files, numbers = [], {}
    for index, rows in enumerate(np.array_split(np.arange(len(ids)), shards)):
        files.append(_write_bands(folder / f"s{index}.bands", keys[rows]))
        numbers.update({(index << 32) | row: ids[i] for row, i in enumerate(rows)})
    gone = None
    if dropped:
        gone = str(folder / "dropped.parquet")
        pd.DataFrame({"doc": [n for n, i in numbers.items() if i in dropped]}, dtype="int64").to_parquet(gone)
    edges = band_edges(files, len(ids), keys.shape[1], max_task_bytes, gone)
    return edges.map_partitions(lambda part: part.apply(lambda c: c.map(numbers)).astype(object),
                                meta=pd.DataFrame({"id": pd.Series(dtype=object), "kept": pd.Series(dtype=object)}))


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


# --- band files -------------------------------------------------------------------------------

@pytest.mark.parametrize("documents, chunk_rows", [(0, 4), (1, 4), (7, 3), (8, 4), (9, 10)])
@pytest.mark.parametrize("key_bytes", [8, 5])
def test_a_band_file_gives_back_each_band_in_document_order(tmp_path, documents, chunk_rows, key_bytes):
    keys = np.random.default_rng(documents).integers(0, 2**64 - 1, size=(documents, 6), dtype=np.uint64)
    path = tmp_path / "s.bands"
    with open(path, "wb") as file:
        writer = BandWriter(file, 6, chunk_rows, key_bytes)
        for start in range(0, documents, chunk_rows):
            writer.write(keys[start:start + chunk_rows])
        writer.close()
    assert band_file_info(path) == (documents, 6, key_bytes, chunk_rows)
    assert path.stat().st_size == 32 + documents * 6 * key_bytes  # nothing but the keys
    mask = np.uint64(2 ** (8 * key_bytes) - 1) if key_bytes < 8 else np.uint64(2**64 - 1)
    for band in range(6):
        assert np.array_equal(read_band(path, band), keys[:, band] & mask)


def test_a_band_writer_refuses_what_it_cannot_lay_out(tmp_path):
    with open(tmp_path / "s.bands", "wb") as file:
        writer = BandWriter(file, 4, 2)
        with pytest.raises(ValueError):
            writer.write(np.zeros((2, 3), dtype=np.uint64))  # wrong number of bands
        with pytest.raises(ValueError):
            writer.write(np.zeros((2, 4), dtype=np.int64))
        with pytest.raises(ValueError):
            writer.write(np.zeros((3, 4), dtype=np.uint64))  # more than a chunk
        writer.write(np.zeros((1, 4), dtype=np.uint64))
        with pytest.raises(ValueError):
            writer.write(np.zeros((2, 4), dtype=np.uint64))  # only the last chunk may be short


def test_bucket_edges_link_each_member_to_the_lowest():
    keys = np.array([5, 9, 5, 7, 5, 9], dtype=np.uint64)
    docs = np.array([40, 11, 12, 13, 30, 50], dtype=np.int64)
    ids, kept = bucket_edges(keys, docs)
    assert sorted(zip(ids.tolist(), kept.tolist())) == [(30, 12), (40, 12), (50, 11)]


def test_band_tasks_bound_what_one_task_holds():
    assert band_tasks(450, 1000, 2**28) == [band_tasks(450, 1000, 2**28)[0]]  # all bands in one task
    tasks = band_tasks(450, 10**6, 2**28)
    assert sorted(b for t in tasks for b in t.bands) == list(range(450))
    assert all(len(t.bands) * 36 * 10**6 <= 2**28 for t in tasks)
    split = band_tasks(4, 10**8, 2**28)
    assert {t.splits for t in split} == {14} and len(split) == 4 * 14


# --- the small planted example ----------------------------------------------------------------

@pytest.mark.parametrize("npartitions", [1, 3, 7])
def test_small_example(tmp_path, npartitions):
    edges = _candidate_edges(tmp_path, IDS, _keys(6, 8, SHARED), shards=min(npartitions, 6))
    assert _rows(edges) == [("b", "a"), ("c", "b"), ("e", "d")]
    comps = connected_components(edges)
    assert list(comps.columns) == ["id", "cluster"]
    assert _rows(comps) == [("a", "a"), ("b", "a"), ("c", "a"), ("d", "d"), ("e", "d")]
    drops = duplicates_to_drop(comps)
    assert list(drops.columns) == ["id", "kept_id"]
    assert _rows(drops) == [("b", "a"), ("c", "a"), ("e", "d")]


def test_edges_are_deduplicated_and_star_shaped(tmp_path):
    # a, b, c share bands 0, 2 and 5 (three buckets, same star); c, d share band 7
    shared = {0: [0, 1, 2], 2: [0, 1, 2], 5: [2, 1, 0], 7: [0, 3]}
    edges = _candidate_edges(tmp_path, ["c", "a", "b", "d"], _keys(4, 8, shared), shards=4, max_task_bytes=200)
    assert _rows(edges) == [("b", "a"), ("c", "a"), ("d", "c")]
    assert _rows(connected_components(edges)) == [
        ("a", "a"), ("b", "a"), ("c", "a"), ("d", "a")]


def test_identical_results_across_partitionings(tmp_path):
    rng = np.random.default_rng(5)
    n, nb = 60, 16
    ids = [f"doc-{i:03d}" for i in rng.permutation(n)]
    shared = {int(b): sorted(rng.choice(n, size=int(rng.integers(2, 4)), replace=False).tolist())
              for b in rng.choice(nb, size=10, replace=False)}
    keys = _keys(n, nb, shared, seed=7)
    results = []
    for p in (1, 3, 7):
        (tmp_path / str(p)).mkdir()
        edges = _candidate_edges(tmp_path / str(p), ids, keys, shards=p, max_task_bytes=36 * n * p)
        comps = connected_components(edges)
        results.append((_rows(edges), _rows(comps), _rows(duplicates_to_drop(comps))))
    assert results[0] == results[1] == results[2]
    # and they agree with a union-find reference
    pairs = [(ids[a], ids[b]) for docs in shared.values() for a in docs for b in docs if a < b]
    ref = _reference_components(pairs)
    assert results[0][1] == sorted(ref.items())


def test_documents_dropped_earlier_take_no_part(tmp_path):
    """a, b, c share a bucket; with a dropped by an earlier stage, b centres it (no edge through a)."""
    edges = _candidate_edges(tmp_path, IDS, _keys(6, 8, {0: [0, 1, 2], 1: [0, 3]}), shards=2, dropped=["a"])
    assert _rows(edges) == [("c", "b")]


def test_no_edges(tmp_path):
    edges = _candidate_edges(tmp_path, IDS, _keys(6, 8, {}), shards=3)
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


def test_end_to_end_with_minhash_finds_planted_pair(tmp_path):
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
    edges = _candidate_edges(tmp_path, ids, keys, shards=3)
    assert _rows(edges) == [("doc-07", "doc-03")]
    comps = connected_components(edges)
    assert _rows(comps) == [("doc-03", "doc-03"), ("doc-07", "doc-03")]
    assert _rows(duplicates_to_drop(comps)) == [("doc-07", "doc-03")]


def _full_keys_of(index: int, rows: np.ndarray, keys: list[np.ndarray]) -> np.ndarray:
    return keys[index][rows]


def test_shortened_keys_are_confirmed_on_their_full_64_bits(tmp_path):
    """Four stored bytes make documents 0, 2 and 3 share band 0's bucket; only 0 and 3 share the
    full key, so only they are linked (and 2 not even through a bucket centre)."""
    from functools import partial

    from refinery.engine.lsh import FullKeys

    full = _keys(6, 3, {0: [0, 3]})
    full[2, 0] = full[0, 0] ^ np.uint64(1 << 40)  # same low 4 bytes as documents 0 and 3
    full[5, 1] = full[4, 1] ^ np.uint64(1 << 56)
    shards = [full[:3], full[3:]]
    files = [_write_bands(tmp_path / f"s{i}.bands", k, key_bytes=4) for i, k in enumerate(shards)]
    numbers = [0, 1, 2, 1 << 32, (1 << 32) | 1, (1 << 32) | 2]

    def edges(full_keys):
        found = band_edges(files, 6, 3, 2**28, full_keys=full_keys).compute()
        return sorted((numbers.index(a), numbers.index(b)) for a, b in zip(found["id"], found["kept"]))

    assert edges(None) == [(2, 0), (3, 0), (5, 4)]  # unconfirmed: the 4-byte collisions are edges
    confirm = FullKeys(partial(_full_keys_of, keys=shards), str(tmp_path / "candidates"))
    assert edges(confirm) == [(3, 0)]
    changed = [shards[0], shards[1].copy()]
    changed[1][0, 0] ^= np.uint64(1)  # a document whose text no longer gives its stored key
    with pytest.raises(RuntimeError, match="differ from its band file"):
        edges(FullKeys(partial(_full_keys_of, keys=changed), str(tmp_path / "candidates2")))
