"""Exact content dedup: one document per normalised text across all shards.

The key is a 128-bit hash of the text normalised as for MinHash (NFD, lowercase, punctuation
and accents removed, whitespace collapsed), so copies that differ only in case, punctuation or
spacing are one document. The lowest id is kept, as in the MinHash stage.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from refinery.document import Document
from refinery.text import normalize
from refinery.stage import ExactKeyStage, StageConfig


class ExactDedup(ExactKeyStage):
    name = "exact_dedup"
    reason = "exact_duplicate"
    keys_equal_text = True

    class Config(StageConfig):
        keep: Literal["lowest_id", "newest", "oldest"] = "lowest_id"

    def exact_key(self, doc: Document) -> bytes:
        return hashlib.blake2b(normalize(doc.text).encode("utf-8", "surrogatepass"), digest_size=16).digest()
