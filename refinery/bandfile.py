"""One shard's MinHash band keys on disk, laid out so that one band of every shard reads cheaply.

A band file is a 32-byte header and then chunks, one per batch of ``chunk_rows`` documents (the
last may be shorter). A chunk is band-major: ``bands`` runs of ``rows_in_chunk`` keys, each key
``key_bytes`` little-endian bytes, in document order. The document is implicit (its row in the
shard's keys file), so a (document, band) costs ``key_bytes`` and nothing else; reading band b
of a shard is one strided copy. Keys are written as they are computed, one batch at a time, so
the writer holds one batch; a reader holds one band of one shard.

Why not Parquet: the keys are random 64-bit values, which no encoding compresses, and a long
table of (band, key, document) rows costs 2.5x the bytes of the keys themselves."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAGIC = b"RFBANDS1"
_HEADER = struct.Struct("<8sQIII")  # magic, documents, bands, key_bytes, chunk_rows
HEADER_BYTES = 32


class BandWriter:
    """Appends (n, bands) uint64 key batches to an open binary file; ``close`` writes the header."""

    def __init__(self, file, bands: int, chunk_rows: int, key_bytes: int = 8):
        if not 1 <= key_bytes <= 8:
            raise ValueError(f"key_bytes must be 1..8, got {key_bytes}")
        self.file, self.bands, self.chunk_rows, self.key_bytes = file, bands, chunk_rows, key_bytes
        self.documents = 0
        self._last_short = False
        file.write(b"\0" * HEADER_BYTES)

    def write(self, keys: np.ndarray) -> None:
        keys = np.asarray(keys)
        if keys.ndim != 2 or keys.shape[1] != self.bands or keys.dtype != np.uint64:
            raise ValueError(f"keys must be uint64 of shape (n, {self.bands}), got {keys.dtype} {keys.shape}")
        if len(keys) > self.chunk_rows:
            raise ValueError(f"a batch of {len(keys)} keys is more than chunk_rows={self.chunk_rows}")
        if not len(keys):
            return
        if self._last_short:
            raise ValueError("only the last batch may be shorter than chunk_rows")
        self._last_short = len(keys) < self.chunk_rows
        band_major = np.ascontiguousarray(keys.T).astype("<u8", copy=False)
        raw = band_major.view(np.uint8).reshape(self.bands, len(keys), 8)[:, :, :self.key_bytes]
        self.file.write(np.ascontiguousarray(raw).tobytes())
        self.documents += len(keys)

    def close(self) -> None:
        self.file.seek(0)
        self.file.write(_HEADER.pack(MAGIC, self.documents, self.bands, self.key_bytes, self.chunk_rows).ljust(HEADER_BYTES, b"\0"))
        self.file.seek(0, 2)


def band_file_info(path: str | Path) -> tuple[int, int, int, int]:
    """(documents, bands, key_bytes, chunk_rows) from a band file's header."""
    with open(path, "rb") as file:
        magic, documents, bands, key_bytes, chunk_rows = _HEADER.unpack(file.read(_HEADER.size))
    if magic != MAGIC:
        raise ValueError(f"{path} is not a refinery band file")
    return documents, bands, key_bytes, chunk_rows


def read_band(path: str | Path, band: int) -> np.ndarray:
    """Band ``band``'s keys of every document in the file, in document order, as uint64 (keys
    written with fewer than 8 bytes come back zero-extended)."""
    documents, bands, key_bytes, chunk_rows = band_file_info(path)
    if not 0 <= band < bands:
        raise IndexError(f"band {band} of {bands}")
    out = np.zeros((documents, 8), dtype=np.uint8)
    if not documents:
        return out.view("<u8").reshape(-1).astype(np.uint64)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER_BYTES)
    full, rest = divmod(documents, chunk_rows)
    chunk_bytes = chunk_rows * bands * key_bytes
    if full:
        chunks = data[:full * chunk_bytes].reshape(full, bands, chunk_rows, key_bytes)
        out[:full * chunk_rows, :key_bytes] = chunks[:, band].reshape(-1, key_bytes)
    if rest:
        tail = data[full * chunk_bytes:full * chunk_bytes + rest * bands * key_bytes].reshape(bands, rest, key_bytes)
        out[full * chunk_rows:, :key_bytes] = tail[band]
    del data
    return out.view("<u8").reshape(-1).astype(np.uint64)
