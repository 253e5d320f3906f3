"""Token shard files: Megatron-LM's indexed dataset and datatrove/nanotron's `.ds` format.

One :class:`TokenShardWriter` writes one output file in either or both formats, document by
document, with bounded memory (tokens are appended to the data file as they come; only the
per-document lengths are kept until the index is written). Files appear atomically: everything is
written under temporary names and renamed at :meth:`TokenShardWriter.close`.

Megatron-LM (`megatron/core/datasets/indexed_dataset.py`), one sequence per document:

- ``NAME.bin``: the token ids, concatenated, in the index's dtype.
- ``NAME.idx``: ``b"MMIDIDX\\x00\\x00"``, version ``<Q`` = 1, dtype code ``<B`` (uint16 = 8;
  int32 = 4, Megatron has no uint32), sequence count ``<Q``, document count ``<Q`` (sequences + 1),
  then the sequence lengths (int32), the sequence byte pointers into ``.bin`` (int64) and the
  document indices (int64: 0, 1, ..., sequences).

datatrove/nanotron (`datatrove.pipeline.tokens.tokenizer.TokenizedFile`):

- ``NAME.ds``: the token ids, little-endian uint16 (``token_size`` 2) or uint32 (4).
- ``NAME.ds.index``: the end offset (in tokens) of each document, ``<Q`` each.
- ``NAME.ds.metadata``: three lines: ``TOKENIZER|token_size``, the token count, the count in
  human units.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator

import numpy as np

from refinery.io import temporary_suffix

MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_VERSION = 1
MEGATRON_DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
                        np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7,
                        np.dtype(np.uint16): 8}
FORMATS = ("megatron", "datatrove")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65,536), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def megatron_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.int32) if np.dtype(dtype) == np.uint32 else np.dtype(dtype)


def _human(count: int) -> str:
    """What datatrove writes on the metadata's third line (humanize ships with datatrove)."""
    import humanize

    return humanize.metric(count, unit="T")


def encode_documents(tokenizer, texts: list[str], eos_id: int, dtype: np.dtype) -> list[np.ndarray]:
    """Each text's token ids followed by ``eos_id``, as arrays of ``dtype``.

    One ``encode_batch_fast`` call (the tokenizers library's batch encoder without offsets, on
    its own thread pool); the only Python work per document is copying its ids into an array."""
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    out = []
    for encoding in encodings:
        ids = encoding.ids
        array = np.empty(len(ids) + 1, dtype=dtype)
        array[:-1] = ids
        array[-1] = eos_id
        out.append(array)
    return out


def encoded_parquet(tokenizer, path: str | Path, batch_size: int = 1024) -> Iterator[tuple[str, str, np.ndarray]]:
    """(id, text, token ids) of every document of a documents Parquet file, in order, encoded a
    batch at a time; the ids end with the tokenizer's end-of-text id. The one tokenization core of
    mixes and ablations."""
    import pyarrow.parquet as pq

    from refinery.tokenizer import eos_id

    eos, dtype = eos_id(tokenizer), token_dtype(tokenizer.get_vocab_size())
    for batch in pq.ParquetFile(path).iter_batches(columns=["id", "text"], batch_size=batch_size):
        texts = batch.column("text").to_pylist()
        yield from zip(batch.column("id").to_pylist(), texts, encode_documents(tokenizer, texts, eos, dtype))


def write_token_file(folder: str | Path, name: str, tokenizer, texts: list[str]) -> int:
    """``texts`` (each ending with the end-of-text id) as one Megatron ``folder/name.bin/.idx``;
    returns the tokens written. Nothing is written for no texts (and an earlier file of that name
    is removed). For small held-out parts, encoded at once."""
    from refinery.tokenizer import eos_id

    if not texts:
        for ext in (".bin", ".idx"):
            (Path(folder) / f"{name}{ext}").unlink(missing_ok=True)
        return 0
    writer = TokenShardWriter(folder, name, tokenizer.get_vocab_size(), ("megatron",))
    try:
        for tokens in encode_documents(tokenizer, texts, eos_id(tokenizer), token_dtype(tokenizer.get_vocab_size())):
            writer.add(tokens)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return writer.tokens


class TokenShardWriter:
    """Writes one shard, ``folder/name`` plus each format's suffixes."""

    def __init__(self, folder: str | Path, name: str, vocab_size: int, formats: tuple[str, ...] = FORMATS,
                 tokenizer_name: str = "tokenizer"):
        unknown = set(formats) - set(FORMATS)
        if unknown:
            raise ValueError(f"unknown token formats {sorted(unknown)}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.formats = tuple(formats)
        self.dtype = token_dtype(vocab_size)
        self.tokenizer_name = tokenizer_name
        self.lengths: list[int] = []
        self.tokens = 0
        suffix = temporary_suffix()
        self._final: dict[str, Path] = {}
        self._placed: list[Path] = []  # final files renamed into place by close()
        self._data = {}
        if "megatron" in self.formats:
            self._data["megatron"] = self._open(".bin", suffix)
        if "datatrove" in self.formats:
            self._data["datatrove"] = self._open(".ds", suffix)

    def _open(self, ext: str, suffix: str):
        final = self.folder / f"{self.name}{ext}"
        self._final[ext] = final
        return open(final.with_name(final.name + suffix), "wb")

    def add(self, tokens) -> None:
        """Appends one document's token ids (its end-of-text token included)."""
        array = np.asarray(tokens)
        if array.size and (array.min() < 0 or array.max() >= np.iinfo(self.dtype).max + 1):
            raise ValueError(f"token id out of range for {self.dtype}")
        for fmt, handle in self._data.items():
            dtype = megatron_dtype(self.dtype) if fmt == "megatron" else self.dtype
            handle.write(array.astype(dtype.newbyteorder("<"), copy=False).tobytes())
        self.lengths.append(int(array.size))
        self.tokens += int(array.size)

    def close(self) -> dict[str, str]:
        """Writes the index files and renames everything into place; returns the file paths."""
        lengths = np.asarray(self.lengths, dtype=np.int64)
        written = {}
        for fmt, handle in self._data.items():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        if "megatron" in self._data:
            dtype = megatron_dtype(self.dtype)
            pointers = np.zeros(len(lengths), dtype=np.int64)
            if len(lengths):
                pointers[1:] = np.cumsum(lengths[:-1]) * dtype.itemsize
            with open(self.folder / f"{self.name}.idx{temporary_suffix()}", "wb") as idx:
                idx.write(MEGATRON_HEADER)
                idx.write(struct.pack("<Q", MEGATRON_VERSION))
                idx.write(struct.pack("<B", MEGATRON_DTYPE_CODES[dtype]))
                idx.write(struct.pack("<Q", len(lengths)))
                idx.write(struct.pack("<Q", len(lengths) + 1))
                idx.write(lengths.astype("<i4").tobytes())
                idx.write(pointers.astype("<i8").tobytes())
                idx.write(np.arange(len(lengths) + 1, dtype="<i8").tobytes())
            self._place(self.folder / f"{self.name}.idx{temporary_suffix()}", self.folder / f"{self.name}.idx")
            self._place(self._data["megatron"].name, self._final[".bin"])
            written.update(bin=str(self._final[".bin"]), idx=str(self.folder / f"{self.name}.idx"))
        if "datatrove" in self._data:
            base = self._final[".ds"]
            Path(f"{base}.index{temporary_suffix()}").write_bytes(np.cumsum(lengths).astype("<u8").tobytes())
            self._place(f"{base}.index{temporary_suffix()}", f"{base}.index")
            Path(f"{base}.metadata{temporary_suffix()}").write_text(
                f"{self.tokenizer_name}|{self.dtype.itemsize}\n{self.tokens}\n{_human(self.tokens)}")
            self._place(f"{base}.metadata{temporary_suffix()}", f"{base}.metadata")
            self._place(self._data["datatrove"].name, base)
            written.update(ds=str(base), ds_index=f"{base}.index", ds_metadata=f"{base}.metadata")
        return written

    def _place(self, tmp: str | Path, final: str | Path) -> None:
        os.replace(tmp, final)
        self._placed.append(Path(final))

    def abort(self) -> None:
        """After a failed add() or close(): removes this shard's temporary and half-placed files, so
        no index is left without its data."""
        for handle in self._data.values():
            handle.close()
        temporaries = [Path(h.name) for h in self._data.values()]
        temporaries += [self.folder / f"{self.name}.idx{temporary_suffix()}"]
        if ".ds" in self._final:
            temporaries += [Path(f"{self._final['.ds']}.index{temporary_suffix()}"), Path(f"{self._final['.ds']}.metadata{temporary_suffix()}")]
        for path in [*temporaries, *self._placed]:
            path.unlink(missing_ok=True)
