"""Mixing sources by token share, and writing Falcon-ready token shards.

A mix config (one with a top-level ``mix:`` key, e.g. configs/falcon180b_mix.yaml) names its
sources: refinery pipeline runs (``config:``, whose ``documents/`` become the source) and curated
files (``paths:``: JSONL(.gz), Parquet, or folders of .txt). `refinery run` then:

1. runs each pipeline source into ``OUTPUT/sources/NAME/`` and converts each curated file into
   ``OUTPUT/sources/NAME/documents/*.parquet`` (with the source's text formatter);
2. trains the tokenizer on a sample of the sources, unless one is given;
3. tokenizes every source shard (one task each) into ``OUTPUT/tokens/_work/``: token ids, and per
   document its length and a seeded random key in [0, 1);
4. plans the mix on the driver from per-shard totals only: each source gets ``share * budget``
   tokens: whole epochs, then the documents whose key is below a threshold, found from a
   token-weighted histogram of the keys. The budget is ``total_tokens``, or the most that every
   source can give within its ``max_epochs``;
5. writes the output files, one task each: every selected (document, repetition) goes to a file
   chosen by a seeded hash and, inside it, to a place chosen by another, so documents are
   shuffled globally without any process holding the corpus. Each file is written in the
   configured token formats (`refinery/tokens.py`) and as ``documents/part-NNNNN.parquet`` in the
   same order;
6. writes ``tokens/manifest.json``, the mix section of ``stats.json`` and the dataset card
   ``README.md``.

Every task writes its outputs atomically and then a completion marker under ``_markers/mix/``
(``refinery.io.mark_finished``), so a killed mix resumes where it stopped, with the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, ValidationError, model_validator

from refinery.config import ConfigError, RunConfig, _first_error, _Strict
from refinery.io import atomic_path, file_identity, finished_result, mark_finished, write_json_atomic, write_text_atomic

KEY_BINS = 4096
CHAT_ROLES = {"system": "System", "user": "User", "assistant": "Falcon", "falcon": "Falcon", "human": "User"}


class SourceSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    config: str | None = None  # a refinery pipeline config; its documents/ are this source
    input: list[str] | None = None  # inputs for that pipeline (default: the config's own)
    paths: list[str] | None = None  # curated files: *.jsonl, *.jsonl.gz, *.parquet, or folders of *.txt
    text_field: str = "text"
    id_field: str = "id"
    format: Literal["plain", "code", "chat"] = "plain"
    turns_field: str = "messages"  # chat: a list of {"role", "content"}
    license: str = "unknown"
    languages: list[str] = ["en"]
    max_epochs: float = Field(default=1.0, gt=0)
    heldout_fraction: float = Field(default=0.0, ge=0, lt=0.5)  # curated: records kept out for evaluation
    dedup: list[dict[str, Any]] = []  # curated sources skip the web chain but can opt into dedup stages

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.config is None) == (self.paths is None):
            raise ValueError("give either `config` (a pipeline run) or `paths` (curated files)")
        return self


class MixSettings(_Strict):
    shares: dict[str, float]
    total_tokens: int | None = Field(default=None, gt=0)
    seed: int = 1
    allow_short: bool = False  # true: a source that cannot reach its share gives what it has (a warning)


class TokenizeSettings(_Strict):
    tokenizer: str = "train"  # "train", or a local folder / tokenizer.json
    vocab_size: int = Field(default=65024, ge=268)
    train_sample_bytes: int = Field(default=100_000_000, gt=0)
    formats: list[Literal["megatron", "datatrove"]] = Field(default=["megatron", "datatrove"], min_length=1)
    max_file_tokens: int = Field(default=50_000_000, gt=0)  # no file holds more (but one longer document)
    batch_size: int = Field(default=1000, gt=0)


class MixSpec(_Strict):
    name: str = Field(min_length=1)
    output: str | None = None
    sources: list[SourceSpec] = Field(min_length=1)
    mix: MixSettings
    tokenize: TokenizeSettings = TokenizeSettings()
    run: RunConfig = RunConfig()



def parse_mix(raw: dict, path: str = "") -> MixSpec:
    try:
        spec = MixSpec.model_validate(raw)
    except ValidationError as err:
        raise _first_error(err) from None
    names = [s.name for s in spec.sources]
    if len(set(names)) != len(names):
        raise ConfigError("sources", f"source names repeat: {names}")
    if set(spec.mix.shares) != set(names):
        raise ConfigError("mix.shares", f"must name every source exactly once: {sorted(names)}")
    from refinery.config import dedup_only_config

    if spec.tokenize.tokenizer != "train" and not Path(spec.tokenize.tokenizer).exists():
        raise ConfigError("tokenize.tokenizer", f"no tokenizer at {spec.tokenize.tokenizer!r} (or use `train`)")
    for index, source in enumerate(spec.sources):
        if source.dedup and source.config:
            raise ConfigError(f"sources[{index}].dedup", "a pipeline source deduplicates in its own config")
        if source.heldout_fraction and source.config:
            raise ConfigError(f"sources[{index}].heldout_fraction", "only curated sources (`paths`) are split")
        if source.dedup:
            dedup_only_config(source.name, source.dedup, spec.run, key=f"sources[{index}].dedup")
    if any(v <= 0 for v in spec.mix.shares.values()) or abs(sum(spec.mix.shares.values()) - 1) > 1e-6:
        raise ConfigError("mix.shares", f"must be positive and add up to 1 (they add up to {sum(spec.mix.shares.values()):g})")
    return spec


# --- 1. sources ----------------------------------------------------------------------------------

def _format(record: dict, source: SourceSpec) -> str:
    if source.format == "chat" and isinstance(record.get(source.turns_field), list):
        lines = []
        for turn in record[source.turns_field]:
            role = CHAT_ROLES.get(str(turn.get("role", "user")).lower(), "User")
            lines.append(f"{role}: {str(turn.get('content', '')).strip()}")
        return "\n".join(lines)
    text = record.get(source.text_field)
    if not isinstance(text, str):
        return ""
    return text if source.format == "code" else text.strip()  # code keeps every whitespace


def _records(path: Path, source: SourceSpec):
    if path.is_dir():
        for n, txt in enumerate(sorted(path.rglob("*.txt"))):
            yield {source.id_field: str(txt.relative_to(path)), source.text_field: txt.read_text(encoding="utf-8")}
    elif path.name.endswith(".parquet"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    else:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)


def curated_texts(path: str, source: SourceSpec) -> Iterator[tuple[str, str]]:
    """(record id, formatted text) of each record of a curated file; the text is "" when the
    record has none. A record without an id gets ``<shard id>:<position>``."""
    from refinery.io import InputShard

    stem = InputShard.for_path(path).shard_id
    for n, record in enumerate(_records(Path(path), source)):
        yield str(record.get(source.id_field, f"{stem}:{n}")), _format(record, source)


def heldout(key: str, fraction: float) -> bool:
    """Whether a record is held out for evaluation: a hash of its key (a curated record's id, a
    crawl document's normalised text) below ``fraction``. `refinery ablate` splits the same way."""
    digest = hashlib.blake2b(f"heldout:{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def convert_curated_file(path: str, source: SourceSpec, out_dir: str) -> dict:
    """One curated file -> OUTPUT/sources/NAME/documents/<shard id>.parquet with refinery's
    columns (filtered/ instead when the source has dedup stages, which then write documents/).
    Records held out (``heldout_fraction``, by record id) go to OUTPUT/sources/NAME/heldout/."""
    from refinery.io import InputShard
    from refinery.shard import DOCUMENT_SCHEMA

    stem = InputShard.for_path(path).shard_id
    folder = "filtered" if source.dedup else "documents"
    target = Path(out_dir) / "sources" / source.name / folder / f"{stem}.parquet"
    marker = Path(out_dir) / "_markers" / "mix" / "convert" / f"{source.name}-{stem}.done"
    key = {"input": file_identity(path), "source": source.model_dump(mode="json")}
    if (done := finished_result(marker, key)) is not None:
        return done
    rows, held, empty = [], [], 0
    for record_id, text in curated_texts(path, source):
        if not text:
            empty += 1
            continue
        (held if heldout(record_id, source.heldout_fraction) else rows).append({
            "id": f"{source.name}/{record_id}", "url": "", "warc_date": "", "source": source.name,
            "language": source.languages[0] if len(source.languages) == 1 else "", "language_score": 1.0,
            "text": text})
    with atomic_path(target) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), tmp, compression="zstd")
    heldout_path = Path(out_dir) / "sources" / source.name / "heldout" / f"{stem}.parquet"
    if held:
        with atomic_path(heldout_path) as tmp:
            pq.write_table(pa.Table.from_pylist(held, schema=DOCUMENT_SCHEMA), tmp, compression="zstd")
    else:
        heldout_path.unlink(missing_ok=True)
    result = {"source": source.name, "input": path, "path": str(target), "documents": len(rows),
              "heldout_documents": len(held), "empty": empty}
    mark_finished(marker, key, result, [target, *([heldout_path] if held else [])])
    return result


def heldout_token_files(out: Path, source: str, path: str) -> list[Path]:
    return [out / "heldout" / source / f"{Path(path).stem}{ext}" for ext in (".bin", ".idx")]


def tokenize_heldout(path: str, source: str, tokenizer_path: str, tokenizer_hash: str, out_dir: str) -> dict:
    """A curated source's held-out documents -> OUTPUT/heldout/NAME/<shard>.bin/.idx (Megatron), an
    eval set for `refinery train` (configs/train/tiny-falcon.yaml)."""
    import tokenizer as tk
    from refinery.tokens import write_token_file

    marker = Path(out_dir) / "_markers" / "mix" / "heldout" / f"{source}-{Path(path).stem}.done"
    key = {"input": file_identity(path), "tokenizer": tokenizer_hash}
    if (done := finished_result(marker, key)) is not None:
        return done
    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()  # a held-out part: small
    tokens = write_token_file(Path(out_dir) / "heldout" / source, Path(path).stem, tk.load(tokenizer_path), texts,
                              tk.EOS_ID)
    result = {"source": source, "documents": len(texts), "tokens": tokens}
    mark_finished(marker, key, result, heldout_token_files(Path(out_dir), source, path) if tokens else [])
    return result


def source_files(out: Path, name: str) -> list[Path]:
    return sorted((out / "sources" / name / "documents").glob("*.parquet"))


# --- 3. tokens per source shard ------------------------------------------------------------------

def doc_key(seed: int, doc_id: str, repetition: int = -1) -> float:
    """A deterministic uniform number in [0, 1) for a document (and a repetition of it)."""
    digest = hashlib.blake2b(f"{seed}:{repetition}:{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def tokenize_shard(source: str, path: str, tokenizer_path: str, tokenizer_hash: str, out_dir: str, seed: int,
                   batch_size: int) -> dict:
    """Token ids of every document of one source shard, plus per-document length and key."""
    import tokenizer as tk
    from refinery.tokens import encode_documents, token_dtype

    work = Path(out_dir) / "tokens" / "_work" / source
    stem = Path(path).stem
    marker = Path(out_dir) / "_markers" / "mix" / "tokenize" / f"{source}-{stem}.done"
    key = {"input": file_identity(path), "tokenizer": tokenizer_hash, "seed": seed}
    if (done := finished_result(marker, key)) is not None:
        return done
    tokenizer = tk.load(tokenizer_path)
    dtype = token_dtype(tokenizer.get_vocab_size())
    eos = tk.eos_id(tokenizer)
    lengths, keys, ids = [], [], []
    started = time.perf_counter()
    with atomic_path(work / f"{stem}.tokens") as tmp, open(tmp, "wb") as handle:
        for batch in pq.ParquetFile(path).iter_batches(columns=["id", "text"], batch_size=batch_size):
            batch_ids = batch.column("id").to_pylist()
            for doc_id, array in zip(batch_ids, encode_documents(tokenizer, batch.column("text").to_pylist(), eos, dtype)):
                handle.write(array.tobytes())
                lengths.append(len(array))
                keys.append(doc_key(seed, doc_id))
                ids.append(doc_id)
    lengths_a = np.asarray(lengths, dtype=np.int64)
    keys_a = np.asarray(keys, dtype=np.float64)
    with atomic_path(work / f"{stem}.meta.parquet") as tmp:
        pq.write_table(pa.table({"id": ids, "row": np.arange(len(ids), dtype=np.int64), "tokens": lengths_a,
                                 "offset": (np.cumsum(lengths_a) - lengths_a).astype(np.int64),
                                 "key": keys_a}), tmp)
    histogram, _ = np.histogram(keys_a, bins=KEY_BINS, range=(0.0, 1.0), weights=lengths_a)
    result = {"source": source, "path": path, "stem": stem, "documents": len(ids), "tokens": int(lengths_a.sum()),
              "key_histogram": histogram.astype(np.int64).tolist(), "dtype": dtype.name,
              "seconds": round(time.perf_counter() - started, 3)}
    mark_finished(marker, key, result, [work / f"{stem}.tokens", work / f"{stem}.meta.parquet"])
    return result


# --- 4. the plan ---------------------------------------------------------------------------------

def plan_mix(spec: MixSpec, shard_results: list[dict]) -> dict:
    """Per source: target tokens, whole epochs and the key threshold of the partial epoch."""
    available = {s.name: 0 for s in spec.sources}
    histogram = {s.name: np.zeros(KEY_BINS, dtype=np.int64) for s in spec.sources}
    for r in shard_results:
        available[r["source"]] += r["tokens"]
        histogram[r["source"]] += np.asarray(r["key_histogram"], dtype=np.int64)
    shares = spec.mix.shares
    empty = [name for name in shares if not available[name]]
    if empty and not spec.mix.allow_short:
        raise ConfigError("mix.shares", f"{empty[0]} has no documents, so its {shares[empty[0]]:.1%} share cannot be "
                                        "met (drop the source, or set mix.allow_short: true)")
    limits = {s.name: available[s.name] * s.max_epochs for s in spec.sources}
    if spec.mix.total_tokens:
        budget = spec.mix.total_tokens
    else:  # the most every source can give: the scarcest one, relative to its share, sets it
        budget = min(limits[name] / shares[name] for name in shares if available[name]) if len(empty) < len(shares) else 0
    plan, short = {}, []
    for source in spec.sources:
        name = source.name
        target = shares[name] * budget
        give = min(target, limits[name])
        if give < target * (1 - 1e-9):
            short.append(f"{name} has {available[name]:,} tokens x max_epochs {source.max_epochs:g} = "
                         f"{int(limits[name]):,}, short of its target {int(target):,}")
        epochs = int(give // available[name]) if available[name] else 0
        remainder = give - epochs * available[name]
        cumulative = np.cumsum(histogram[name])
        bins = int(np.searchsorted(cumulative, remainder, side="left")) if remainder > 0 else 0
        threshold = min(bins + 1, KEY_BINS) / KEY_BINS if remainder > 0 else 0.0
        if remainder > 0 and bins > 0 and abs(cumulative[bins - 1] - remainder) < abs(cumulative[min(bins, KEY_BINS - 1)] - remainder):
            threshold = bins / KEY_BINS  # the bin edge below is closer to the target
        plan[name] = {"target_share": shares[name], "available_tokens": available[name], "target_tokens": int(target),
                      "epochs": epochs, "partial_key_threshold": threshold, "max_epochs": source.max_epochs}
    if short and not spec.mix.allow_short:
        raise ConfigError("mix.total_tokens", f"{int(budget):,} cannot be met: {short[0]} (raise its max_epochs, "
                                              "lower total_tokens, or set mix.allow_short: true)")
    return {"budget_tokens": int(budget), "sources": plan, "short": short}


# --- 5. output files -----------------------------------------------------------------------------

def _selected(meta: pa.Table, plan: dict) -> tuple[np.ndarray, np.ndarray]:
    """(row index, repetition) of every selected copy of the shard's documents."""
    keys = meta.column("key").to_numpy()
    copies = np.full(len(keys), plan["epochs"], dtype=np.int64) + (keys < plan["partial_key_threshold"])
    rows = np.repeat(np.arange(len(keys)), copies)
    reps = np.concatenate([np.arange(c) for c in copies]) if len(copies) else np.zeros(0, dtype=np.int64)
    return rows, reps.astype(np.int64)


def assign_shard(number: int, result: dict, spec: MixSpec, plan: dict, files: int, out_dir: str, digest: str) -> dict:
    """The scatter step: every selected copy of this shard's documents gets its output file and
    its place there (seeded hashes). Written sorted by file, so each file's task reads only its
    own rows (Parquet row-group statistics)."""
    out = Path(out_dir)
    target = out / "tokens" / "_work" / "assign" / f"{number:06d}.parquet"
    marker = out / "_markers" / "mix" / "assign" / f"{number:06d}.done"
    if (done := finished_result(marker, {"mix": digest})) is not None:
        return done
    meta = pq.read_table(out / "tokens" / "_work" / result["source"] / f"{result['stem']}.meta.parquet")
    rows, reps = _selected(meta, plan["sources"][result["source"]])
    ids = meta.column("id").to_pylist()
    seed = spec.mix.seed
    file_of = np.asarray([int(doc_key(seed + 1, ids[r], p) * files) for r, p in zip(rows.tolist(), reps.tolist())],
                         dtype=np.int64)
    order = np.asarray([doc_key(seed + 2, ids[r], p) for r, p in zip(rows.tolist(), reps.tolist())], dtype=np.float64)
    table = pa.table({"file": file_of, "order": order, "shard": np.full(len(rows), number, dtype=np.int64),
                      "row": rows.astype(np.int64), "repetition": reps})
    table = table.sort_by([("file", "ascending"), ("order", "ascending")])
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp, row_group_size=4096)
    done = {"shard": number, "copies": len(rows)}
    mark_finished(marker, {"mix": digest}, done, [target])
    return done


def write_output_file(index: int, spec: MixSpec, shard_results: list[dict], tokenizer_path: str,
                      tokenizer_name: str, out_dir: str, digest: str) -> list[dict]:
    """One output group: its documents in their shuffled order, as token shards and as Parquet,
    in files of at most ``max_file_tokens`` (``part-GROUP-NNN``)."""
    import tokenizer as tk
    from refinery.tokens import TokenShardWriter

    out = Path(out_dir)
    marker = out / "_markers" / "mix" / "write" / f"{index:05d}.done"
    if (done := finished_result(marker, {"mix": digest})) is not None:
        return done
    assign = sorted((out / "tokens" / "_work" / "assign").glob("*.parquet"))
    picked = pa.concat_tables([pq.read_table(p, filters=[("file", "==", index)]) for p in assign]) if assign else None
    picked = picked.sort_by([("order", "ascending")]) if picked is not None else pa.table({"shard": [], "row": []})
    shards = picked.column("shard").to_numpy() if picked.num_rows else np.zeros(0, dtype=np.int64)
    rows = picked.column("row").to_numpy() if picked.num_rows else np.zeros(0, dtype=np.int64)
    reps = picked.column("repetition").to_pylist() if picked.num_rows else []

    metas, tokens, texts = {}, {}, {}
    for number in sorted(set(shards.tolist())):  # only this file's rows of each shard are kept
        result = shard_results[number]
        work = out / "tokens" / "_work" / result["source"]
        meta = pq.read_table(work / f"{result['stem']}.meta.parquet", columns=["id", "offset", "tokens"])
        # plain arrays: the loop below reads one row at a time
        metas[number] = (meta.column("id").to_pylist(), meta.column("offset").to_numpy(), meta.column("tokens").to_numpy())
        tokens[number] = np.memmap(work / f"{result['stem']}.tokens", dtype=result["dtype"], mode="r")
        wanted, start = set(rows[shards == number].tolist()), 0
        for batch in pq.ParquetFile(result["path"]).iter_batches(columns=["text"], batch_size=1024):
            column = batch.column(0)
            for row in (r for r in wanted if start <= r < start + len(column)):
                texts[(number, row)] = column[row - start].as_py()
            start += len(column)

    vocab = tk.load(tokenizer_path).get_vocab_size()
    schema = pa.schema([("id", pa.string()), ("source", pa.string()), ("repetition", pa.int64()), ("text", pa.string())])
    written: list[dict] = []
    chunk: dict = {}

    def start() -> None:
        name = f"part-{index:05d}-{len(written):03d}"
        chunk.update(name=name, writer=TokenShardWriter(out / "tokens", name, vocab, tuple(spec.tokenize.formats),
                                                        tokenizer_name),
                     rows={"id": [], "source": [], "repetition": [], "text": []}, sources={})

    def finish() -> None:
        writer = chunk["writer"]
        files = writer.close()
        with atomic_path(out / "documents" / f"{chunk['name']}.parquet") as tmp:
            pq.write_table(pa.table(chunk["rows"], schema=schema), tmp, compression="zstd")
        del chunk["writer"]  # both halves are in place
        written.append({"name": chunk["name"], "files": {k: os.path.relpath(v, out) for k, v in files.items()},
                        "parquet": f"documents/{chunk['name']}.parquet", "documents": len(chunk["rows"]["id"]),
                        "tokens": writer.tokens, "sources": dict(sorted(chunk["sources"].items()))})

    try:
        start()
        for number, row, rep in zip(shards.tolist(), rows.tolist(), reps):
            (ids, offsets, lengths), source = metas[number], shard_results[number]["source"]
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
    mark_finished(marker, {"mix": digest}, written,
                  [out / path for entry in written for path in [*entry["files"].values(), entry["parquet"]]])
    return written


# --- the driver ----------------------------------------------------------------------------------

def execute_mix(spec: MixSpec, out_dir: str, scheduler: str | None = None, workers: int | None = None,
                log=print) -> dict:
    """All the steps of the module docstring; returns the stats written to OUTPUT/stats.json."""
    import glob

    from dask import delayed

    import tokenizer as tk
    from refinery.config import dedup_only_config, load_config, with_overrides
    from refinery.dag import compute_all, dask_client, deduplicate, execute
    from refinery.io import InputShard, expand_inputs

    out = Path(out_dir)
    run = spec.run.model_copy(update={"workers": workers}) if workers else spec.run
    started = time.perf_counter()
    pipelines, dedup_summaries = {}, {}
    for source in (s for s in spec.sources if s.config):  # web sources: their own pipeline runs
        config = load_config(source.config)
        config = with_overrides(config, inputs=source.input, output=str(out / "sources" / source.name),
                                workers=run.workers)
        log(f"source {source.name}: running {source.config}")
        pipelines[source.name] = execute(config, expand_inputs(config.spec.input.paths),
                                         str(out / "sources" / source.name), scheduler=scheduler)

    with dask_client(run, scheduler) as client:
        curated = []
        for index, source in enumerate(s for s in spec.sources if s.paths):
            files = sorted({p for pattern in source.paths for p in glob.glob(pattern)})
            if not files:
                raise ConfigError(f"sources[{index}].paths", f"no file matches {source.paths}")
            curated += [delayed(convert_curated_file, pure=True)(f, source, str(out)) for f in files]
        converted = compute_all(client, curated)
        for source in (s for s in spec.sources if s.paths and s.dedup):
            shards = [InputShard.for_path(c["input"]) for c in converted if c["source"] == source.name]
            config = dedup_only_config(source.name, source.dedup, run,
                                       key=f"sources[{[s.name for s in spec.sources].index(source.name)}].dedup")
            log(f"source {source.name}: {' -> '.join(s.name for s in config.dedup)}")
            _, dedup_summaries[source.name] = deduplicate(config, shards, str(out / "sources" / source.name), client)

        if spec.tokenize.tokenizer == "train":
            tokenizer_path = train_tokenizer(spec, [str(p) for s in spec.sources for p in source_files(out, s.name)],
                                             out, log)
        else:
            tokenizer_path = spec.tokenize.tokenizer
        tokenizer_hash = tk.file_hash(tokenizer_path)

        heldout_parts = sorted((s.name, str(p)) for s in spec.sources if s.heldout_fraction
                               for p in (out / "sources" / s.name / "heldout").glob("*.parquet"))
        heldout_results = compute_all(client, [
            delayed(tokenize_heldout, pure=True)(p, name, tokenizer_path, tokenizer_hash, str(out))
            for name, p in heldout_parts])
        shard_tasks = [delayed(tokenize_shard, pure=True)(s.name, str(p), tokenizer_path, tokenizer_hash, str(out),
                                                          spec.mix.seed, spec.tokenize.batch_size)
                       for s in spec.sources for p in source_files(out, s.name)]
        shard_results = compute_all(client, shard_tasks)
        plan = plan_mix(spec, shard_results)
        for line in plan["short"]:
            log(f"mix: source ran short: {line}")
        selected = sum(p["target_tokens"] for p in plan["sources"].values())
        files = max(1, math.ceil(selected / spec.tokenize.max_file_tokens))
        digest = mix_digest(spec, plan, shard_results, files, tokenizer_hash)
        for stale in (out / "tokens" / "_work" / "assign").glob("*.parquet"):
            if int(stale.stem) >= len(shard_results):  # an earlier run had more shards
                stale.unlink()
        compute_all(client, [delayed(assign_shard, pure=True)(n, r, spec, plan, files, str(out), digest)
                             for n, r in enumerate(shard_results)])
        outputs = compute_all(client, [
            delayed(write_output_file, pure=True)(i, spec, shard_results, tokenizer_path, f"refinery-{tokenizer_hash[:12]}",
                                                  str(out), digest)
            for i in range(files)])

    outputs = [chunk for chunks in outputs for chunk in chunks]
    _remove_stale_outputs(out, outputs, [heldout_token_files(out, name, p) for name, p in heldout_parts])
    totals = {s.name: {"documents": 0, "tokens": 0} for s in spec.sources}
    for output in outputs:
        for name, entry in output["sources"].items():
            totals[name]["documents"] += entry["documents"]
            totals[name]["tokens"] += entry["tokens"]
    all_tokens = sum(t["tokens"] for t in totals.values())
    sources = {}
    for source in spec.sources:
        p = plan["sources"][source.name]
        achieved = totals[source.name]["tokens"] / all_tokens if all_tokens else 0.0
        sources[source.name] = {**p, **totals[source.name], "achieved_share": round(achieved, 6),
                                "share_error_points": round(100 * (achieved - p["target_share"]), 3),
                                "license": source.license, "languages": source.languages}
    manifest = {
        "name": spec.name, "seed": spec.mix.seed, "formats": spec.tokenize.formats,
        "tokenizer": {"path": os.path.relpath(tokenizer_path, out) if str(tokenizer_path).startswith(str(out))
                      else tokenizer_path, "sha256": tokenizer_hash, "eos_id": tk.EOS_ID,
                      "vocab_size": tk.load(tokenizer_path).get_vocab_size()},
        "dtype": shard_results[0]["dtype"] if shard_results else "uint16",
        "tokens": all_tokens, "documents": sum(t["documents"] for t in totals.values()),
        "sources": {k: {"tokens": v["tokens"], "documents": v["documents"], "achieved_share": v["achieved_share"]}
                    for k, v in sources.items()},
        "files": outputs,
        "order": "documents appear in each file's order; files in name order",
    }
    write_json_atomic(out / "tokens" / "manifest.json", manifest)
    stats = {"name": spec.name, "kind": "mix", "budget_tokens": plan["budget_tokens"], "short": plan["short"],
             "sources": sources, "pipelines": {k: {"funnel": v["funnel"], "dedup": v.get("dedup")}
                                               for k, v in pipelines.items()},
             "curated_dedup": dedup_summaries, "curated_files": [{**c, "path": os.path.relpath(c["path"], out)} for c in converted],
             "heldout": _heldout_totals(heldout_results, out), "output": {"files": len(outputs), "tokens": all_tokens},
             "seconds": round(time.perf_counter() - started, 3)}
    write_json_atomic(out / "stats.json", stats)
    write_dataset_card(out, spec, stats, manifest)
    return stats


def train_tokenizer(spec: MixSpec, texts_from: list[str], out: Path, log) -> str:
    """The mix's own tokenizer (OUTPUT/tokenizer/), trained once: a rerun on the same source files
    finds its marker."""
    import tokenizer as tk

    marker = out / "_markers" / "mix" / "tokenizer.done"
    key = {"vocab_size": spec.tokenize.vocab_size, "sample_bytes": spec.tokenize.train_sample_bytes,
           "files": [file_identity(p) for p in texts_from]}
    if (done := finished_result(marker, key)) is not None:
        return done["path"]
    log(f"tokenizer: training a {spec.tokenize.vocab_size:,}-token BPE on {len(texts_from)} files")
    path = tk.save(tk.train(_sample_round_robin(texts_from, spec.tokenize.train_sample_bytes), spec.tokenize.vocab_size),
                   out / "tokenizer")
    mark_finished(marker, key, {"path": str(path)}, sorted((out / "tokenizer").glob("*.json")))
    return str(path)


def mix_digest(spec: MixSpec, plan: dict, shard_results: list[dict], files: int, tokenizer_hash: str) -> str:
    """Everything the output files depend on: their markers are valid only for this digest."""
    state = {"plan": plan, "files": files, "tokenizer": tokenizer_hash, "seed": spec.mix.seed,
             "tokenize": spec.tokenize.model_dump(mode="json"),
             "shards": [{k: v for k, v in r.items() if k != "seconds"} for r in shard_results]}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def _remove_stale_outputs(out: Path, outputs: list[dict], heldout_files: list[list[Path]]) -> None:
    """Output files of earlier runs that this one did not write (a smaller mix, a source no longer
    split), so the folders hold exactly what the manifest lists."""
    expected = {out / path for entry in outputs for path in [*entry["files"].values(), entry["parquet"]]}
    expected |= {path for files in heldout_files for path in files}
    candidates = [*(out / "tokens").glob("part-*"), *(out / "documents").glob("part-*"),
                  *(p for p in (out / "heldout").rglob("*") if p.is_file())]
    for path in candidates:
        if path not in expected:
            path.unlink()
    for folder in (out / "heldout").glob("*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _heldout_totals(results: list[dict], out: Path) -> dict:
    totals: dict[str, dict] = {}
    for r in results:
        entry = totals.setdefault(r["source"], {"documents": 0, "tokens": 0,
                                                "folder": f"heldout/{r['source']}"})
        entry["documents"] += r["documents"]
        entry["tokens"] += r["tokens"]
    return totals


def _sample_round_robin(paths: list[str], max_bytes: int):
    """Texts for tokenizer training, taking one batch from each file in turn."""
    readers = [pq.ParquetFile(p).iter_batches(columns=["text"], batch_size=256) for p in paths]
    given = 0
    while readers and given < max_bytes:
        for reader in list(readers):
            batch = next(reader, None)
            if batch is None:
                readers.remove(reader)
                continue
            for text in batch.column(0).to_pylist():
                given += len(text.encode("utf-8", "surrogatepass"))
                yield text


def _size_category(documents: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if documents < limit:
            return label
    return "n>100M"


def write_dataset_card(out: Path, spec: MixSpec, stats: dict, manifest: dict) -> None:
    """OUTPUT/README.md: a Hugging Face dataset card with YAML metadata."""
    languages = sorted({lang for s in spec.sources for lang in s.languages})
    licenses = sorted({s.license for s in spec.sources})
    lines = ["---", f"pretty_name: {spec.name}", "language:", *[f"- {lang}" for lang in languages],
             "license: other" if len(licenses) > 1 else f"license: {licenses[0]}",
             "size_categories:", f"- {_size_category(manifest['documents'])}",
             "task_categories:", "- text-generation", "configs:", "- config_name: default",
             "  data_files:", "  - split: train", "    path: documents/*.parquet", "---", "",
             f"# {spec.name}", "",
             "A pretraining mix built with refinery (RefinedWeb-style Macrodata Refinement).",
             "", "## Sources and shares (counted in tokens)", "",
             "| source | license | languages | target share | achieved share | tokens | documents | epochs |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for name, s in stats["sources"].items():
        lines.append(f"| {name} | {s['license']} | {', '.join(s['languages'])} | {s['target_share']:.1%} "
                     f"| {s['achieved_share']:.2%} | {s['tokens']:,} | {s['documents']:,} | "
                     f"{s['epochs'] + (1 if s['partial_key_threshold'] > 0 else 0)} |")
    if stats["short"]:
        lines += ["", "**Sources that ran short of their target:**", *[f"- {line}" for line in stats["short"]]]
    for name, pipeline in stats["pipelines"].items():
        lines += ["", f"## Funnel of {name}", "", "| stage | in | out | kept of input |", "|---|---:|---:|---:|"]
        lines += [f"| {f['stage']} | {f['docs_in']:,} | {f['docs_out']:,} | {f['kept_of_input']:.1%} |"
                  for f in pipeline["funnel"]]
        if pipeline.get("dedup"):
            removed = {k: v.get("removed", 0) for k, v in pipeline["dedup"]["per_stage"].items()}
            lines += ["", "Dedup removed: " + ", ".join(f"{k} {v:,}" for k, v in removed.items()) + "."]
    for name, summary in stats.get("curated_dedup", {}).items():
        removed = {k: v.get("removed", 0) for k, v in summary["per_stage"].items()}
        lines += ["", f"Dedup of {name} removed: " + ", ".join(f"{k} {v:,}" for k, v in removed.items()) + "."]
    if stats.get("heldout"):
        lines += ["", "## Held-out evaluation parts", "",
                  "Records held out of the mix by a hash of their id (never trained on), tokenized for "
                  "`refinery train`'s eval sets:", ""]
        lines += [f"- {name}: {h['documents']:,} documents, {h['tokens']:,} tokens in `heldout/{name}/`"
                  for name, h in stats["heldout"].items()]
    lines += ["", "## Tokenizer", "",
              f"Byte-level BPE, vocab {manifest['tokenizer']['vocab_size']:,}: `{manifest['tokenizer']['path']}` "
              f"(sha256 `{manifest['tokenizer']['sha256'][:16]}`); `<|endoftext|>` = 11 ends every document; "
              f"tokens are {manifest['dtype']}.", "",
              "## Loading", "", "```python", "import pandas as pd",
              'docs = pd.read_parquet("documents/")  # id, source, repetition, text', "```", "",
              f"Token shards in `tokens/` ({', '.join(spec.tokenize.formats)}): Megatron-LM `part-*.bin/.idx` "
              "and datatrove/nanotron `part-*.ds` (+ `.ds.index`, `.ds.metadata`); `tokens/manifest.json` lists "
              f"tokens per source and per file. Documents are shuffled globally with seed {spec.mix.seed}.", ""]
    write_text_atomic(out / "README.md", "\n".join(lines))
