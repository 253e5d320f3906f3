"""LSH clustering for the fuzzy dedup: band buckets read by band, components as Dask dataframes.

:mod:`refinery.minhash` turns each document into ``bands`` uint64 LSH keys; the keys phase writes
them per shard, band-major (:mod:`refinery.bandfile`). This module turns them into the documents
to drop, without any process holding all keys, all edges or all labels.

Documents are int64 numbers, ``shard index << 32 | row``: unique by construction, 8 bytes, and
cheap to sort. Which document of a component is kept is decided later, on the internal key
(:func:`refinery.engine.resolve`): a component does not depend on which member centres a bucket.

1. :func:`band_edges`: one task per group of bands reads that band of every shard (one strided
   read each), sorts the keys and emits, for each bucket of two or more documents, star edges from
   its lowest number to each other member. No shuffle moves band rows, and a key that occurs once
   (most of them) is dropped in the task that reads it. The edges are shuffled on ``id`` and
   de-duplicated per partition. Output columns: ``id``, ``kept``, with ``kept < id``. Band files
   that keep fewer than 8 bytes of each key list the members of shared buckets instead; one task
   per shard recomputes their full keys (:class:`FullKeys`), and the buckets are formed again on
   all 64 bits, so that a short key's chance collisions link nothing.
2. :func:`connected_components` labels each document that appears in an edge with the lowest
   number of its connected component. It is iterative (large-star / small-star rounds, see its
   docstring): each round is two shuffles and per-partition pandas work on the edge list, and the
   only thing the driver receives is one integer per round, the number of nodes not yet settled.
3. :func:`duplicates_to_drop` keeps the lowest of each component and lists the others.

Memory: a band task holds ``bands_per_task`` bands of the whole corpus (12 bytes per document and
band, about 3x that while sorting) or, with ``splits`` > 1, the keys of one key range of one band;
:func:`band_tasks` sizes both from ``max_task_bytes``. A huge bucket (one boilerplate page copied a
million times) is one sorted run in one task, which is fine. Nothing is computed on the driver but
:func:`connected_components`'s one integer per round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd

__all__ = ["FullKeys", "band_edges", "band_tasks", "bucket_edges", "connected_components", "duplicates_to_drop"]


# --- helpers ----------------------------------------------------------------------------------

def _id_dtype(df: dd.DataFrame, column: str):
    return df._meta[column].dtype


def _edges_meta(dtype) -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype=dtype), "kept": pd.Series(dtype=dtype)})


def _labels_meta(dtype, name: str = "label") -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype=dtype), name: pd.Series(dtype=dtype)})


def bucket_edges(keys: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Star edges of every bucket (documents sharing a key): ``(member, lowest member)`` for each
    member but the lowest. ``keys`` uint64 and ``docs`` int64 are parallel arrays; a document
    appears at most once per key."""
    order = np.lexsort((docs, keys))
    keys, docs = keys[order], docs[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    members = ~first  # a bucket's non-first rows; singletons have none
    return docs[members], docs[starts][group[members]]


def _drop_duplicate_rows(part: pd.DataFrame) -> pd.DataFrame:
    return part.drop_duplicates(ignore_index=True)


# --- 1. candidate edges -----------------------------------------------------------------------

@dataclass(frozen=True)
class BandTask:
    """Which bands one task reads (and which key range of them: ``key % splits == split``)."""

    bands: tuple[int, ...]
    split: int = 0
    splits: int = 1


def band_tasks(bands: int, documents: int, max_task_bytes: int) -> list[BandTask]:
    """Tasks that read all ``bands``, each holding at most about ``max_task_bytes`` (36 bytes per
    document and band: key, number and the sort's copies)."""
    per_band = max(documents, 1) * 36
    if per_band <= max_task_bytes:
        size = max(1, min(bands, max_task_bytes // per_band))
        return [BandTask(tuple(range(b, min(b + size, bands)))) for b in range(0, bands, size)]
    splits = -(-per_band // max_task_bytes)
    return [BandTask((b,), s, splits) for b in range(bands) for s in range(splits)]


def _task_bands(task: BandTask, band_files: tuple[str, ...], dropped: str | None):
    """(band, keys, docs) for each band of ``task``: that band of every shard, without the
    ``dropped`` documents."""
    from refinery.bandfile import read_band

    gone = np.sort(pd.read_parquet(dropped)["doc"].to_numpy(dtype=np.int64)) if dropped else None
    for band in task.bands:
        keys, docs = [], []
        for index, path in enumerate(band_files):
            shard_keys = read_band(path, band)
            shard_docs = (np.int64(index) << np.int64(32)) | np.arange(len(shard_keys), dtype=np.int64)
            if task.splits > 1:
                mine = shard_keys % np.uint64(task.splits) == np.uint64(task.split)
                shard_keys, shard_docs = shard_keys[mine], shard_docs[mine]
            keys.append(shard_keys)
            docs.append(shard_docs)
        keys, docs = np.concatenate(keys), np.concatenate(docs)
        if gone is not None and len(gone):
            alive = ~np.isin(docs, gone, assume_unique=True)
            keys, docs = keys[alive], docs[alive]
        yield band, keys, docs


def _band_task_edges(task: BandTask, band_files: tuple[str, ...], dropped: str | None) -> pd.DataFrame:
    found = [bucket_edges(keys, docs) for _, keys, docs in _task_bands(task, band_files, dropped)]
    ids = np.concatenate([f[0] for f in found]) if found else np.empty(0, np.int64)
    kept = np.concatenate([f[1] for f in found]) if found else np.empty(0, np.int64)
    return pd.DataFrame({"id": ids, "kept": kept}).drop_duplicates(ignore_index=True)


def _candidates_meta() -> pd.DataFrame:
    return pd.DataFrame({"doc": pd.Series(dtype="int64"), "band": pd.Series(dtype="int32"),
                         "key": pd.Series(dtype="uint64"), "shard": pd.Series(dtype="int64")})


def _band_task_candidates(task: BandTask, band_files: tuple[str, ...], dropped: str | None) -> pd.DataFrame:
    """Every (document, band, stored key) in a bucket of two or more: the candidates that the
    full 64-bit keys then confirm or split."""
    found = []
    for band, keys, docs in _task_bands(task, band_files, dropped):
        order = np.lexsort((docs, keys))
        keys, docs = keys[order], docs[order]
        same = keys[1:] == keys[:-1]
        shared = np.zeros(len(keys), dtype=bool)
        shared[1:] |= same
        shared[:-1] |= same
        found.append(pd.DataFrame({"doc": docs[shared], "band": np.full(int(shared.sum()), band, np.int32),
                                   "key": keys[shared]}))
    frame = pd.concat(found, ignore_index=True) if found else _candidates_meta().drop(columns="shard")
    return frame.assign(shard=frame["doc"].to_numpy() >> np.int64(32))


@dataclass(frozen=True)
class FullKeys:
    """How to confirm candidates from shortened band keys: ``recompute(shard index, rows)`` gives
    the full uint64 band keys of those rows of that shard, shape (len(rows), bands); ``folder``
    is scratch space for the candidates, by shard."""

    recompute: object
    folder: str


def _buckets_meta() -> pd.DataFrame:
    return pd.DataFrame({"doc": pd.Series(dtype="int64"), "bucket": pd.Series(dtype="uint64")})


def _confirmed_buckets(index: int, full: FullKeys, key_bytes: int) -> pd.DataFrame:
    """Shard ``index``'s candidates with their full band keys, as one 64-bit bucket per (band, key)."""
    from refinery.minhash import _np_fmix64

    listed = Path(full.folder) / f"shard={index}"
    files = sorted(listed.glob("*.parquet")) if listed.is_dir() else []
    if not files:
        return _buckets_meta()
    rows = pd.concat([pd.read_parquet(f, columns=["doc", "band", "key"]) for f in files], ignore_index=True)
    numbers = rows["doc"].to_numpy()
    unique, slot = np.unique(numbers & np.int64(0xFFFFFFFF), return_inverse=True)
    keys = full.recompute(index, unique)[slot, rows["band"].to_numpy()]
    stored = rows["key"].to_numpy(dtype=np.uint64)
    mask = np.uint64((1 << (8 * key_bytes)) - 1)
    if not np.array_equal(keys & mask, stored):
        raise RuntimeError(f"band keys recomputed for shard {index} differ from its band file: its documents "
                           "changed after the keys phase")
    bands = rows["band"].to_numpy().astype(np.uint64)
    bucket = _np_fmix64(keys ^ _np_fmix64(bands + np.uint64(1)))
    return pd.DataFrame({"doc": numbers, "bucket": bucket})


def _partition_bucket_edges(part: pd.DataFrame) -> pd.DataFrame:
    ids, kept = bucket_edges(part["bucket"].to_numpy(dtype=np.uint64), part["doc"].to_numpy(dtype=np.int64))
    return pd.DataFrame({"id": ids, "kept": kept})


def band_edges(band_files: list[str], documents: int, bands: int, max_task_bytes: int,
               dropped: str | None = None, partitions: int | None = None,
               full_keys: FullKeys | None = None) -> dd.DataFrame:
    """Star edges of every LSH bucket with two or more documents, de-duplicated: columns ``id``
    and ``kept`` (int64 document numbers, ``kept < id``).

    ``band_files`` are the shards' band files in shard order (the shard index is the high half of
    a document's number), holding ``documents`` documents in all; ``dropped`` a Parquet file or
    folder whose ``doc`` column lists documents that take no part (earlier stages removed them).

    Band files with fewer than 8 bytes a key make unrelated documents share a stored key. With
    ``full_keys``, the members of such buckets are confirmed: one task per shard recomputes their
    full keys, and only documents equal in all 64 bits are linked, as with 8-byte files."""
    from refinery.bandfile import band_file_info

    tasks = band_tasks(bands, documents, max_task_bytes)
    meta = _edges_meta(np.dtype("int64"))
    nparts = partitions or max(1, min(len(tasks), -(-documents // 50_000)))
    key_bytes = min((band_file_info(path)[2] for path in band_files), default=8)
    if key_bytes == 8 or full_keys is None:
        edges = dd.from_map(_band_task_edges, tasks, band_files=tuple(band_files), dropped=dropped, meta=meta,
                            enforce_metadata=False)
    else:
        candidates = dd.from_map(_band_task_candidates, tasks, band_files=tuple(band_files), dropped=dropped,
                                 meta=_candidates_meta(), enforce_metadata=False)
        candidates.to_parquet(full_keys.folder, partition_on=["shard"], write_index=False)
        confirmed = dd.from_map(_confirmed_buckets, range(len(band_files)), full=full_keys, key_bytes=key_bytes,
                                meta=_buckets_meta(), enforce_metadata=False)
        edges = confirmed.shuffle(on="bucket", npartitions=nparts).map_partitions(_partition_bucket_edges, meta=meta)
    return edges.shuffle(on="id", npartitions=nparts).map_partitions(_drop_duplicate_rows, meta=meta)


# --- 2. connected components ------------------------------------------------------------------

def _adjacency_meta(dtype) -> pd.DataFrame:
    return pd.DataFrame({"node": pd.Series(dtype=dtype), "nbr": pd.Series(dtype=dtype)})


def _hi_lo_meta(dtype) -> pd.DataFrame:
    return pd.DataFrame({"hi": pd.Series(dtype=dtype), "lo": pd.Series(dtype=dtype)})


def _orient(part: pd.DataFrame) -> pd.DataFrame:
    """(id, kept) edges in either direction -> (hi, lo) with hi > lo; self-loops dropped."""
    a, b = part["id"], part["kept"]
    keep = (a != b).to_numpy()
    hi = a.where(a > b, b)[keep]
    lo = a.where(a < b, b)[keep]
    return pd.DataFrame({"hi": hi.to_numpy(), "lo": lo.to_numpy()}).astype(
        {"hi": a.dtype, "lo": a.dtype})


def _adjacency(edges: dd.DataFrame, nparts: int) -> dd.DataFrame:
    """Both directions of every (hi, lo) edge as (node, nbr), shuffled on node, de-duplicated."""
    up = edges.rename(columns={"hi": "node", "lo": "nbr"})
    down = edges.rename(columns={"lo": "node", "hi": "nbr"})[["node", "nbr"]]
    adj = dd.concat([up, down]).shuffle(on="node", npartitions=nparts)
    return adj.map_partitions(_drop_duplicate_rows, meta=adj._meta)


def _not_star_count(part: pd.DataFrame) -> pd.Series:
    """How many nodes of ``part`` break the final shape: two smaller neighbours, or a smaller and
    a larger one. With none anywhere, every component is a star around its lowest id."""
    if part.empty:
        return pd.Series([0], dtype="int64")
    smaller = (part["nbr"] < part["node"]).groupby(part["node"], sort=False).sum()
    larger = (part["nbr"] > part["node"]).groupby(part["node"], sort=False).sum()
    bad = (smaller >= 2) | ((smaller >= 1) & (larger >= 1))
    return pd.Series([int(bad.sum())], dtype="int64")


def _large_star(part: pd.DataFrame) -> pd.DataFrame:
    """Each node links its larger neighbours to the lowest of itself and its neighbours."""
    if part.empty:
        return _hi_lo_meta(part["node"].dtype)
    node, nbr = part["node"], part["nbr"]
    m = nbr.groupby(node, sort=False).transform("min")
    m = m.where(m < node, node)
    mask = (nbr > node).to_numpy()
    return pd.DataFrame({"hi": nbr.to_numpy()[mask], "lo": m.to_numpy()[mask]}).astype(
        {"hi": node.dtype, "lo": node.dtype})


def _small_star(part: pd.DataFrame) -> pd.DataFrame:
    """Each node ``hi`` and its smaller neighbours all link to the lowest of those neighbours."""
    part = part.drop_duplicates(ignore_index=True)
    if part.empty:
        return _hi_lo_meta(part["hi"].dtype)
    m = part.groupby("hi", sort=False)["lo"].transform("min")
    own = pd.DataFrame({"hi": part["hi"], "lo": m}).drop_duplicates()
    others = pd.DataFrame({"hi": part["lo"], "lo": m})[(part["lo"] != m).to_numpy()]
    return pd.concat([own, others], ignore_index=True).astype(
        {"hi": part["hi"].dtype, "lo": part["hi"].dtype})


def _star_labels(part: pd.DataFrame) -> pd.DataFrame:
    """(id, cluster) for each node: the lowest of itself and its neighbours."""
    if part.empty:
        return _labels_meta(part["node"].dtype, "cluster")
    m = part.groupby("node", sort=False)["nbr"].min()
    ids = m.index.to_series(index=range(len(m)))
    vals = pd.Series(m.to_numpy(), dtype=m.dtype)
    return pd.DataFrame({"id": ids.to_numpy(), "cluster": vals.where(vals < ids, ids).to_numpy()}).astype(
        {"id": part["node"].dtype, "cluster": part["node"].dtype})


def connected_components(edges: dd.DataFrame, max_iter: int = 50) -> dd.DataFrame:
    """Label every document that appears in ``edges`` with the lowest id of its component.

    ``edges`` has columns ``id`` and ``kept`` (as from :func:`band_edges`; the direction of
    an edge does not matter). Returns columns ``id`` and ``cluster``, one row per document that
    occurs in some edge; documents without edges are not in the result.

    Algorithm: the alternating large-star / small-star rounds of Kiveris et al., "Connected
    Components in MapReduce and Beyond" (SoCC 2014), on a partitioned edge list ``(hi, lo)``,
    ``hi > lo``. They rewrite the edges, keeping each component connected, until each component is
    a star whose centre is its lowest id; that takes O(log^2 n) rounds (in practice about
    ``log n``), where plain min-label propagation needs as many rounds as the component's
    diameter (199 for a chain of 200). Each round

    1. builds the adjacency list ``(node, nbr)`` (both directions of each edge), shuffled on
       ``node`` and de-duplicated per partition, and persists it (on the workers with a
       ``distributed`` client, so the task graph does not grow with the rounds);
    2. counts, per partition, the nodes that are not yet in star shape (two smaller neighbours,
       or both a smaller and a larger one) and sums the counts. This integer is the only value the
       driver computes; at 0 the loop stops;
    3. *large-star*: each node links each of its larger neighbours to the lowest of itself and its
       neighbours (per partition of the adjacency list);
    4. *small-star*: the edges are shuffled on ``hi``; each node and its smaller neighbours all
       link to the lowest of those neighbours (per partition).

    The cluster of a node is then the lowest of itself and its neighbours, read off the final
    adjacency list per partition. Raises :class:`RuntimeError` if ``max_iter`` rounds were not
    enough.

    Memory: each task holds one partition (or shuffle piece) of the edges, and one node's
    neighbours are held together in one task. Nothing is gathered on the driver but one integer
    per round.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    missing = {"id", "kept"} - set(edges.columns)
    if missing:
        raise ValueError(f"edges is missing columns {sorted(missing)}")
    dtype = _id_dtype(edges, "id")
    nparts = max(edges.npartitions, 1)

    current = edges[["id", "kept"]].map_partitions(_orient, meta=_hi_lo_meta(dtype))
    for _ in range(max_iter + 1):
        adj = _adjacency(current, nparts).persist()
        not_star = int(adj.map_partitions(_not_star_count, meta=pd.Series(dtype="int64")).sum().compute())
        if not_star == 0:
            return adj.map_partitions(_star_labels, meta=_labels_meta(dtype, "cluster"))
        large = adj.map_partitions(_large_star, meta=_hi_lo_meta(dtype))
        current = large.shuffle(on="hi", npartitions=nparts).map_partitions(
            _small_star, meta=_hi_lo_meta(dtype))
    raise RuntimeError(f"connected_components did not converge in {max_iter} rounds")


# --- 3. what to drop --------------------------------------------------------------------------

def duplicates_to_drop(components: dd.DataFrame) -> dd.DataFrame:
    """Every component member except the lowest id: columns ``id`` and ``kept_id``.

    ``components`` is :func:`connected_components`'s output (``id``, ``cluster``). The kept
    document of a component is its cluster id, its lowest id, which is not in the result.
    """
    out = components[components["id"] != components["cluster"]]
    return out.rename(columns={"cluster": "kept_id"})[["id", "kept_id"]]
