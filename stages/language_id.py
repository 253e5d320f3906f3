"""Language identification with fastText lid.176, batched (RefinedWeb: keep score >= 0.65)."""

from __future__ import annotations

import functools

from collections import Counter
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from refinery.document import Document, Drop
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


MODEL_CHECK_TIMEOUT_S = 120.0
MODEL_CHECK_MEMORY_BYTES = 1 << 30  # plus 8 times the file's size: a python with fastText needs ~170 MB
_MODEL_CHECK = """
import os, resource, sys
from pathlib import Path
for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # thread stacks count too
    os.environ[name] = "1"
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
from refinery.stages.language_id import load_fasttext
load_fasttext(Path(sys.argv[1])).predict("a short text", k=1)
"""
_models_checked: dict[tuple, str | None] = {}


def model_problem(path: Path) -> str | None:
    """None if the fastText model at ``path`` loads and predicts, else why not, in one line.

    It is loaded in a child process under a time and memory limit: fastText reads a truncated
    model by looping at the end of the file (it grows a string until memory runs out), and a file
    that is not a model can make it allocate without bound."""
    import subprocess
    import sys

    from refinery.sandbox import PACKAGE_ROOT

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _models_checked:
        limit = MODEL_CHECK_MEMORY_BYTES + 8 * stat.st_size
        try:
            proc = subprocess.run([sys.executable, "-c", _MODEL_CHECK, str(path.resolve()), str(limit)],
                                  cwd=PACKAGE_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=MODEL_CHECK_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            problem = f"loading it took over {MODEL_CHECK_TIMEOUT_S:g} s"
        else:
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            problem = None if proc.returncode == 0 else (lines[-1][:200] if lines else f"exit {proc.returncode}")
            if problem and ("MemoryError" in problem or "bad_alloc" in problem):
                problem = "loading it ran out of memory (a truncated or corrupt file?)"
        _models_checked[key] = problem
    return _models_checked[key]


def default_model_path() -> Path:
    """lid.176.ftz as shipped inside refinery (refinery/models/, CC BY-SA 3.0, see its NOTICE.md)."""
    from importlib.resources import files

    return Path(str(files("refinery") / "models" / "lid.176.ftz"))


def model_file(config: LanguageIdConfig) -> Path:
    return Path(config.model_path) if config.model_path else default_model_path()


def load_fasttext(path: Path):
    """The model at ``path``, loaded once per process (and again if the file changes)."""
    stat = Path(path).stat()
    return _load_fasttext(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_fasttext(path: str, size: int, mtime_ns: int):
    import fasttext

    if not hasattr(fasttext, "train_supervised"):
        raise ImportError(
            "the `fasttext` module is fasttext-predict, not fasttext-numpy2-wheel; run "
            "`pip install --force-reinstall --no-deps fasttext-numpy2-wheel==0.9.2`"
        )
    # fasttext.load_model prints a deprecation banner on stderr; _FastText is the same loader.
    from fasttext.FastText import _FastText

    return _FastText(model_path=str(path))


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
