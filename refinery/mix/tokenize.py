"""Tokenization for a mix (and `refinery ablate`): training the tokenizer, tokenizing each source
shard into ``OUTPUT/tokens/_work/`` (token ids, and per document its length and a seeded key), and
tokenizing curated sources' held-out records into ``OUTPUT/heldout/NAME/``."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.task import Result, Task
from refinery.io import atomic_path
from refinery.mix.plan import doc_key, key_histogram


def digest(*parts) -> str:
    """A task fingerprint: the hash of what, besides its inputs, its outputs depend on."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# --- the tokenizer -------------------------------------------------------------------------------

@dataclass
class TokenizerResult(Result):
    path: str


def train_tokenizer(paths: list[str], vocab_size: int, sample_bytes: int, folder: str, log: Callable,
                    interleave: bool, keep: Callable[[str], bool] | None = None) -> TokenizerResult:
    """A byte-level BPE trained on a sample of ``paths`` (those texts ``keep`` accepts), saved in ``folder``."""
    from refinery import tokenizer as tk

    log(f"tokenizer: training a {vocab_size:,}-token BPE on {len(paths)} files")
    texts = tk.sample_texts(paths, sample_bytes, keep=keep, interleave=interleave)
    return TokenizerResult(str(tk.save(tk.train(texts, vocab_size), folder)))


def tokenizer_task(paths: list[str], vocab_size: int, sample_bytes: int, out: Path, product: str, log: Callable,
                   interleave: bool, keep: Callable[[str], bool] | None = None, keep_key: object = None) -> Task:
    """Training the tokenizer into ``OUTPUT/tokenizer/``, once: a rerun on the same files finds its
    marker. ``keep_key`` stands for ``keep`` in the fingerprint. Run it with ``engine.run_here``."""
    return Task(key="tokenizer", func=train_tokenizer,
                args=(paths, vocab_size, sample_bytes, str(out / "tokenizer"), log, interleave, keep),
                fingerprint=digest(vocab_size, sample_bytes, interleave, keep_key), inputs=tuple(paths),
                outputs=(str(out / "tokenizer"),), marker=str(out / "_markers" / product / "tokenizer.done"),
                result_type=TokenizerResult)


# --- source shards -------------------------------------------------------------------------------

@dataclass
class ShardTokens(Result):
    source: str
    path: str
    stem: str
    documents: int
    tokens: int
    key_histogram: list
    dtype: str
    seconds: float = 0.0


def shard_token_files(out: Path, source: str, path: str) -> tuple[Path, Path]:
    """A source shard's token ids and its per-document metadata (id, row, tokens, offset, key)."""
    work = out / "tokens" / "_work" / source
    return work / f"{Path(path).stem}.tokens", work / f"{Path(path).stem}.meta.parquet"


def tokenize_shard(source: str, path: str, tokenizer_path: str, out_dir: str, seed: int,
                   batch_size: int) -> ShardTokens:
    """Token ids of every document of one source shard, plus per-document length and key."""
    from refinery import tokenizer as tk
    from refinery.tokens import encoded_parquet, token_dtype

    tokens_path, meta_path = shard_token_files(Path(out_dir), source, path)
    tokenizer = tk.load(tokenizer_path)
    lengths, keys, ids = [], [], []
    started = time.perf_counter()
    with atomic_path(tokens_path) as tmp, open(tmp, "wb") as handle:
        for doc_id, _, array in encoded_parquet(tokenizer, path, batch_size):
            handle.write(array.tobytes())
            lengths.append(len(array))
            keys.append(doc_key(seed, doc_id))
            ids.append(doc_id)
    lengths_a = np.asarray(lengths, dtype=np.int64)
    keys_a = np.asarray(keys, dtype=np.float64)
    with atomic_path(meta_path) as tmp:
        pq.write_table(pa.table({"id": ids, "row": np.arange(len(ids), dtype=np.int64), "tokens": lengths_a,
                                 "offset": (np.cumsum(lengths_a) - lengths_a).astype(np.int64),
                                 "key": keys_a}), tmp)
    return ShardTokens(source=source, path=path, stem=Path(path).stem, documents=len(ids),
                       tokens=int(lengths_a.sum()), key_histogram=key_histogram(keys_a, lengths_a),
                       dtype=token_dtype(tokenizer.get_vocab_size()).name,
                       seconds=round(time.perf_counter() - started, 3))


# --- held-out records ----------------------------------------------------------------------------

@dataclass
class HeldoutTokens(Result):
    source: str
    documents: int
    tokens: int


def heldout_token_files(out: Path, source: str, path: str) -> list[Path]:
    return [out / "heldout" / source / f"{Path(path).stem}{ext}" for ext in (".bin", ".idx")]


def tokenize_heldout(path: str, source: str, tokenizer_path: str, out_dir: str) -> HeldoutTokens:
    """A curated source's held-out documents -> OUTPUT/heldout/NAME/<shard>.bin/.idx (Megatron), an
    eval set for `refinery train` (configs/train/tiny-falcon.yaml)."""
    from refinery import tokenizer as tk
    from refinery.tokens import write_token_file

    texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()  # a held-out part: small
    tokens = write_token_file(Path(out_dir) / "heldout" / source, Path(path).stem, tk.load(tokenizer_path), texts)
    return HeldoutTokens(source=source, documents=len(texts), tokens=tokens)
