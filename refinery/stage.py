"""The protocol every stage follows. Stages know nothing of Dask."""

from __future__ import annotations

from typing import ClassVar, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, model_validator

from refinery.document import Document, Drop


class StageConfig(BaseModel):
    """Base of every stage's typed parameters; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Preflight:
    @classmethod
    def preflight(cls, config: StageConfig) -> None:
        """Checks, before any work (and in a dry run), what validating ``config`` cannot: that a
        model loads, say. Raises ``refinery.config.ConfigError(field, message)`` with ``field``
        relative to this stage's parameters (e.g. "model_path"); the caller adds the stage's key
        path. May import what ``setup`` imports; the default checks nothing."""


class Stage(_Preflight):
    """One step of the per-shard chain.

    Simple stages implement `process_doc`; vectorised ones (LID, MinHash, tokenisation)
    override `process_batch` and set `batch_size`. Every drop carries a reason from `reasons`.
    """

    name: ClassVar[str]
    reasons: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[StageConfig]] = StageConfig
    batch_size: ClassVar[int] = 1
    summary_key: ClassVar[str | None] = None  # its summed extra_stats also go to stats.json under this key

    def __init__(self, config: StageConfig | None = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def score_columns(cls, config: StageConfig) -> tuple[str, ...]:
        """Float columns this stage adds to the documents (from ``Document.scores``)."""
        return ()

    def setup(self) -> None:
        """Load models or lists; called once per task, before the first document."""

    def teardown(self) -> None:
        """Release processes or files; called once per task, after the last document."""

    def process_doc(self, doc: Document) -> Document | Drop:
        raise NotImplementedError

    def process_batch(self, docs: list[Document]) -> list[Document | Drop]:
        return [self.process_doc(doc) for doc in docs]

    def extra_stats(self) -> dict:
        """Stage-specific counters that add up across shards (e.g. languages seen)."""
        return {}


class SourceStage:
    """The first step of a chain: turns one input shard into documents."""

    name: ClassVar[str]
    reasons: ClassVar[tuple[str, ...]] = ()

    def read(self, path: str, start: int = 0, end: int | None = None) -> Iterator[Document | Drop]:
        """The documents of ``path``; of its byte range [start, end) where the reader splits files."""
        raise NotImplementedError


class PerLanguageThresholds(StageConfig):
    """Mixin for filter configs whose thresholds can differ per language.

    Subclasses set `Thresholds` to the model holding the thresholds and declare
    `per_language: dict[str, dict[str, float | None]]`, e.g. {de: {max_mean_word_length: 12}}."""

    Thresholds: ClassVar[type[StageConfig]]

    @model_validator(mode="after")
    def _check_per_language(self):
        for overrides in getattr(self, "per_language", {}).values():
            self.Thresholds.model_validate(overrides)  # unknown names and ranges are errors
        return self

    def thresholds(self, language: str):
        base = {name: getattr(self, name) for name in self.Thresholds.model_fields}
        return self.Thresholds.model_validate({**base, **self.per_language.get(language, {})})


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class DedupStage(_Preflight):
    """A corpus-wide step, run after the per-shard chain on all of its output. Its kind is its
    base class, and the pipeline dispatches on that type:

    - :class:`ExactKeyStage`: documents with equal keys are one cluster;
    - :class:`BandKeyStage`: documents sharing an LSH band key are candidates, and connected
      components are clusters;
    - :class:`SpanCutStage`: repeated spans are cut from the documents the others kept;
    - :class:`SelectStage`: the top share of what is left, by score, with a corpus-wide cut-off.

    Per shard, the stage computes keys from each document (no Dask here); the engine resolves them
    across all shards and the losers are dropped with ``reason``.
    """

    name: ClassVar[str]
    reason: ClassVar[str]
    Config: ClassVar[type[StageConfig]] = StageConfig

    def __init__(self, config: StageConfig | None = None):
        self.config = config if config is not None else self.Config()

    @property
    def reasons(self) -> tuple[str, ...]:
        return (self.reason,)


class ExactKeyStage(DedupStage):
    """``exact_key(doc)`` returns bytes (or None: not compared); documents with equal keys are one
    cluster and the ``Config.keep`` rule picks the one kept."""

    keys_equal_text: ClassVar[bool] = False  # equal keys mean equal normalised text (Jaccard 1)

    def exact_key(self, doc: Document) -> bytes | None:
        raise NotImplementedError


class BandKeyStage(DedupStage):
    """``band_keys(docs)`` returns uint64 LSH band keys, shape (len(docs), bands); documents sharing
    a band key are candidates, connected components are clusters, and the lowest id is kept."""

    def band_keys(self, docs: list[Document]):
        raise NotImplementedError


class SpanCutStage(DedupStage):
    """Finds spans repeated across documents, per group of shards, and cuts them after the other
    dedup stages; a document left too short is dropped with ``reason``. It must come last."""


class SelectStage(DedupStage):
    """Keeps the top ``keep_percent`` of the documents (or of their weight: words, tokens) that
    the other corpus-wide stages kept, ranked by ``score_columns``; the cut-off is found for the
    whole corpus from per-shard histograms (refinery.quality.select). It must come last."""

    def score_columns(self) -> tuple[str, ...]:
        raise NotImplementedError

    def weights(self, docs: list[Document]) -> list[int]:
        """Each document's share of the total: 1 for documents, else its size."""
        return [1] * len(docs)
