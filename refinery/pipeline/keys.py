"""Dedup phase 1, one task per shard: each dedup stage's keys for every document the chain kept.

``dedup/keys/<shard>.parquet`` holds one row per document (the internal key, id, url, date,
language, domain and one hex key column per exact-key stage); ``dedup/bands/<shard>.bands`` holds
the band-key stage's LSH keys, band-major, the document implicit in its row (refinery.bandfile)."""

from __future__ import annotations

import json

import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.bandfile import BandWriter
from refinery.config import PipelineConfig
from refinery.document import Document, document_key
from refinery.engine.task import Result
from refinery.io import InputShard, atomic_path
from refinery.pipeline.chain import shard_paths
from refinery.stage import BandKeyStage, ExactKeyStage, batched

def dedup_paths(out: Path, shard: InputShard) -> dict[str, Path]:
    sid = shard.shard_id
    return {
        "keys": out / "dedup" / "keys" / f"{sid}.parquet",
        "bands": out / "dedup" / "bands" / f"{sid}.bands",
        "keys_marker": out / "_markers" / "keys" / f"{sid}.done",
        "documents": out / "documents" / f"{sid}.parquet",
        "stats": out / "stats" / "dedup" / f"{sid}.json",
        "apply_marker": out / "_markers" / "apply" / f"{sid}.done",
    }


def domain_of(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")


def iter_documents(path: Path, batch_size: int):
    """Documents from one of our Parquet files, one row group at a time."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size):
        scores = [name for name in batch.schema.names if name.startswith("quality_")]
        for row in batch.to_pylist():
            metadata = row.pop("metadata", None)
            score = {name: row.pop(name) for name in scores}
            yield Document(**row, metadata=json.loads(metadata) if metadata else {}, scores=score)


def iter_keyed_documents(path: Path, shard_id: str, batch_size: int):
    """(internal key, document) for each document of a shard's chain output, in file order."""
    for row, doc in enumerate(iter_documents(path, batch_size)):
        yield document_key(doc.id, shard_id, row), doc


def _keys_schema(exact_stages: list[str]) -> pa.Schema:
    return pa.schema([
        ("key", pa.string()), ("id", pa.string()), ("shard", pa.string()), ("url", pa.string()), ("warc_date", pa.string()),
        ("language", pa.string()), ("domain", pa.string()),
        *((name, pa.string()) for name in exact_stages),
    ])


def _hex(key: bytes | None) -> str | None:
    return None if key is None else key.hex()


@dataclass
class KeysResult(Result):
    shard_id: str
    documents: int
    text_bytes: int = 0  # UTF-8 bytes of the documents' text: sizes the substring stage's work
    seconds: float = 0.0


def write_keys(shard: InputShard, config: PipelineConfig, out_dir: str) -> KeysResult:
    """Phase 1 for one shard: dedup keys of every document the chain kept."""
    out = Path(out_dir)
    paths = dedup_paths(out, shard)
    source = shard_paths(out, shard, deduplicated=True)["documents"]
    stages = [spec.build() for spec in config.dedup]
    exact = [s for s in stages if isinstance(s, ExactKeyStage)]
    banded = next((s for s in stages if isinstance(s, BandKeyStage)), None)
    started = time.perf_counter()
    documents = text_bytes = 0
    batch_size = banded.config.batch_size if banded else 1024
    with atomic_path(paths["keys"]) as keys_tmp, atomic_path(paths["bands"]) as bands_tmp:
        with pq.ParquetWriter(keys_tmp, _keys_schema([s.name for s in exact]), compression="zstd") as keys_out, \
                open(bands_tmp, "wb") as bands_file:
            bands_out = BandWriter(bands_file, banded.config.bands if banded else 0, batch_size,
                                   getattr(banded.config, "band_key_bytes", 8) if banded else 8)
            for docs in batched(iter_documents(source, batch_size), batch_size):
                keys = [document_key(d.id, shard.shard_id, documents + n) for n, d in enumerate(docs)]
                documents += len(docs)
                text_bytes += sum(len(d.text.encode("utf-8", "surrogatepass")) for d in docs)
                keys_out.write_table(pa.table({
                    "key": keys, "id": [d.id for d in docs], "shard": [shard.shard_id] * len(docs),
                    "url": [d.url for d in docs], "warc_date": [d.warc_date for d in docs],
                    "language": [d.language for d in docs], "domain": [domain_of(d.url) for d in docs],
                    **{s.name: [_hex(s.exact_key(d)) for d in docs] for s in exact},
                }, schema=keys_out.schema))
                if banded is not None:
                    bands_out.write(banded.band_keys(docs))
            bands_out.close()
    return KeysResult(shard.shard_id, documents, text_bytes, round(time.perf_counter() - started, 3))
