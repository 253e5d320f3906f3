"""Corpus-wide selection by quality score (DCLM kept its top ~10%): after dedup, the top
``keep_percent`` of the documents, or of their words or tokens, by one score column or by the mean
of several scores' corpus-wide percentiles. The cut-off is global (one for all shards), found from
per-shard histograms so that no process holds every score; see refinery/quality/select.py."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from refinery.document import Document
from refinery.stage import SelectStage, StageConfig


class QualitySelectConfig(StageConfig):
    scores: list[str] = Field(min_length=1)  # quality_classifier model names (or their quality_<name> columns)
    keep_percent: float = Field(gt=0, le=100)
    by: Literal["documents", "words", "tokens"] = "documents"  # what the percentage is of
    tokenizer_path: str | None = None  # by: tokens: a tokenizer.json (e.g. the one a mix or ablation trained)

    @field_validator("scores")
    @classmethod
    def _columns(cls, value: list[str]) -> list[str]:
        columns = [name if name.startswith("quality_") else f"quality_{name}" for name in value]
        if len(set(columns)) != len(columns):
            raise ValueError(f"a score is named twice: {value}")
        return columns

    @model_validator(mode="after")
    def _tokenizer(self):
        if self.by == "tokens" and not self.tokenizer_path:
            raise ValueError("by: tokens needs tokenizer_path (a tokenizer.json)")
        return self


class QualitySelect(SelectStage):
    name: ClassVar[str] = "quality_select"
    reason: ClassVar[str] = "below_quality_cutoff"
    Config = QualitySelectConfig

    @classmethod
    def preflight(cls, config: QualitySelectConfig) -> None:
        if config.tokenizer_path:
            from refinery.config import ConfigError

            try:
                from tokenizers import Tokenizer

                Tokenizer.from_file(config.tokenizer_path)
            except Exception as err:  # noqa: BLE001 - any failure to load is the operator's to fix
                raise ConfigError("tokenizer_path", f"cannot load {config.tokenizer_path!r}: "
                                                    f"{str(err).splitlines()[0][:200] if str(err) else type(err).__name__}")

    def score_columns(self) -> tuple[str, ...]:
        return tuple(self.config.scores)

    def weights(self, docs: list[Document]) -> list[int]:
        if self.config.by == "documents":
            return [1] * len(docs)
        if self.config.by == "words":
            return [len(d.text.split()) for d in docs]
        if not hasattr(self, "_tokenizer"):
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(self.config.tokenizer_path)
        return [len(e.ids) for e in self._tokenizer.encode_batch([d.text for d in docs], add_special_tokens=False)]
