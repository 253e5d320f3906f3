"""Corpus-wide dedup: per-shard keys, a Dask resolution over all shards, per-shard rewrite.

Three phases, after the per-shard chain has written ``filtered/<shard>.parquet``:

1. :func:`write_keys` (one task per shard): each dedup stage's keys for every document,
   streamed in batches. ``dedup/keys/<shard>.parquet`` holds one row per document (id, url,
   date, language, domain and one hex key column per exact stage); ``dedup/bands/<shard>.parquet``
   holds the MinHash band keys as rows (band, key, id).
2. :func:`resolve` (on the driver, as Dask dataframe graphs): the stages run in config order, each
   on the documents the earlier ones kept. Exact stages shuffle on their key and keep one document
   per key; the MinHash stage runs :mod:`refinery.lsh` on the band rows. Every step is a shuffle
   plus per-partition pandas work, so no process holds all keys, pairs or labels. Outputs:
   ``dedup/clusters.parquet`` (one row per document in a cluster of two or more),
   ``dedup/drops/shard=<id>/`` (what each shard loses), ``dedup/domains.parquet`` and a summary.
3. :func:`apply_drops` (one task per shard): rewrites ``documents/<shard>.parquet`` without the
   dropped documents, with funnel counts and dropped samples per dedup stage.

Each phase has a marker under ``_markers/`` so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.config import PipelineConfig
from refinery.document import Document, Drop
from refinery.io import InputShard, atomic_path, write_json_atomic
from refinery.shard import DOCUMENT_SCHEMA, DropSampler, TextSize, document_rows, shard_paths, text_size
from refinery.stats import StageStats

TOP_DOMAINS = 20


def dedup_paths(out: Path, shard: InputShard) -> dict[str, Path]:
    sid = shard.shard_id
    return {
        "keys": out / "dedup" / "keys" / f"{sid}.parquet",
        "bands": out / "dedup" / "bands" / f"{sid}.parquet",
        "keys_marker": out / "_markers" / "keys" / f"{sid}.done",
        "documents": out / "documents" / f"{sid}.parquet",
        "stats": out / "stats" / "dedup" / f"{sid}.json",
        "apply_marker": out / "_markers" / "apply" / f"{sid}.done",
    }


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def domain_of(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


def _iter_documents(path: Path, batch_size: int):
    """Batches of Documents from one of our Parquet files, one row group at a time."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size):
        for row in batch.to_pylist():
            yield Document(**row)


# --- 1. per-shard keys --------------------------------------------------------------------------

def _keys_schema(exact_stages: list[str]) -> pa.Schema:
    return pa.schema([
        ("id", pa.string()), ("shard", pa.string()), ("url", pa.string()), ("warc_date", pa.string()),
        ("language", pa.string()), ("domain", pa.string()),
        *((name, pa.string()) for name in exact_stages),
    ])


BANDS_SCHEMA = pa.schema([("band", pa.int32()), ("key", pa.uint64()), ("id", pa.string())])


def write_keys(shard: InputShard, config: PipelineConfig, out_dir: str, map_result: dict | None = None) -> dict:
    """Phase 1 for one shard: dedup keys of every document the chain kept."""
    from refinery.lsh import band_rows
    from refinery.stage import batched

    out = Path(out_dir)
    paths = dedup_paths(out, shard)
    source = shard_paths(out, shard, deduplicated=True)["documents"]
    state = {"fingerprint": config.dedup_fingerprint(), "source_bytes": _size(source)}
    marker = _read_marker(paths["keys_marker"])
    if marker and {k: marker.get(k) for k in state} == state and all(
            _size(paths[k]) == marker.get(f"{k}_bytes") for k in ("keys", "bands")):
        return marker

    stages = [spec.build() for spec in config.dedup]
    exact = [s for s in stages if s.method == "exact"]
    minhash = next((s for s in stages if s.method == "minhash"), None)
    started = time.perf_counter()
    documents = 0
    with atomic_path(paths["keys"]) as keys_tmp, atomic_path(paths["bands"]) as bands_tmp:
        with pq.ParquetWriter(keys_tmp, _keys_schema([s.name for s in exact]), compression="zstd") as keys_out, \
                pq.ParquetWriter(bands_tmp, BANDS_SCHEMA, compression="zstd") as bands_out:
            batch_size = minhash.config.batch_size if minhash else 1024
            for docs in batched(_iter_documents(source, batch_size), batch_size):
                documents += len(docs)
                keys_out.write_table(pa.table({
                    "id": [d.id for d in docs], "shard": [shard.shard_id] * len(docs),
                    "url": [d.url for d in docs], "warc_date": [d.warc_date for d in docs],
                    "language": [d.language for d in docs], "domain": [domain_of(d.url) for d in docs],
                    **{s.name: [_hex(s.exact_key(d)) for d in docs] for s in exact},
                }, schema=keys_out.schema))
                if minhash is not None:
                    bands_out.write_table(band_rows([d.id for d in docs], minhash.band_keys(docs)))
    result = {**state, "shard_id": shard.shard_id, "documents": documents,
              "seconds": round(time.perf_counter() - started, 3),
              "keys_bytes": _size(paths["keys"]), "bands_bytes": _size(paths["bands"])}
    write_json_atomic(paths["keys_marker"], result)
    return result


# --- 2. corpus-wide resolution ------------------------------------------------------------------

def _hex(key: bytes | None) -> str | None:
    return None if key is None else key.hex()


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


def _minhash_clusters(stage, bands, texts, dropped):
    from refinery.lsh import candidate_edges, connected_components

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


def resolve_digest(config: PipelineConfig, keys_results: list[dict]) -> str:
    body = [config.dedup_fingerprint(), sorted((r["shard_id"], r["keys_bytes"], r["bands_bytes"]) for r in keys_results)]
    return hashlib.sha256(json.dumps(body).encode()).hexdigest()[:16]


def resolve(config: PipelineConfig, out_dir: str, shards: list[InputShard], keys_results: list[dict]) -> dict:
    """Phase 2: runs the dedup stages over all shards' keys; returns the dedup summary.

    Runs on whatever Dask scheduler is active (a ``distributed`` client if one exists)."""
    import shutil

    import dask
    import dask.dataframe as dd

    out = Path(out_dir)
    dedup_dir = out / "dedup"
    marker_path = out / "_markers" / "dedup.done"
    digest = resolve_digest(config, keys_results)
    marker = _read_marker(marker_path)
    if marker and marker.get("digest") == digest:
        return marker["summary"]
    marker_path.unlink(missing_ok=True)

    started = time.perf_counter()
    summary = {"stages": [spec.name for spec in config.dedup]}
    # the substring stage cuts text; it runs after this, per shard group (find_cuts)
    stages = [s for s in (spec.build() for spec in config.dedup) if s.method != "substring"]
    paths = [dedup_paths(out, shard) for shard in shards]
    work = dedup_dir / "_work"
    shutil.rmtree(work, ignore_errors=True)
    for name in ("clusters.parquet", "drops", "domains.parquet"):
        shutil.rmtree(dedup_dir / name, ignore_errors=True)

    keys = dd.read_parquet([str(p["keys"]) for p in paths])
    texts = dd.read_parquet([str(shard_paths(out, s, deduplicated=True)["documents"]) for s in shards],
                            columns=["id", "text"])
    nparts = max(keys.npartitions, 1)
    stage_tables = []
    dropped = None  # ids dropped by the stages so far, read back from disk
    for stage in stages:
        if stage.method == "exact":
            alive = keys if dropped is None else _anti_join(keys, dropped)
            columns = ["id", "warc_date", stage.name]
            clusters = alive[columns].shuffle(on=stage.name, npartitions=nparts).map_partitions(
                _exact_clusters, stage.name, stage.config.keep, stage.name, stage.keys_equal_text,
                meta=_cluster_meta())
        else:
            bands = dd.read_parquet([str(p["bands"]) for p in paths])
            clusters = _minhash_clusters(stage, bands, texts, dropped)
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
    shutil.rmtree(work, ignore_errors=True)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    write_json_atomic(marker_path, {"digest": digest, "summary": summary})
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


# --- 2b. exact substrings, per shard group -----------------------------------------------------

SPANS_SCHEMA = pa.schema([("id", pa.string()), ("url", pa.string()), ("tokens", pa.int64()), ("text", pa.string())])
CUTS_SCHEMA = pa.schema([("id", pa.string()), ("starts", pa.list_(pa.int64())), ("ends", pa.list_(pa.int64()))])
SPAN_SAMPLE_CHARS = 2000


def substring_stage(config: PipelineConfig):
    """The config's substring dedup stage, built, or None."""
    return next((s for s in (spec.build() for spec in config.dedup) if s.method == "substring"), None)


def substring_groups(config: PipelineConfig, shards: list[InputShard]) -> list[list[InputShard]]:
    """Consecutive shards, ``shards_per_group`` at a time (all of them when it is None)."""
    stage = substring_stage(config)
    size = stage.config.shards_per_group or max(len(shards), 1)
    ordered = sorted(shards, key=lambda s: s.shard_id)
    return [ordered[i:i + size] for i in range(0, len(ordered), size)]


def find_cuts(group: int, shards: list[InputShard], config: PipelineConfig, out_dir: str, digest: str) -> dict:
    """One shard group: the documents the earlier dedup stages kept, in parts of at most
    ``max_part_bytes``, through :func:`stages.substring_dedup.find_repeats`. Writes
    ``dedup/cuts/<shard>.parquet`` (character ranges per document) and a sample of cut spans."""
    from stages.substring_dedup import find_repeats

    out = Path(out_dir)
    cfg = substring_stage(config).config
    marker_path = out / "_markers" / "substring" / f"group-{group:05d}.done"
    ids = [s.shard_id for s in shards]
    marker = _read_marker(marker_path)
    if marker and marker.get("digest") == digest and marker.get("shards") == ids and all(
            (out / "dedup" / "cuts" / f"{sid}.parquet").exists() for sid in ids):
        return marker["result"]

    started = time.perf_counter()
    cuts: dict[str, dict[str, list[tuple[int, int]]]] = {sid: {} for sid in ids}
    spans: list[dict] = []
    totals = {"parts": 0, "documents": 0, "text_bytes": 0, "cut_tokens": 0, "cut_bytes": 0, "documents_touched": 0}

    def run_part(part: list[tuple[str, Document]]) -> None:
        found = find_repeats([doc.text for _, doc in part], cfg.min_tokens, cfg.keep_first)
        totals["parts"] += 1
        for (sid, doc), ranges, tokens in zip(part, found.cuts, found.cut_tokens):
            if not ranges:
                continue
            cuts[sid][doc.id] = ranges
            totals["documents_touched"] += 1
            totals["cut_tokens"] += tokens
            totals["cut_bytes"] += sum(len(doc.text[a:b].encode("utf-8", "surrogatepass")) for a, b in ranges)
            for a, b in ranges:
                if len(spans) < cfg.sample_spans:
                    spans.append({"id": doc.id, "url": doc.url, "tokens": len(doc.text[a:b].split()),
                                  "text": doc.text[a:b][:SPAN_SAMPLE_CHARS]})

    part: list[tuple[str, Document]] = []
    part_bytes = 0
    for shard in shards:
        dropped = _shard_drops(out, shard.shard_id)
        for doc in _iter_documents(shard_paths(out, shard, deduplicated=True)["documents"], 1024):
            if doc.id in dropped:
                continue
            size = len(doc.text.encode("utf-8", "surrogatepass"))
            if part and part_bytes + size > cfg.max_part_bytes:
                run_part(part)
                part, part_bytes = [], 0
            part.append((shard.shard_id, doc))
            part_bytes += size
            totals["documents"] += 1
            totals["text_bytes"] += size
    if part:
        run_part(part)

    for sid in ids:
        rows = sorted(cuts[sid].items())
        with atomic_path(out / "dedup" / "cuts" / f"{sid}.parquet") as tmp:
            pq.write_table(pa.table({"id": [r[0] for r in rows], "starts": [[a for a, _ in r[1]] for r in rows],
                                     "ends": [[b for _, b in r[1]] for r in rows]}, schema=CUTS_SCHEMA), tmp)
    with atomic_path(out / "dedup" / "substring_spans" / f"group-{group:05d}.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(spans, schema=SPANS_SCHEMA), tmp)
    result = {"group": group, "shards": ids, **totals, "seconds": round(time.perf_counter() - started, 3)}
    write_json_atomic(marker_path, {"digest": digest, "shards": ids, "result": result})
    return result


def _shard_cuts(out: Path, shard_id: str) -> dict[str, list[tuple[int, int]]]:
    table = pq.read_table(out / "dedup" / "cuts" / f"{shard_id}.parquet")
    return {doc_id: list(zip(starts, ends)) for doc_id, starts, ends in
            zip(*(table.column(c).to_pylist() for c in ("id", "starts", "ends")))}


def _cut(stage, doc: Document, ranges: list[tuple[int, int]], stats: StageStats) -> bool:
    """Cuts ``ranges`` from ``doc.text``; False when too little text is left to keep it."""
    from stages.substring_dedup import cut_text

    before = len(doc.text)
    doc.text = cut_text(doc.text, ranges)
    extra = stats.extra
    extra["documents_touched"] = extra.get("documents_touched", 0) + 1
    extra["spans_cut"] = extra.get("spans_cut", 0) + len(ranges)
    extra["chars_removed"] = extra.get("chars_removed", 0) + before - len(doc.text)
    return len(doc.text.split()) >= stage.config.min_words_after_cut


# --- 3. per-shard rewrite -----------------------------------------------------------------------

def _shard_drops(out: Path, shard_id: str) -> dict[str, tuple[str, str]]:
    """id -> (stage, kept id) for the documents this shard loses."""
    folder = out / "dedup" / "drops" / f"shard={shard_id}"
    drops = {}
    for path in sorted(folder.glob("*.parquet")):
        table = pq.read_table(path, columns=["id", "kept_id", "stage"])
        for doc_id, kept_id, stage in zip(*(table.column(c).to_pylist() for c in ("id", "kept_id", "stage"))):
            drops[doc_id] = (stage, kept_id)
    return drops


def apply_drops(shard: InputShard, config: PipelineConfig, out_dir: str, digest: str) -> dict:
    """Phase 3 for one shard: documents/<shard>.parquet without the dedup losers."""
    from refinery.stage import batched

    out = Path(out_dir)
    paths = dedup_paths(out, shard)
    marker = _read_marker(paths["apply_marker"])
    if marker and marker.get("digest") == digest and _size(paths["documents"]) == marker.get("documents_bytes"):
        result = _read_marker(paths["stats"])
        if result is not None:
            return {**result, "resumed": True}

    stages = [spec.build() for spec in config.dedup]
    funnel = {s.name: StageStats(s.name) for s in stages}
    order = [s.name for s in stages]
    drops = _shard_drops(out, shard.shard_id)
    cuts = _shard_cuts(out, shard.shard_id) if any(s.method == "substring" for s in stages) else {}
    sampler = DropSampler(config.spec.run.dropped_samples)
    started = time.perf_counter()
    documents, size = 0, TextSize()
    source = shard_paths(out, shard, deduplicated=True)["documents"]

    with atomic_path(paths["documents"]) as tmp:
        with pq.ParquetWriter(tmp, DOCUMENT_SCHEMA, compression="zstd") as writer:
            for docs in batched(_iter_documents(source, config.spec.run.row_group_size), config.spec.run.row_group_size):
                kept = []
                for doc in docs:
                    stage_name, kept_id = drops.get(doc.id, (None, None))
                    for stage in stages:  # the stages before the one that drops it saw it pass
                        name = stage.name
                        funnel[name].docs_in += 1
                        if stage.method == "substring" and doc.id in cuts:
                            if not _cut(stage, doc, cuts[doc.id], funnel[name]):
                                funnel[name].dropped[stage.reason] += 1
                                sampler.offer(name, Drop(doc, stage.reason))
                                break
                        if name == stage_name:
                            funnel[name].dropped[stage.reason] += 1
                            sampler.offer(name, Drop(doc, stage.reason, kept_id))
                            break
                        funnel[name].count_out(doc.language, doc.text)
                    else:
                        kept.append(doc)
                if kept:
                    writer.write_table(document_rows(kept))
                    documents += len(kept)
                    size += text_size(kept)
    for stats in funnel.values():  # their time is in the dedup phases' timings, not per stage
        stats.check_balanced()
    sampler.write(out, shard.shard_id, order)
    result = {"shard_id": shard.shard_id, "documents": documents, "characters": size.characters, "words": size.words,
              "resumed": False,
              "funnel": [funnel[name].to_dict() for name in order],
              "seconds": round(time.perf_counter() - started, 3)}
    write_json_atomic(paths["stats"], result)
    write_json_atomic(paths["apply_marker"], {"digest": digest, "documents_bytes": _size(paths["documents"])})
    return result
