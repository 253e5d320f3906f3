"""LSH clustering for the fuzzy dedup, as partitioned Dask dataframe operations.

:mod:`refinery.minhash` turns each document into ``bands`` uint64 LSH keys. This module turns those
keys into the documents to drop, without any process ever holding all keys, all edges or all
labels. Every step is a Dask dataframe operation: shuffles (hash repartitions) followed by
per-partition pandas work.

1. :func:`refinery.pipeline.keys.band_rows` lays out one shard's keys as a long Arrow table, one row per (doc, band), with
   columns ``band``, ``key`` and ``id``. The pipeline writes one such table per input shard.
2. :func:`candidate_edges` shuffles the rows on ``(band, key)``, so that every bucket (documents
   sharing one band key) lands whole in one partition. Each bucket of two or more documents gives
   star edges from its lowest id to each other member. The edges are then shuffled on ``id`` and
   de-duplicated per partition. Output columns: ``id``, ``kept``, with ``kept < id``.
3. :func:`connected_components` labels each document that appears in an edge with the lowest id
   of its connected component. It is iterative (large-star / small-star rounds, see its
   docstring): each round is two shuffles and per-partition pandas work on the edge list, and the
   only thing the driver receives is one integer per round, the number of nodes not yet settled.
4. :func:`duplicates_to_drop` keeps the lowest id of each component and lists the others, with the
   kept document's id.

"Lowest id" is the ordinary string order (code point order, the same as UTF-8 byte order), so
the results are deterministic: they do not depend on the number of partitions, on the order of the
input rows or on the scheduler. Only the row order of the outputs is unspecified; sort them if it
matters.

Memory: every step works on one partition at a time (or, in a shuffle, on one piece of one).
One task holds one hash partition of the rows or edges, so a whole LSH bucket (all documents with
one band key) and, in :func:`connected_components`, all neighbours of one node are in one task.
A huge bucket (e.g. one boilerplate page copied a million times) is therefore one big task. No
function computes anything on the driver except :func:`connected_components`'s one integer per
round. Without a ``distributed`` client Dask's default shuffle method is ``"disk"``; set
``dataframe.shuffle.method`` (``"tasks"`` for small data, ``"p2p"`` with a cluster) to suit.
"""

from __future__ import annotations

import dask.dataframe as dd
import pandas as pd

__all__ = ["candidate_edges", "connected_components", "duplicates_to_drop"]


# --- helpers ----------------------------------------------------------------------------------

def _id_dtype(df: dd.DataFrame, column: str):
    return df._meta[column].dtype


def _edges_meta(dtype) -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype=dtype), "kept": pd.Series(dtype=dtype)})


def _labels_meta(dtype, name: str = "label") -> pd.DataFrame:
    return pd.DataFrame({"id": pd.Series(dtype=dtype), name: pd.Series(dtype=dtype)})


def _bucket_star_edges(part: pd.DataFrame) -> pd.DataFrame:
    """Star edges of every bucket wholly inside ``part``: (other id, lowest id of the bucket)."""
    if part.empty:
        return _edges_meta(part["id"].dtype)
    kept = part.groupby(["band", "key"], sort=False)["id"].transform("min")
    mask = (part["id"] != kept).to_numpy()
    out = pd.DataFrame({"id": part["id"].to_numpy()[mask], "kept": kept.to_numpy()[mask]})
    out = out.astype({"id": part["id"].dtype, "kept": part["id"].dtype})
    return out.drop_duplicates(ignore_index=True)


def _drop_duplicate_rows(part: pd.DataFrame) -> pd.DataFrame:
    return part.drop_duplicates(ignore_index=True)


# --- 2. candidate edges -----------------------------------------------------------------------

def candidate_edges(bands: dd.DataFrame) -> dd.DataFrame:
    """Star edges of every LSH bucket with two or more documents, de-duplicated.

    ``bands`` has columns ``band``, ``key`` and ``id`` (e.g. :func:`band_rows` tables read with
    :func:`dask.dataframe.read_parquet`). It is shuffled on ``(band, key)``; each partition then
    groups its rows by bucket and emits, for each bucket, an edge from its lowest id to each other
    id in it. The same pair can come from several buckets in different partitions, so the edges
    are shuffled on ``id`` and de-duplicated per partition.

    Returns a dataframe with columns ``id`` and ``kept`` (``kept < id``, the bucket's lowest id),
    one row per distinct edge.
    """
    missing = {"band", "key", "id"} - set(bands.columns)
    if missing:
        raise ValueError(f"bands is missing columns {sorted(missing)}")
    dtype = _id_dtype(bands, "id")
    nparts = bands.npartitions
    by_bucket = bands[["band", "key", "id"]].shuffle(on=["band", "key"], npartitions=nparts)
    edges = by_bucket.map_partitions(_bucket_star_edges, meta=_edges_meta(dtype))
    return edges.shuffle(on="id", npartitions=nparts).map_partitions(
        _drop_duplicate_rows, meta=_edges_meta(dtype))


# --- 3. connected components ------------------------------------------------------------------

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

    ``edges`` has columns ``id`` and ``kept`` (as from :func:`candidate_edges`; the direction of
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


# --- 4. what to drop --------------------------------------------------------------------------

def duplicates_to_drop(components: dd.DataFrame) -> dd.DataFrame:
    """Every component member except the lowest id: columns ``id`` and ``kept_id``.

    ``components`` is :func:`connected_components`'s output (``id``, ``cluster``). The kept
    document of a component is its cluster id, its lowest id, which is not in the result.
    """
    out = components[components["id"] != components["cluster"]]
    return out.rename(columns={"cluster": "kept_id"})[["id", "kept_id"]]
