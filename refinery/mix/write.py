"""The output files of a mix: the scatter step (each selected document copy gets its output file
and its place there, by seeded hashes) and the writing of each output file, so documents are
shuffled globally without any process holding the corpus."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.task import Result
from refinery.io import atomic_path
from refinery.mix.plan import doc_key
from refinery.mix.spec import MixSpec
from refinery.mix.tokenize import ShardTokens, shard_token_files


@dataclass
class Assigned(Result):
    shard: int
    copies: int


@dataclass
class WrittenGroup(Result):
    """One output group's files (``part-GROUP-NNN``, as many as ``max_file_tokens`` needs) and the
    size of each file, which only the task that wrote them knows."""

    parts: list = field(default_factory=list)
    sizes: dict = field(default_factory=dict)


def assign_path(out: Path, number: int) -> Path:
    return out / "tokens" / "_work" / "assign" / f"{number:06d}.parquet"


def _selected(meta: pa.Table, plan: dict) -> tuple[np.ndarray, np.ndarray]:
    """(row index, repetition) of every selected copy of the shard's documents."""
    keys = meta.column("key").to_numpy()
    copies = np.full(len(keys), plan["epochs"], dtype=np.int64) + (keys < plan["partial_key_threshold"])
    rows = np.repeat(np.arange(len(keys)), copies)
    reps = np.concatenate([np.arange(c) for c in copies]) if len(copies) else np.zeros(0, dtype=np.int64)
    return rows, reps.astype(np.int64)


def assign_shard(number: int, result: ShardTokens, spec: MixSpec, plan: dict, files: int, out_dir: str) -> Assigned:
    """The scatter step: every selected copy of this shard's documents gets its output file and
    its place there (seeded hashes). Written sorted by file, so each file's task reads only its
    own rows (Parquet row-group statistics)."""
    out = Path(out_dir)
    meta = pq.read_table(shard_token_files(out, result.source, result.path)[1])
    rows, reps = _selected(meta, plan["sources"][result.source])
    ids = meta.column("id").to_pylist()
    seed = spec.mix.seed
    file_of = np.asarray([int(doc_key(seed + 1, ids[r], p) * files) for r, p in zip(rows.tolist(), reps.tolist())],
                         dtype=np.int64)
    order = np.asarray([doc_key(seed + 2, ids[r], p) for r, p in zip(rows.tolist(), reps.tolist())], dtype=np.float64)
    table = pa.table({"file": file_of, "order": order, "shard": np.full(len(rows), number, dtype=np.int64),
                      "row": rows.astype(np.int64), "repetition": reps})
    table = table.sort_by([("file", "ascending"), ("order", "ascending")])
    with atomic_path(assign_path(out, number)) as tmp:
        pq.write_table(table, tmp, row_group_size=4096)
    return Assigned(shard=number, copies=len(rows))


def _picked(out: Path, index: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(shard, row, repetition) of this output file's document copies, in their shuffled order."""
    assign = sorted((out / "tokens" / "_work" / "assign").glob("*.parquet"))
    picked = pa.concat_tables([pq.read_table(p, filters=[("file", "==", index)]) for p in assign]) if assign else None
    if picked is None or not picked.num_rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), []
    picked = picked.sort_by([("order", "ascending")])
    return picked.column("shard").to_numpy(), picked.column("row").to_numpy(), picked.column("repetition").to_pylist()


def write_output_file(index: int, spec: MixSpec, shard_results: list[ShardTokens], tokenizer_path: str,
                      tokenizer_name: str, out_dir: str) -> WrittenGroup:
    """One output group: its documents in their shuffled order, as token shards and as Parquet,
    in files of at most ``max_file_tokens`` (``part-GROUP-NNN``)."""
    from refinery import tokenizer as tk
    from refinery.tokens import TokenShardWriter

    out = Path(out_dir)
    shards, rows, reps = _picked(out, index)
    metas, tokens, texts = {}, {}, {}
    for number in sorted(set(shards.tolist())):  # only this file's rows of each shard are kept
        result = shard_results[number]
        tokens_path, meta_path = shard_token_files(out, result.source, result.path)
        meta = pq.read_table(meta_path, columns=["id", "offset", "tokens"])
        # plain arrays: the loop below reads one row at a time
        metas[number] = (meta.column("id").to_pylist(), meta.column("offset").to_numpy(), meta.column("tokens").to_numpy())
        tokens[number] = np.memmap(tokens_path, dtype=result.dtype, mode="r")
        wanted, start = set(rows[shards == number].tolist()), 0
        for batch in pq.ParquetFile(result.path).iter_batches(columns=["text"], batch_size=1024):
            column = batch.column(0)
            for row in (r for r in wanted if start <= r < start + len(column)):
                texts[(number, row)] = column[row - start].as_py()
            start += len(column)

    vocab = tk.load(tokenizer_path).get_vocab_size()
    schema = pa.schema([("id", pa.string()), ("source", pa.string()), ("repetition", pa.int64()), ("text", pa.string())])
    written = WrittenGroup()
    chunk: dict = {}

    def start() -> None:
        name = f"part-{index:05d}-{len(written.parts):03d}"
        chunk.update(name=name, writer=TokenShardWriter(out / "tokens", name, vocab, tuple(spec.tokenize.formats),
                                                        tokenizer_name),
                     rows={"id": [], "source": [], "repetition": [], "text": []}, sources={})

    def finish() -> None:
        writer = chunk["writer"]
        files = writer.close()
        with atomic_path(out / "documents" / f"{chunk['name']}.parquet") as tmp:
            pq.write_table(pa.table(chunk["rows"], schema=schema), tmp, compression="zstd")
        del chunk["writer"]  # both halves are in place
        entry = {"name": chunk["name"], "files": {k: os.path.relpath(v, out) for k, v in files.items()},
                 "parquet": f"documents/{chunk['name']}.parquet", "documents": len(chunk["rows"]["id"]),
                 "tokens": writer.tokens, "sources": dict(sorted(chunk["sources"].items()))}
        written.parts.append(entry)
        written.sizes.update({path: os.path.getsize(out / path) for path in [*entry["files"].values(), entry["parquet"]]})

    try:
        start()
        for number, row, rep in zip(shards.tolist(), rows.tolist(), reps):
            (ids, offsets, lengths), source = metas[number], shard_results[number].source
            offset, length = int(offsets[row]), int(lengths[row])
            if chunk["writer"].tokens and chunk["writer"].tokens + length > spec.tokenize.max_file_tokens:
                finish()  # files stay under max_file_tokens (a single longer document gets a file alone)
                start()
            chunk["writer"].add(tokens[number][offset:offset + length])
            for column, value in (("id", ids[row]), ("source", source), ("repetition", rep),
                                  ("text", texts[(number, row)])):
                chunk["rows"][column].append(value)
            entry = chunk["sources"].setdefault(source, {"documents": 0, "tokens": 0})
            entry["documents"] += 1
            entry["tokens"] += length
        finish()
    finally:
        if "writer" in chunk:  # failed part-way: its temporary token files go
            chunk["writer"].abort()
    return written
