"""Language identification with fastText lid.176, batched (RefinedWeb: keep score >= 0.65)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from refinery.document import Document, Drop
from refinery.fasttext_model import default_model_path, load_fasttext, model_problem  # noqa: F401 - also imported from here
from refinery.stage import Stage, StageConfig


class LanguageIdConfig(StageConfig):
    languages: list[str] = Field(default=["en"], min_length=1)
    threshold: float = Field(default=0.65, ge=0.0, le=1.0)
    model_path: str | None = None  # default: lid.176.ftz shipped in refinery/models/
    batch_size: int = Field(default=256, ge=1)

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if code != "*" and not (2 <= len(code) <= 3 and code.isalpha() and code.islower()):
                raise ValueError(f"not an ISO 639 language code: {code!r} (use '*' to keep all)")
        return value

    @field_validator("model_path")
    @classmethod
    def _model_exists(cls, value: str | None) -> str | None:
        path = Path(value) if value is not None else default_model_path()
        if not path.is_file():
            raise ValueError(f"no fastText model file at {str(path)!r}")
        return value


def model_file(config: LanguageIdConfig) -> Path:
    return Path(config.model_path) if config.model_path else default_model_path()


class LanguageId(Stage):
    name: ClassVar[str] = "language_id"
    reasons: ClassVar[tuple[str, ...]] = ("below_threshold", "language_not_kept")
    summary_key: ClassVar[str] = "languages"  # documents kept per language, in stats.json
    Config = LanguageIdConfig

    def __init__(self, config=None):
        super().__init__(config)
        self.batch_size = self.config.batch_size
        self._seen: Counter = Counter()
        self._kept: Counter = Counter()

    @classmethod
    def preflight(cls, config: LanguageIdConfig) -> None:
        """The model file must load: a file that is not a fastText model is a config error."""
        path = model_file(config)
        problem = model_problem(path)
        if problem:
            from refinery.config import ConfigError

            raise ConfigError("model_path", f"{str(path)!r} is not a usable fastText model: {problem}")

    def setup(self) -> None:
        self._model = load_fasttext(model_file(self.config))
        self._keep_all = "*" in self.config.languages
        self._languages = frozenset(self.config.languages)

    def predict(self, texts: list[str]) -> list[tuple[str, float]]:
        """Top language and its probability for each text (newlines folded, as fastText needs)."""
        lines = [" ".join(text.split()) for text in texts]
        labels, probs = self._model.predict(lines, k=1)
        return [(label[0].removeprefix("__label__"), float(prob[0])) for label, prob in zip(labels, probs)]

    def process_batch(self, docs: list[Document]) -> list[Document | Drop]:
        out: list[Document | Drop] = []
        for doc, (language, score) in zip(docs, self.predict([d.text for d in docs])):
            doc.language, doc.language_score = language, score
            self._seen[language] += 1
            if not self._keep_all and language not in self._languages:
                out.append(Drop(doc, "language_not_kept"))
            elif score < self.config.threshold:
                out.append(Drop(doc, "below_threshold"))
            else:
                self._kept[language] += 1
                out.append(doc)
        return out

    def extra_stats(self) -> dict:
        return {"languages_seen": dict(self._seen), "languages_kept": dict(self._kept)}
