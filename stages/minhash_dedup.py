"""MinHash fuzzy dedup (RefinedWeb: word 5-grams, 9000 hashes in 450 bands of 20 rows).

Per shard this stage computes each document's LSH band keys (`refinery.minhash`, vectorised).
the engine (`refinery/engine/resolve.py`) then shuffles the keys across workers, links documents that share a bucket,
optionally checks each candidate pair's true Jaccard, and keeps the lowest id of every
connected component. FineWeb's 14 bands x 8 rows is `bands: 14, rows: 8`.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from refinery.document import Document
from refinery.stage import BandKeyStage, StageConfig

# bands * rows permutations: the MinHasher keeps two tables of that many, and every batch of documents
# needs batch_size x bands x rows x 8 bytes (signatures and band keys). RefinedWeb's 450 x 20 = 9,000
# permutations at batch_size 256 need 18 MB.
MAX_PERMUTATIONS = 100_000
MAX_BATCH_BYTES = 2 << 30  # 2 GiB per batch, per worker


class MinhashDedup(BandKeyStage):
    name = "minhash_dedup"
    reason = "minhash_duplicate"

    class Config(StageConfig):
        ngram: int = Field(default=5, ge=1, le=64)
        bands: int = Field(default=450, ge=1)
        rows: int = Field(default=20, ge=1)
        seed: int = 1
        batch_size: int = Field(default=256, ge=1)
        # A candidate pair is merged only if its true word-n-gram Jaccard reaches the threshold.
        verify: bool = False
        verify_threshold: float = Field(default=0.5, ge=0, le=1)
        # True Jaccard of each duplicate to its cluster's kept document, for clusters.parquet.
        jaccard_to_kept: bool = True
        # Bytes kept of each 64-bit band key on disk: 450 bands cost 1,800 bytes a document at 4,
        # 3,600 at 8. Fewer bytes make unrelated documents share a stored key, about
        # bands * n^2 / 2 * 2^(-8 * bytes) pairs among n documents (4 bytes: ~52,000 per million; 5:
        # ~200); the resolution recomputes the full keys of every document in a shared bucket and
        # links only those equal in all 64 bits, so the result is the same at any width and only
        # the recomputation grows (at 4 bytes, about a fifth of the documents at 10^6).
        band_key_bytes: int = Field(default=4, ge=4, le=8)

        @field_validator("bands", "rows")
        @classmethod
        def _permutations(cls, value: int, info: ValidationInfo) -> int:
            permutations = value * info.data.get("bands", 1) if info.field_name == "rows" else value
            if permutations > MAX_PERMUTATIONS:
                raise ValueError(f"bands x rows = {permutations:,} permutations; at most {MAX_PERMUTATIONS:,} "
                                 "(RefinedWeb: 450 x 20 = 9,000)")
            return value

        @field_validator("batch_size")
        @classmethod
        def _batch_fits(cls, value: int, info: ValidationInfo) -> int:
            batch_bytes = value * info.data.get("bands", 1) * info.data.get("rows", 1) * 8
            if batch_bytes > MAX_BATCH_BYTES:
                raise ValueError(f"batch_size x bands x rows x 8 = {batch_bytes:,} bytes per batch; at most "
                                 f"{MAX_BATCH_BYTES:,} (2 GiB): lower batch_size")
            return value

    def __init__(self, config: StageConfig | None = None):
        super().__init__(config)
        self._hasher = None

    @property
    def hasher(self):
        if self._hasher is None:
            from refinery.minhash import MinHasher

            c = self.config
            self._hasher = MinHasher(num_perm=c.bands * c.rows, bands=c.bands, rows=c.rows, seed=c.seed, ngram=c.ngram)
        return self._hasher

    def band_keys(self, docs: list[Document]) -> np.ndarray:
        """uint64 keys, shape (len(docs), bands)."""
        return self.hasher.band_keys(self.hasher.signatures([d.text for d in docs]))
