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

Every task writes its outputs atomically; the engine then writes its completion marker under
``_markers/mix/`` (`refinery/engine/task.py`), so a killed mix resumes where it stopped, with the
same bytes.

The modules: :mod:`~refinery.mix.spec` (the config), :mod:`~refinery.mix.sources` (curated
records, held-out splits, conversion), :mod:`~refinery.mix.tokenize` (steps 2-3),
:mod:`~refinery.mix.plan` (step 4), :mod:`~refinery.mix.write` (step 5), :mod:`~refinery.mix.card`
and :mod:`~refinery.mix.driver` (the task lists on the engine, step 6).
"""

from refinery.mix.driver import execute_mix
from refinery.mix.sources import SourceSpec, curated_texts, held_out_by_record_id, held_out_by_text
from refinery.mix.spec import MixSpec, parse_mix

__all__ = ["MixSpec", "SourceSpec", "curated_texts", "execute_mix", "held_out_by_record_id", "held_out_by_text",
           "parse_mix"]
