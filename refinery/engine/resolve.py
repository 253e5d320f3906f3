"""Dedup's corpus-wide resolution, as Dask dataframe graphs run on the driver.

The stages run in config order, each on the documents the earlier ones kept. Exact-key stages
shuffle on their key and keep one document per key; the band-key stage runs
:mod:`refinery.engine.lsh` on the band rows. Every step is a shuffle plus per-partition pandas
work, so no process holds all keys, pairs or labels. Outputs: ``dedup/clusters.parquet`` (one row
per document in a cluster of two or more), ``dedup/drops/shard=<id>/`` (what each shard loses),
``dedup/domains.parquet`` and the summary this returns.
"""

from __future__ import annotations

import time
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from refinery.config import PipelineConfig
from refinery.engine.lsh import candidate_edges, connected_components
from refinery.engine.output import remove_own
from refinery.stage import ExactKeyStage, SpanCutStage

TOP_DOMAINS = 20


def _exact_clusters(part: pd.DataFrame, column: str, keep: str, stage: str, same_text: bool) -> pd.DataFrame:
    """Members of every key group of two or more documents in ``part`` (whole groups, after the
    shuffle on ``column``), each with the group's kept id. Documents without a key take no part."""
    part = part[part[column].notna()]
    part = part[part.groupby(column, sort=False)["id"].transform("size") > 1]
    if keep == "lowest_id":
        order, ascending = [column, "id"], [True, True]
    else:
        order, ascending = [column, "warc_date", "id"], [True, keep == "oldest", True]
    part = part.sort_values(order, ascending=ascending, kind="stable")
    kept_id = part.groupby(column, sort=False)["id"].transform("first")
    jaccard = np.where(part["id"] == kept_id, np.nan, 1.0) if same_text else None
    return _cluster_frame(part["id"], kept_id, stage, jaccard)


def _cluster_frame(ids: pd.Series, kept_id: pd.Series, stage: str, jaccard=None) -> pd.DataFrame:
    ids = ids.to_numpy(dtype=object)
    kept_id = kept_id.to_numpy(dtype=object)
    return pd.DataFrame({
        "cluster_id": pd.Series([f"{stage}/{k}" for k in kept_id], dtype="string"),
        "stage": pd.Series([stage] * len(ids), dtype="string"),
        "id": pd.Series(ids, dtype="string"),
        "kept": pd.Series(ids == kept_id, dtype=bool),
        "kept_id": pd.Series(kept_id, dtype="string"),
        "jaccard_to_kept": pd.Series(np.full(len(ids), np.nan) if jaccard is None else jaccard, dtype="float64"),
    })


def _cluster_meta() -> pd.DataFrame:
    return _cluster_frame(pd.Series([], dtype="string"), pd.Series([], dtype="string"), "")


def _pair_jaccard(part: pd.DataFrame, ngram: int) -> pd.Series:
    from refinery.minhash import jaccard

    return pd.Series([jaccard(a, b, ngram) for a, b in zip(part["text_a"], part["text_b"])],
                     index=part.index, dtype="float64")


def _with_texts(pairs, texts, left: str, right: str):
    """Adds ``text_a`` (of ``left``) and ``text_b`` (of ``right``) by two distributed joins."""
    pairs = pairs.merge(texts.rename(columns={"id": left, "text": "text_a"}), on=left, how="left")
    return pairs.merge(texts.rename(columns={"id": right, "text": "text_b"}), on=right, how="left")


def _anti_join(df, dropped):
    """Rows of ``df`` whose id is not in ``dropped`` (a dataframe with an ``id`` column)."""
    marked = df.merge(dropped[["id"]].assign(_dropped=True), on="id", how="left")
    return marked[marked["_dropped"].isna()].drop(columns="_dropped")


def _band_clusters(stage, bands, texts, dropped):
    cfg = stage.config
    if dropped is not None:
        bands = _anti_join(bands, dropped)
    edges = candidate_edges(bands)
    if cfg.verify:
        edges = _with_texts(edges, texts, "id", "kept")
        edges = edges.assign(jaccard=edges.map_partitions(_pair_jaccard, cfg.ngram, meta=("jaccard", "float64")))
        edges = edges[edges["jaccard"] >= cfg.verify_threshold][["id", "kept"]]
    components = connected_components(edges)
    if not cfg.jaccard_to_kept:
        return components.map_partitions(
            lambda p: _cluster_frame(p["id"], p["cluster"], stage.name), meta=_cluster_meta())
    members = _with_texts(components, texts, "id", "cluster")

    def frame(part: pd.DataFrame) -> pd.DataFrame:
        scores = _pair_jaccard(part, cfg.ngram).to_numpy(copy=True)
        scores[(part["id"] == part["cluster"]).to_numpy()] = np.nan  # the kept document itself
        return _cluster_frame(part["id"], part["cluster"], stage.name, scores)

    return members.map_partitions(frame, meta=_cluster_meta())


def _parquet_files(folders: list[str]) -> list[str]:
    return [str(p) for folder in folders for p in sorted(Path(folder).glob("*.parquet"))]


def resolve(config: PipelineConfig, out_dir: str, keys_files: list[str], bands_files: list[str],
            text_files: list[str]) -> dict:
    """Phase 2: runs the dedup stages over all shards' keys; returns the dedup summary. The files
    are every shard's keys, band rows and (filtered) documents, in the same shard order.

    Runs on whatever Dask scheduler is active (a ``distributed`` client if one exists)."""
    out = Path(out_dir)
    dedup_dir = out / "dedup"
    started = time.perf_counter()
    summary = {"stages": [spec.name for spec in config.dedup]}
    # the span-cut stage cuts text; it runs after this, per shard group (find_cuts)
    stages = [s for s in (spec.build() for spec in config.dedup) if not isinstance(s, SpanCutStage)]
    work = dedup_dir / "_work"
    remove_own(work)
    for name in ("clusters.parquet", "drops", "domains.parquet"):
        remove_own(dedup_dir / name)

    keys = dd.read_parquet(keys_files)
    texts = dd.read_parquet(text_files, columns=["id", "text"])
    nparts = max(keys.npartitions, 1)
    stage_tables = []
    dropped = None  # ids dropped by the stages so far, read back from disk
    for stage in stages:
        if isinstance(stage, ExactKeyStage):
            alive = keys if dropped is None else _anti_join(keys, dropped)
            columns = ["id", "warc_date", stage.name]
            clusters = alive[columns].shuffle(on=stage.name, npartitions=nparts).map_partitions(
                _exact_clusters, stage.name, stage.config.keep, stage.name, stage.keys_equal_text,
                meta=_cluster_meta())
        else:
            bands = dd.read_parquet(bands_files)
            clusters = _band_clusters(stage, bands, texts, dropped)
        table = str(work / f"{stage.name}.parquet")
        clusters.to_parquet(table, write_index=False)
        stage_tables.append(table)
        done = dd.read_parquet(_parquet_files(stage_tables))
        dropped = done[~done["kept"]][["id"]]

    if stage_tables:
        info = keys[["id", "shard", "url", "language", "domain"]]
        clusters = dd.read_parquet(_parquet_files(stage_tables)).merge(info, on="id", how="left")
        losers = clusters[~clusters["kept"]]
        drops = losers[["shard", "id", "kept_id", "stage"]]
        removed = losers[["id", "stage"]].rename(columns={"stage": "removed_by"})
        per_doc = keys[["id", "language", "domain"]].merge(removed, on="id", how="left")
        per_doc = per_doc.assign(removed=(~per_doc["removed_by"].isna()).astype("int64"))
        domains = per_doc.groupby("domain").agg(documents=("id", "count"), removed=("removed", "sum"),
                                                split_out=nparts)
        sizes = clusters.groupby(["stage", "cluster_id"]).size(split_out=nparts).to_frame("size").reset_index()
        writes = [
            clusters.to_parquet(str(dedup_dir / "clusters.parquet"), write_index=False, compute=False),
            drops.to_parquet(str(dedup_dir / "drops"), partition_on=["shard"], write_index=False, compute=False),
            domains.reset_index().to_parquet(str(dedup_dir / "domains.parquet"), write_index=False, compute=False),
        ]
        size_counts, languages, by_stage, top, *_ = dask.compute(
            sizes.groupby(["stage", "size"]).size(),
            per_doc.groupby(["language", "removed_by"], dropna=False).size(),
            clusters.groupby(["stage", "kept"]).size(),
            domains[domains["removed"] > 0].assign(
                rate=lambda d: d["removed"] / d["documents"]).nlargest(TOP_DOMAINS, ["removed", "documents"]),
            *writes,
        )
        summary.update(_summarise(stages, size_counts, languages, by_stage, top))
    remove_own(work)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _summarise(stages, size_counts: pd.Series, languages: pd.Series, by_stage: pd.Series, top: pd.DataFrame) -> dict:
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
    per_language: dict[str, dict] = {}
    for (language, removed_by), n in languages.items():
        row = per_language.setdefault(str(language) if pd.notna(language) else "", {"documents": 0, "removed": 0})
        row["documents"] += int(n)
        if pd.notna(removed_by):
            row["removed"] += int(n)
            row[f"removed_by_{removed_by}"] = int(n)
    for row in per_language.values():
        row["duplicate_rate"] = round(row["removed"] / row["documents"], 6) if row["documents"] else 0.0
    top_domains = [
        {"domain": domain, "documents": int(r["documents"]), "removed": int(r["removed"]),
         "duplicate_rate": round(float(r["rate"]), 6)}
        for domain, r in top.iterrows()
    ]
    return {"per_stage": per_stage, "per_language": dict(sorted(per_language.items())), "top_domains": top_domains}


