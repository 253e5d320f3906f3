"""Scorers for the ``quality_classifier`` stage: a fastText ``.bin``/``.ftz`` (probability of the
positive label) or a Hugging Face sequence-classification folder (probability of the positive
label, or the single output of a regression head, as FineWeb-Edu's classifier has). Both load
from local paths only; each is loaded once per worker process."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from refinery.quality.text import NORMALIZERS


class ModelProblem(Exception):
    """A model that cannot be used as configured; ``field`` names the config key at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def model_kind(path: str) -> str:
    """``hf`` for a folder (a ``save_pretrained`` directory), else ``fasttext``."""
    return "hf" if Path(path).is_dir() else "fasttext"


class FastTextScorer:
    def __init__(self, path: str, positive_label: str, normalize: str = "dclm", max_chars: int = 100_000):
        self.path, self.positive_label, self.max_chars = path, positive_label, max_chars
        self.line = NORMALIZERS[normalize]

    def check(self) -> None:
        """Raises ModelProblem unless the file is a fastText model with the positive label."""
        from refinery.fasttext_model import load_fasttext, model_problem

        path = Path(self.path)
        if not path.is_file():
            raise ModelProblem("path", f"no model file at {self.path!r}")
        problem = model_problem(path)  # in a child process: a bad file cannot take this one down
        if problem:
            raise ModelProblem("path", f"{self.path!r} is not a usable fastText model: {problem}")
        labels = load_fasttext(path).get_labels()
        if self.positive_label not in labels:
            raise ModelProblem("positive_label", f"{self.positive_label!r} is not a label of {self.path!r} "
                                                 f"(its labels: {', '.join(labels[:10])})")

    def load(self) -> None:
        from refinery.fasttext_model import load_fasttext

        self._model = load_fasttext(Path(self.path))

    def scores(self, texts: list[str]) -> np.ndarray:
        lines = [self.line(text[:self.max_chars]) for text in texts]
        labels, probs = self._model.predict(lines, k=-1, threshold=0.0)
        return np.array([float(p[list(ls).index(self.positive_label)]) if self.positive_label in ls else 0.0
                         for ls, p in zip(labels, probs)], dtype=np.float64)


class HFScorer:
    def __init__(self, path: str, positive_label: str | None = None, max_length: int = 512, batch_size: int = 32,
                 max_chars: int = 100_000, threads: int = 1):
        self.path, self.positive_label, self.max_length = path, positive_label, max_length
        self.batch_size, self.max_chars, self.threads = batch_size, max_chars, threads

    def check(self) -> None:
        try:
            model, _, _ = _load_hf(self.path)
        except Exception as err:  # noqa: BLE001 - any loading failure is the operator's to fix
            raise ModelProblem("path", f"{self.path!r} is not a usable Hugging Face classifier: "
                                       f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
        self._output_index(model.config)

    def _output_index(self, config) -> int | None:
        """The logit whose softmax is the score; None for a regression head (its one output)."""
        if config.num_labels == 1 or config.problem_type == "regression":
            return None
        names = {str(name): int(index) for index, name in config.id2label.items()}
        if self.positive_label is None:
            if config.num_labels == 2:
                return 1
            raise ModelProblem("positive_label", f"{self.path!r} has {config.num_labels} labels "
                                                 f"({', '.join(names)}); name the positive one")
        if self.positive_label in names:
            return names[self.positive_label]
        raise ModelProblem("positive_label", f"{self.positive_label!r} is not a label of {self.path!r} "
                                             f"(its labels: {', '.join(list(names)[:10])})")

    def load(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        self._model, self._tokenizer, self._device = _load_hf(self.path)
        self._index = self._output_index(self._model.config)

    def scores(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = [text[:self.max_chars] for text in texts[start:start + self.batch_size]]
            encoded = self._tokenizer(batch, truncation=True, max_length=self.max_length, padding=True,
                                      return_tensors="pt").to(self._device)
            with torch.inference_mode():
                logits = self._model(**encoded).logits.float()
            if self._index is None:
                out.append(logits[:, 0].cpu().numpy())
            else:
                out.append(torch.softmax(logits, dim=-1)[:, self._index].cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


@functools.lru_cache(maxsize=2)
def _load_hf(path: str):
    """(model, tokenizer, device) from a local folder, offline; CUDA when present."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:  # batches are padded; a decoder's end token serves, as is usual
        if tokenizer.eos_token is None:
            raise ValueError("its tokenizer has neither a padding nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).to(device).eval()
    return model, tokenizer, device
