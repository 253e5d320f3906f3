"""Model-based quality scores (DCLM, FineWeb-Edu): each configured model scores every document;
the score becomes the ``quality_<name>`` column of documents/*.parquet, and a model with a
threshold also drops what scores below it (reason ``low_quality_<name>``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from refinery.document import Document, Drop
from refinery.paths import PathName
from refinery.stage import Stage, StageConfig


class QualityModel(StageConfig):
    name: PathName  # the column quality_<name>
    path: str  # a fastText .bin/.ftz, or a Hugging Face save_pretrained folder (local; never downloaded)
    kind: Literal["auto", "fasttext", "hf"] = "auto"  # auto: a folder is hf, a file fasttext
    # fastText: the label whose probability is the score (refinery's and DCLM's: __label__hq);
    # hf: a name of config.id2label (default: label 1 of two); a regression head needs none
    positive_label: str | None = None
    threshold: float | None = None  # drop documents scoring below it
    normalize: Literal["dclm", "lines"] = "dclm"  # fastText input: DCLM's normalisation, or newlines folded only
    max_chars: int = Field(default=100_000, gt=0, le=10_000_000)  # each document is scored on its first max_chars
    max_length: int = Field(default=512, gt=0, le=32_768)  # hf: tokens per document
    batch_size: int = Field(default=32, gt=0, le=4096)  # hf: documents per forward pass

    @property
    def column(self) -> str:
        return f"quality_{self.name}"

    @property
    def reason(self) -> str:
        return f"low_quality_{self.name}"

    def resolved_kind(self) -> str:
        from refinery.quality.scorers import model_kind

        return model_kind(self.path) if self.kind == "auto" else self.kind

    def scorer(self):
        from refinery.quality.scorers import FastTextScorer, HFScorer

        if self.resolved_kind() == "hf":
            return HFScorer(self.path, self.positive_label, self.max_length, self.batch_size, self.max_chars)
        return FastTextScorer(self.path, self.positive_label or "__label__hq", self.normalize, self.max_chars)


class QualityClassifierConfig(StageConfig):
    models: list[QualityModel] = Field(min_length=1)
    batch_size: int = Field(default=256, ge=1)  # documents handed to the models at once

    @model_validator(mode="after")
    def _distinct_names(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must differ (each is a column): {names}")
        return self


class QualityClassifier(Stage):
    name: ClassVar[str] = "quality_classifier"
    reasons: ClassVar[tuple[str, ...]] = ()  # per instance: low_quality_<name> for each model with a threshold
    Config = QualityClassifierConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.batch_size = self.config.batch_size
        self.reasons = tuple(m.reason for m in self.config.models if m.threshold is not None)
        self._truncated = 0

    @classmethod
    def score_columns(cls, config: QualityClassifierConfig) -> tuple[str, ...]:
        return tuple(m.column for m in config.models)

    @classmethod
    def preflight(cls, config: QualityClassifierConfig) -> None:
        from refinery.config import ConfigError
        from refinery.quality.scorers import ModelProblem

        for index, model in enumerate(config.models):
            try:
                model.scorer().check()
            except ModelProblem as err:
                raise ConfigError(f"models[{index}].{err.field}", str(err)) from None

    def setup(self) -> None:
        self._scorers = []
        for model in self.config.models:
            scorer = model.scorer()
            scorer.load()
            self._scorers.append((model, scorer))
        self._shortest = min(model.max_chars for model in self.config.models)

    def process_batch(self, docs: list[Document]) -> list[Document | Drop]:
        texts = [doc.text for doc in docs]
        self._truncated += sum(len(t) > self._shortest for t in texts)
        out: list[Document | Drop] = list(docs)
        for model, scorer in self._scorers:
            for i, score in enumerate(scorer.scores(texts)):
                docs[i].scores[model.column] = float(score)
                if model.threshold is not None and score < model.threshold and not isinstance(out[i], Drop):
                    out[i] = Drop(docs[i], model.reason)
        return out

    def extra_stats(self) -> dict:
        return {"scored_on_a_prefix": self._truncated} if self._truncated else {}
