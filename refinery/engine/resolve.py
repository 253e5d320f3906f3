"""Dedup's corpus-wide resolution, as Dask dataframe graphs run on the driver.

The stages run in config order, each on the documents the earlier ones kept. Exact-key stages
shuffle on their key and keep one document per key; the band-key stage runs
:mod:`refinery.engine.lsh` on the shards' band files and keeps the lowest internal key of each
component. Every step is a shuffle plus per-partition pandas
work, so no process holds all keys, pairs or labels. Outputs: ``dedup/clusters.parquet`` (one row
per document in a cluster of two or more), ``dedup/drops/shard=<id>/`` (what each shard loses),
``dedup/domains.parquet`` and the summary this returns.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from refinery.config import PipelineConfig
from refinery.engine.lsh import FullKeys, band_edges, connected_components
from refinery.engine.output import remove_own
from refinery.stage import BandKeyStage, ExactKeyStage

TOP_DOMAINS = 20


def _exact_clusters(part: pd.DataFrame, column: str, keep: str, stage: str, same_text: bool) -> pd.DataFrame:
    """Members of every key group of two or more documents in ``part`` (whole groups, after the
    shuffle on ``column``), each with the group's kept document. Documents without a key take no
    part. The internal ``key`` starts with the id, so ordering by it keeps the lowest id."""
    part = part[part[column].notna()]
    part = part[part.groupby(column, sort=False)["key"].transform("size") > 1]
    if keep == "lowest_id":
        order, ascending = [column, "key"], [True, True]
    else:
        order, ascending = [column, "warc_date", "key"], [True, keep == "oldest", True]
    part = part.sort_values(order, ascending=ascending, kind="stable")
    groups = part.groupby(column, sort=False)
    kept_key, kept_id = groups["key"].transform("first"), groups["id"].transform("first")
    jaccard = np.where(part["key"] == kept_key, np.nan, 1.0) if same_text else None
    return _cluster_frame(part["key"], kept_key, part["id"], kept_id, stage, jaccard)


def _cluster_frame(keys: pd.Series, kept_key: pd.Series, ids: pd.Series, kept_id: pd.Series, stage: str,
                   jaccard=None) -> pd.DataFrame:
    keys, kept_key = keys.to_numpy(dtype=object), kept_key.to_numpy(dtype=object)
    kept_id = kept_id.to_numpy(dtype=object)
    return pd.DataFrame({
        "cluster_id": pd.Series([f"{stage}/{k}" for k in kept_id], dtype="string"),
        "stage": pd.Series([stage] * len(keys), dtype="string"),
        "id": pd.Series(ids.to_numpy(dtype=object), dtype="string"),
        "kept": pd.Series(keys == kept_key, dtype=bool),
        "kept_id": pd.Series(kept_id, dtype="string"),
        "jaccard_to_kept": pd.Series(np.full(len(keys), np.nan) if jaccard is None else jaccard, dtype="float64"),
        "key": pd.Series(keys, dtype="string"),  # internal keys: unique even where web ids repeat
        "kept_key": pd.Series(kept_key, dtype="string"),
    })


def _cluster_meta() -> pd.DataFrame:
    empty = pd.Series([], dtype="string")
    return _cluster_frame(empty, empty, empty, empty, "")


MAX_BAND_TASK_BYTES = 256 * 2**20  # what one band task may hold (see lsh.band_tasks)
_NUMBER = np.int64(32)  # a document's number: shard index << 32 | row


PARTITION_DOCUMENTS = 50_000  # documents per dataframe partition: shuffles scale with the data, not the shards


def partitions(documents: list[int], per_partition: int = PARTITION_DOCUMENTS) -> list[tuple[int, ...]]:
    """Consecutive shard indices grouped into partitions of about ``per_partition`` documents, so
    that 500 small shards are one partition, not 500 (whose shuffles would be 500-way)."""
    groups, current, size = [], [], 0
    for index, count in enumerate(documents):
        if current and size + count > per_partition:
            groups.append(tuple(current))
            current, size = [], 0
        current.append(index)
        size += count
    return [*groups, tuple(current)] if current else groups


def _read_keys(indices: tuple[int, ...], paths: tuple[str, ...]) -> pd.DataFrame:
    """Some shards' keys files, with each document's number (``doc``)."""
    frames = []
    for index in indices:
        frame = pd.read_parquet(paths[index])
        frame.insert(1, "doc", (np.int64(index) << _NUMBER) | np.arange(len(frame), dtype=np.int64))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _wanted_texts(index: int, paths: tuple[str, ...], wanted: str) -> pd.DataFrame:
    """(doc, text) of the documents of shard ``index`` listed under ``wanted/shard=<index>/``: one
    task reads one shard's texts and keeps only those, so no task holds more than one shard."""
    import pyarrow.parquet as pq

    listed = Path(wanted) / f"shard={index}"
    files = sorted(listed.glob("*.parquet")) if listed.is_dir() else []
    docs = np.unique(np.concatenate([pq.read_table(f, columns=["doc"]).column("doc").to_numpy() for f in files])
                     ) if files else np.empty(0, dtype=np.int64)
    if not len(docs):
        return pd.DataFrame({"doc": pd.Series([], dtype="int64"), "text": pd.Series([], dtype="string")})
    rows = (docs & np.int64(0xFFFFFFFF)).astype(np.int64)
    text = pq.read_table(paths[index], columns=["text"]).column("text").take(rows).to_pylist()
    return pd.DataFrame({"doc": docs, "text": pd.Series(text, dtype="string")})


def _texts_of(docs, text_files: list[str], folder: Path):
    """(doc, text) of the documents in ``docs`` (a dataframe with a ``doc`` column): their numbers
    go to ``folder`` by shard, then each shard's task reads its texts and keeps the listed ones.
    Texts are never shuffled, and the driver never holds the list."""
    numbers = docs[["doc"]].assign(shard=docs["doc"] >> _NUMBER)
    numbers.to_parquet(str(folder), partition_on=["shard"], write_index=False)
    meta = pd.DataFrame({"doc": pd.Series([], dtype="int64"), "text": pd.Series([], dtype="string")})
    found = dd.from_map(_wanted_texts, range(len(text_files)), paths=tuple(text_files), wanted=str(folder), meta=meta)
    return found.repartition(npartitions=max(1, docs.npartitions))


def _renamed(frame, columns: dict[str, str]):
    """``frame.rename(columns=...)`` as an opaque per-partition step: dask-expr's rename of a
    shuffled frame loses track of the shuffle's columns, and a later merge fails on it."""
    return frame.map_partitions(pd.DataFrame.rename, columns=columns, meta=frame._meta.rename(columns=columns))


def _recomputed_band_keys(index: int, rows: np.ndarray, stage, text_files: tuple[str, ...]) -> np.ndarray:
    """The full band keys of some rows of shard ``index``, computed again from their text as the
    keys phase did (in batches of the stage's ``batch_size``)."""
    import pyarrow.parquet as pq

    texts = pq.read_table(text_files[index], columns=["text"]).column("text").take(rows)
    size = stage.config.batch_size
    keys = [stage.hasher.band_keys(stage.hasher.signatures(texts.slice(start, size).to_pylist()))
            for start in range(0, len(rows), size)]
    return np.concatenate(keys) if keys else np.empty((0, stage.config.bands), dtype=np.uint64)


def _key_numbers(part: pd.DataFrame, shard_index: dict[str, int]) -> pd.DataFrame:
    """Document numbers of internal keys (``id\0shard\0row``)."""
    numbers = [(shard_index[shard] << 32) | int(row) for shard, row in
               (key.rsplit("\x00", 2)[1:] for key in part["key"].tolist())]
    return pd.DataFrame({"doc": np.asarray(numbers, dtype=np.int64)})


def _pair_jaccard(part: pd.DataFrame, ngram: int) -> pd.Series:
    from refinery.minhash import jaccard

    return pd.Series([jaccard(a, b, ngram) for a, b in zip(part["text_a"], part["text_b"])],
                     index=part.index, dtype="float64")


def _with(pairs, table, column: str, left: str, right: str, suffix: tuple[str, str]):
    """Adds ``column`` of ``table`` (keyed by ``key``) for ``left`` and for ``right``, as
    ``column + suffix[0]`` and ``column + suffix[1]``, by two distributed joins."""
    pairs = pairs.merge(_renamed(table, {"key": left, column: column + suffix[0]}), on=left, how="left")
    return pairs.merge(_renamed(table, {"key": right, column: column + suffix[1]}), on=right, how="left")


def _anti_join(df, dropped, on: str = "key"):
    """Rows of ``df`` whose ``on`` column is not among ``dropped``'s keys."""
    marked = df.merge(dropped[["key"]].rename(columns={"key": on}).assign(_dropped=True), on=on, how="left")
    return marked[marked["_dropped"].isna()].drop(columns="_dropped")


def _kept_lowest_key(part: pd.DataFrame) -> pd.DataFrame:
    """Whole components (shuffled on ``cluster``): each member with its component's lowest key."""
    part = part.sort_values(["cluster", "key"], kind="stable")
    groups = part.groupby("cluster", sort=False)
    return part.assign(kept_key=groups["key"].transform("first"), kept_id=groups["doc_id"].transform("first"),
                       kept_doc=groups["doc"].transform("first"))


def _band_clusters(stage, band_files, documents, keys, text_files, shard_index, dropped, work: Path, nparts: int):
    """The band-key stage: LSH over the shards' band files, on document numbers; each component
    keeps its lowest internal key, so the choice does not depend on sharding or bucket centres."""
    cfg = stage.config
    dropped_path = None
    if dropped is not None:
        dropped_path = str(work / f"{stage.name}-dropped.parquet")
        dropped.map_partitions(_key_numbers, shard_index, meta=pd.DataFrame({"doc": pd.Series([], dtype="int64")})
                               ).to_parquet(dropped_path, write_index=False)
    full_keys = FullKeys(partial(_recomputed_band_keys, stage=stage, text_files=tuple(text_files)),
                         str(work / f"{stage.name}-candidates"))
    edges = band_edges(band_files, documents, cfg.bands, MAX_BAND_TASK_BYTES, dropped_path, full_keys=full_keys)
    if cfg.verify:
        edges = edges.persist()
        pair_texts = _texts_of(dd.concat([_renamed(edges[["id"]], {"id": "doc"}), _renamed(edges[["kept"]], {"kept": "doc"})]),
                               text_files, work / f"{stage.name}-pair-docs")
        edges = _with(_renamed(edges, {"id": "a", "kept": "b"}), _renamed(pair_texts, {"doc": "key"}),
                      "text", "a", "b", ("_a", "_b"))
        edges = edges.assign(jaccard=edges.map_partitions(_pair_jaccard, cfg.ngram, meta=("jaccard", "float64")))
        edges = edges[edges["jaccard"] >= cfg.verify_threshold][["a", "b"]].rename(columns={"a": "id", "b": "kept"})
    components = _renamed(connected_components(edges), {"id": "doc"})
    names = keys[["doc", "key", "id"]].rename(columns={"id": "doc_id"})
    members = names.merge(components, on="doc", how="inner")
    # partitions follow the corpus: a member carries two texts for the Jaccard, so one partition
    # for all members would grow with the corpus
    members = members.shuffle(on="cluster", npartitions=nparts).map_partitions(
        _kept_lowest_key, meta=members._meta.assign(kept_key=pd.Series([], dtype="string"),
                                                    kept_id=pd.Series([], dtype="string"),
                                                    kept_doc=pd.Series([], dtype="int64")))
    if cfg.jaccard_to_kept:
        members = members.persist()  # listed for the text lookup, then joined: computed once
        member_texts = _texts_of(dd.concat([members[["doc"]], _renamed(members[["kept_doc"]], {"kept_doc": "doc"})]),
                                 text_files, work / f"{stage.name}-member-docs")
        members = _with(members, _renamed(member_texts, {"doc": "key"}), "text", "doc", "kept_doc", ("_a", "_b"))

    def frame(part: pd.DataFrame) -> pd.DataFrame:
        scores = None
        if cfg.jaccard_to_kept:
            scores = _pair_jaccard(part, cfg.ngram).to_numpy(copy=True)
            scores[(part["key"] == part["kept_key"]).to_numpy()] = np.nan  # the kept document itself
        return _cluster_frame(part["key"], part["kept_key"], part["doc_id"], part["kept_id"], stage.name, scores)

    return members.map_partitions(frame, meta=_cluster_meta())


def _parquet_files(folders: list[str]) -> list[str]:
    return [str(p) for folder in folders for p in sorted(Path(folder).glob("*.parquet"))]


def resolve(config: PipelineConfig, out_dir: str, keys_files: list[str], bands_files: list[str],
            text_files: list[str], shard_ids: list[str]) -> dict:
    """Phase 2: runs the dedup stages over all shards' keys; returns the dedup summary. The files
    are every shard's keys, band rows and (filtered) documents, in the order of ``shard_ids``.
    Every decision is on the internal key (:func:`refinery.document.document_key`).

    Runs on whatever Dask scheduler is active (a ``distributed`` client if one exists)."""
    out = Path(out_dir)
    dedup_dir = out / "dedup"
    started = time.perf_counter()
    summary = {"stages": [spec.name for spec in config.dedup]}
    # the span-cut stage cuts text after this, per shard group (find_cuts); a selection ranks what is left
    stages = [s for s in (spec.build() for spec in config.dedup) if isinstance(s, (ExactKeyStage, BandKeyStage))]
    work = dedup_dir / "_work"
    remove_own(work)
    for name in ("clusters.parquet", "drops", "domains.parquet"):
        remove_own(dedup_dir / name)

    import pyarrow.parquet as pq

    counts = [pq.ParquetFile(path).metadata.num_rows for path in keys_files]
    groups = partitions(counts)
    keys = dd.from_map(_read_keys, groups, paths=tuple(keys_files))
    shard_index = {shard: index for index, shard in enumerate(shard_ids)}
    documents = sum(counts)
    nparts = max(keys.npartitions, 1)
    stage_tables = []
    dropped = None  # keys dropped by the stages so far, read back from disk
    summary["stage_seconds"] = {}  # each stage's own clustering; the rest of `seconds` is shared
    for stage in stages:
        began = time.perf_counter()
        if isinstance(stage, ExactKeyStage):
            alive = keys if dropped is None else _anti_join(keys, dropped)
            columns = ["key", "id", "warc_date", stage.name]
            clusters = alive[columns].shuffle(on=stage.name, npartitions=nparts).map_partitions(
                _exact_clusters, stage.name, stage.config.keep, stage.name, stage.keys_equal_text,
                meta=_cluster_meta())
        else:
            clusters = _band_clusters(stage, bands_files, documents, keys, text_files, shard_index, dropped, work, nparts)
        table = str(work / f"{stage.name}.parquet")
        clusters.to_parquet(table, write_index=False)
        summary["stage_seconds"][stage.name] = round(time.perf_counter() - began, 3)
        stage_tables.append(table)
        done = dd.read_parquet(_parquet_files(stage_tables))
        dropped = done[~done["kept"]][["key"]]

    if stage_tables:
        # clusters.parquet first, alone: its join with every document's info is the one shuffle
        # here that moves all keys; what follows reads the written clusters back
        info = keys[["key", "shard", "url", "language", "domain"]]
        table = str(dedup_dir / "clusters.parquet")
        dd.read_parquet(_parquet_files(stage_tables)).merge(info, on="key", how="left").to_parquet(
            table, write_index=False)
        clusters = dd.read_parquet(_parquet_files([table]))
        losers = clusters[~clusters["kept"]]
        removed = losers.groupby("domain").size().to_frame("removed")
        domains = keys.groupby("domain").size(split_out=nparts).to_frame("documents").join(removed, how="left")
        domains = domains.assign(removed=domains["removed"].fillna(0).astype("int64"))
        sizes = clusters.groupby(["stage", "kept_key"]).size(split_out=nparts).to_frame("size").reset_index()
        writes = [
            losers[["shard", "key", "kept_id", "stage"]].to_parquet(str(dedup_dir / "drops"), partition_on=["shard"],
                                                                     write_index=False, compute=False),
            domains.reset_index().to_parquet(str(dedup_dir / "domains.parquet"), write_index=False, compute=False),
        ]
        size_counts, languages, removed_languages, by_stage, top, *_ = dask.compute(
            sizes.groupby(["stage", "size"]).size(),
            keys.groupby("language", dropna=False).size(),
            losers.groupby(["language", "stage"], dropna=False).size(),
            clusters.groupby(["stage", "kept"]).size(),
            domains[domains["removed"] > 0].assign(
                rate=lambda d: d["removed"] / d["documents"]).nlargest(TOP_DOMAINS, ["removed", "documents"]),
            *writes,
        )
        summary.update(_summarise(stages, size_counts, languages, removed_languages, by_stage, top))
    remove_own(work)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _summarise(stages, size_counts: pd.Series, languages: pd.Series, removed_languages: pd.Series,
               by_stage: pd.Series, top: pd.DataFrame) -> dict:
    per_stage = {}
    for stage in stages:
        sizes = {int(size): int(n) for (name, size), n in size_counts.items() if name == stage.name}
        per_stage[stage.name] = {
            "reason": stage.reason,
            "clusters": int(by_stage.get((stage.name, True), 0)),
            "documents_in_clusters": int(by_stage.get((stage.name, True), 0) + by_stage.get((stage.name, False), 0)),
            "removed": int(by_stage.get((stage.name, False), 0)),
            "cluster_sizes": {str(size): n for size, n in sorted(sizes.items())},
        }

    def name(language) -> str:
        return str(language) if pd.notna(language) else ""

    per_language: dict[str, dict] = {}
    for language, n in languages.items():
        row = per_language.setdefault(name(language), {"documents": 0, "removed": 0})
        row["documents"] += int(n)
    for (language, removed_by), n in removed_languages.items():
        row = per_language.setdefault(name(language), {"documents": 0, "removed": 0})
        row["removed"] += int(n)
        row[f"removed_by_{removed_by}"] = row.get(f"removed_by_{removed_by}", 0) + int(n)
    for row in per_language.values():
        row["duplicate_rate"] = round(row["removed"] / row["documents"], 6) if row["documents"] else 0.0
    top_domains = [
        {"domain": domain, "documents": int(r["documents"]), "removed": int(r["removed"]),
         "duplicate_rate": round(float(r["rate"]), 6)}
        for domain, r in top.iterrows()
    ]
    return {"per_stage": per_stage, "per_language": dict(sorted(per_language.items())), "top_domains": top_domains}


