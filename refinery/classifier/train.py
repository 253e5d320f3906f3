"""`refinery classifier train CONFIG`: a DCLM-style fastText quality classifier.

Positives are reference sources (curated files, or a run's documents/); negatives are a seeded
sample of a pipeline run's documents (run here first, e.g. RefinedWeb's RW-Raw stages over the
crawl). Each document's side of the split and its place in the sample come from a seeded hash of
(source, id, position), so the same config gives the same model. Text is normalised as DCLM does
(:func:`refinery.quality.text.dclm_line`), the model uses word bigrams, and a held-out split gives
AUC, precision and recall at ``threshold``. Outputs: model.bin, metrics.json, features.json and
MODEL_CARD.md."""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
from pydantic import Field, ValidationError, model_validator

from refinery.config import ConfigError, RunConfig, _first_error, _Strict, named_key, resolve_paths
from refinery.engine.task import Result
from refinery.paths import PathName

CLASSIFIER_PATH_KEYS = ("output", "positives[].paths[]", "positives[].config", "positives[].input[]",
                        "negatives[].paths[]", "negatives[].config", "negatives[].input[]")
SPLIT_BUCKETS = 64  # training lines are spread over this many files by their sample key: a bounded shuffle


class ClassSource(_Strict):
    """One source of examples: curated files (``paths``: JSONL(.gz), Parquet such as a run's
    documents/*.parquet, folders of .txt) or a pipeline run (``config``, cut to ``stages`` and
    ``dedup`` as an ablation variant is, over ``input``)."""

    name: PathName
    paths: list[str] | None = None
    config: str | None = None
    input: list[str] | None = None  # the pipeline's inputs (default: its config's)
    stages: list[str] | Literal["all"] = "all"
    dedup: list[str] | Literal["all"] = Field(default_factory=list)  # RW-Raw: no dedup
    text_field: str = "text"
    id_field: str = "id"
    format: Literal["plain", "code", "chat"] = "plain"

    @model_validator(mode="after")
    def _one_kind(self):
        from refinery.mix.spec import exactly_one

        return exactly_one(self, "config", "paths", "give either `config` (a pipeline run) or `paths` (files)")


class FastTextSettings(_Strict):
    epoch: int = Field(default=10, ge=1, le=1000)
    lr: float = Field(default=0.1, gt=0, le=10)
    dim: int = Field(default=64, ge=2, le=1024)
    word_ngrams: int = Field(default=2, ge=1, le=5)  # DCLM: bigrams
    min_count: int = Field(default=2, ge=1)
    bucket: int = Field(default=200_000, ge=1000, le=50_000_000)  # rows of bigram hashes: dim x bucket x 4 bytes


class ClassifierSpec(_Strict):
    name: PathName
    output: str | None = None
    positives: list[ClassSource] = Field(min_length=1)
    negatives: list[ClassSource] = Field(min_length=1)
    positive_label: str = Field(default="__label__hq", pattern=r"^__label__\S+$")
    negative_label: str = Field(default="__label__cc", pattern=r"^__label__\S+$")
    max_per_class: int = Field(default=20_000, ge=10)  # a seeded sample of each side (positives, negatives)
    heldout_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    threshold: float = Field(default=0.5, gt=0, lt=1)  # precision and recall are reported at it
    seed: int = 1
    max_chars: int = Field(default=100_000, gt=0)  # each document is used up to this many characters
    # curated records that a mix or ablation with this heldout_fraction keeps out for evaluation (by
    # record id) are left out here too, so that no evaluation text teaches the classifier
    exclude_heldout_fraction: float = Field(default=0.0, ge=0, lt=0.5)
    fasttext: FastTextSettings = FastTextSettings()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _distinct(self):
        names = [s.name for s in [*self.positives, *self.negatives]]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must differ: {names}")
        if self.positive_label == self.negative_label:
            raise ValueError("positive_label and negative_label must differ")
        return self


def parse_classifier(raw, path: str = "") -> ClassifierSpec:
    if not isinstance(raw, dict):
        raise ConfigError("(root)", "the config must be a YAML mapping")
    raw = resolve_paths(raw, CLASSIFIER_PATH_KEYS, path)
    try:
        return ClassifierSpec.model_validate(raw)
    except ValidationError as err:
        error = _first_error(err)
        for section in ("positives", "negatives"):
            error.key = named_key(error.key, section, raw.get(section))
        raise ConfigError(error.key, error.message) from None


# --- checks before any work ------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckedSource:
    source: ClassSource
    key: str  # its config key, e.g. negatives[0] (rw-raw)
    files: list[str] = field(default_factory=list)  # curated files
    pipeline: object | None = None  # its PipelineConfig
    shards: list = field(default_factory=list)


def check_classifier(spec: ClassifierSpec) -> list[CheckedSource]:
    """Every source found (files match, pipelines validate and preflight) and every curated
    positive holds at least one text, before any work."""
    from refinery.config import preflight
    from refinery.mix.spec import curated_paths

    checked = []
    for section in ("positives", "negatives"):
        for index, source in enumerate(getattr(spec, section)):
            key = f"{section}[{index}] ({source.name})"
            if source.paths is not None:
                files = curated_paths(source.paths, f"{key}.paths")
                if not any(text for _, _, text in _source_texts(source, files, spec.max_chars)):
                    raise ConfigError(f"{key}.paths", f"no document with text in {source.paths} "
                                                      f"(field {source.text_field!r})")
                checked.append(CheckedSource(source, key, files=files))
            else:
                config = _pipeline(source, key)
                try:
                    preflight(config)
                    from refinery.io import expand_inputs

                    shards = expand_inputs(config.spec.input.paths, config.spec.input)
                except ConfigError as err:
                    raise ConfigError(f"{key}.config", f"{source.config}: {err}") from None
                checked.append(CheckedSource(source, key, pipeline=config, shards=shards))
    return checked


def _pipeline(source: ClassSource, key: str):
    from refinery.ablate.spec import AblationSpec, VariantSpec, variant_config
    from refinery.config import with_overrides

    ablation = AblationSpec.model_construct(name=source.name, base=source.config)
    variant = VariantSpec(name=source.name, stages=source.stages, dedup=source.dedup)
    try:
        config = variant_config(ablation, variant, key=key)
        return with_overrides(config, inputs=source.input)
    except ConfigError as err:
        raise ConfigError(f"{key}.{err.key}" if not err.key.startswith(key) else err.key, err.message) from None


# --- examples --------------------------------------------------------------------------------------

def _source_texts(source: ClassSource, files: list[str], max_chars: int,
                  exclude_heldout: float = 0.0) -> Iterator[tuple[str, int, str]]:
    """(file, position, text) of each record of curated files (text "" when it has none, or when
    the record is held out for evaluation at ``exclude_heldout``)."""
    from refinery.mix.sources import curated_texts, held_out_by_record_id
    from refinery.mix.spec import SourceSpec

    as_curated = SourceSpec(name=source.name, paths=files, text_field=source.text_field,
                            id_field=source.id_field, format=source.format)
    for path in files:
        for position, (record_id, text) in enumerate(curated_texts(path, as_curated)):
            held = exclude_heldout and source.paths is not None and held_out_by_record_id(record_id, exclude_heldout)
            yield path, position, "" if held else text[:max_chars]


def _hash(seed: int, *parts) -> int:
    digest = hashlib.blake2b(json.dumps([seed, *parts]).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _sample_keys(texts: Iterator[tuple[str, int, str]], name: str, seed: int) -> Iterator[tuple[int, str, int]]:
    for path, position, text in texts:
        if text.strip():
            yield _hash(seed, "sample", name, os.path.basename(path), position), path, position


@dataclass
class SplitCounts:
    train: dict[str, int] = field(default_factory=dict)
    heldout: dict[str, int] = field(default_factory=dict)
    available: dict[str, int] = field(default_factory=dict)


def write_split(spec: ClassifierSpec, sides: dict[str, list[tuple[CheckedSource, list[str]]]], folder: Path) -> SplitCounts:
    """fastText lines (``__label__X text``) for the training and held-out sides, from a seeded
    sample of at most ``max_per_class`` documents per side. Two passes over each source: the
    sample keys first (no text is held), then the chosen texts, spread over SPLIT_BUCKETS files by
    key and joined in key order, so that the training file is shuffled in bounded memory."""
    from refinery.quality.text import dclm_line

    counts = SplitCounts()
    folder.mkdir(parents=True, exist_ok=True)
    buckets = [open(folder / f"bucket-{b:02d}.fasttext.part", "w", encoding="utf-8") for b in range(SPLIT_BUCKETS)]
    heldout = open(folder / "heldout.fasttext.part", "w", encoding="utf-8")
    try:
        for label, sources in sides.items():
            smallest: list[tuple[int, str, str, int]] = []  # a max-heap of the max_per_class lowest keys, negated
            available = 0
            for checked, files in sources:
                texts = _source_texts(checked.source, files, spec.max_chars, spec.exclude_heldout_fraction)
                for key, path, position in _sample_keys(texts, checked.source.name, spec.seed):
                    available += 1
                    item = (-key, checked.source.name, path, position)
                    if len(smallest) < spec.max_per_class:
                        heapq.heappush(smallest, item)
                    elif item > smallest[0]:
                        heapq.heapreplace(smallest, item)
            counts.available[label] = available
            chosen = {(name, path, position): -neg for neg, name, path, position in smallest}
            counts.train[label], counts.heldout[label] = 0, 0
            for checked, files in sources:
                for path, position, text in _source_texts(checked.source, files, spec.max_chars,
                                                          spec.exclude_heldout_fraction):
                    key = chosen.get((checked.source.name, path, position))
                    if key is None:
                        continue
                    line = f"{label} {dclm_line(text)}\n"
                    if _hash(spec.seed, "heldout", checked.source.name, os.path.basename(path), position) / 2**64 \
                            < spec.heldout_fraction:
                        heldout.write(line)
                        counts.heldout[label] += 1
                    else:
                        buckets[key * SPLIT_BUCKETS >> 64].write(f"{key:020d} {line}")
                        counts.train[label] += 1
    finally:
        for handle in [*buckets, heldout]:
            handle.close()
    with open(folder / "train.fasttext.part", "w", encoding="utf-8") as train:
        for b in range(SPLIT_BUCKETS):
            part = folder / f"bucket-{b:02d}.fasttext.part"
            with open(part, encoding="utf-8") as handle:
                for line in sorted(handle):
                    train.write(line.split(" ", 1)[1])
            part.unlink()
    for name in ("train", "heldout"):
        os.replace(folder / f"{name}.fasttext.part", folder / f"{name}.fasttext")
    return counts


# --- metrics ----------------------------------------------------------------------------------------

def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the Mann-Whitney U statistic, ties counted half."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0  # the mean rank of each run of ties
    ranks[order] = np.repeat(average, counts)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def metrics_at(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict:
    predicted = scores >= threshold
    tp = int((predicted & positive).sum())
    fp = int((predicted & ~positive).sum())
    fn = int((~predicted & positive).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"threshold": threshold, "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
            "accuracy": round(float((predicted == positive).mean()), 4) if len(scores) else 0.0}


def evaluate(model, lines_file: Path, spec: ClassifierSpec) -> tuple[dict, np.ndarray, np.ndarray, list[str]]:
    """AUC and the metrics at the threshold over a file of labelled lines; also the scores."""
    scores, positive, texts = [], [], []
    with open(lines_file, encoding="utf-8") as handle:
        for line in handle:
            label, _, text = line.rstrip("\n").partition(" ")
            texts.append(text[:300])
            positive.append(label == spec.positive_label)
            labels, probs = model.predict(text, k=-1, threshold=0.0)
            scores.append(float(probs[list(labels).index(spec.positive_label)]) if spec.positive_label in labels else 0.0)
    scores_a, positive_a = np.array(scores), np.array(positive, dtype=bool)
    result = {"documents": len(scores), "positives": int(positive_a.sum()), "negatives": int((~positive_a).sum()),
              "auc": round(roc_auc(scores_a, positive_a), 4), **metrics_at(scores_a, positive_a, spec.threshold)}
    return result, scores_a, positive_a, texts


# --- the command -------------------------------------------------------------------------------------

@dataclass
class ClassifierResult(Result):
    model: str
    metrics: dict = field(default_factory=dict)


def spec_fingerprint(spec: ClassifierSpec) -> str:
    body = spec.model_dump(exclude={"output", "run"})
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_classifier(spec: ClassifierSpec, out_dir: str, checked: list[CheckedSource], scheduler: str | None = None,
                     workers: int | None = None, log=print) -> dict:
    """The pipeline sources run first (resumable, as any run), then the split, training and
    metrics as one task whose marker knows the sources' files."""
    from refinery.engine import Engine, Task, run_task
    from refinery.pipeline.run import execute

    out = Path(out_dir)
    started = time.perf_counter()
    sides: dict[str, list[tuple[CheckedSource, list[str]]]] = {spec.positive_label: [], spec.negative_label: []}
    run = spec.run.model_copy(update={"workers": workers}) if workers else spec.run
    pipelines = [c for c in checked if c.pipeline is not None]
    if pipelines:
        from refinery.config import with_overrides

        with Engine.for_run(run, scheduler) as engine:
            for c in pipelines:
                folder = out / "sources" / c.source.name
                config = with_overrides(c.pipeline, output=str(folder), workers=run.workers)
                log(f"source {c.source.name}: {' -> '.join(s.name for s in [*config.stages, *config.dedup])}")
                stats = execute(config, c.shards, str(folder), engine=engine)
                log(f"  {stats['output']['documents']:,} documents from {stats['input']['records']:,} records")
    for c in checked:
        files = c.files or [str(p) for p in sorted((out / "sources" / c.source.name / "documents").glob("*.parquet"))]
        label = spec.positive_label if c.key.startswith("positives") else spec.negative_label
        sides[label].append((c, files))
    empty = [c.key for label, sources in sides.items() for c, files in sources
             if not any(t.strip() for _, _, t in _source_texts(c.source, files, 1000))]
    if empty:
        raise ConfigError(f"{empty[0]}", "gave no document with text: nothing to learn from")
    inputs = tuple(sorted({f for sources in sides.values() for _, files in sources for f in files}))
    task = Task(key="classifier", func=_train, args=(spec, str(out), sides), fingerprint=spec_fingerprint(spec),
                inputs=inputs, outputs=tuple(str(out / n) for n in ("model.bin", "metrics.json", "features.json")),
                marker=str(out / "_markers" / "classifier.done"), result_type=ClassifierResult)
    result = run_task(task)
    metrics = json.loads((out / "metrics.json").read_text())
    from refinery.classifier.card import write_card

    write_card(spec, out, metrics)
    log(f"trained in {time.perf_counter() - started:.1f} s")
    return {**metrics, "model": result.model}


def _train(spec: ClassifierSpec, out_dir: str, sides) -> ClassifierResult:
    from refinery.io import atomic_path, write_json_atomic
    from refinery.quality.features import bigram_weights

    out = Path(out_dir)
    folder = out / "sources" / "_split"
    began = time.perf_counter()
    counts = write_split(spec, sides, folder)
    for label, count in counts.train.items():
        if count == 0:
            raise ConfigError("max_per_class", f"no training document left for {label} after the held-out split")
    settings = spec.fasttext
    import fasttext

    model = fasttext.train_supervised(input=str(folder / "train.fasttext"), epoch=settings.epoch, lr=settings.lr,
                                      dim=settings.dim, wordNgrams=settings.word_ngrams, minCount=settings.min_count,
                                      bucket=settings.bucket, loss="softmax", thread=1, seed=spec.seed, verbose=0)
    train_seconds = time.perf_counter() - began
    heldout, scores, positive, texts = evaluate(model, folder / "heldout.fasttext", spec)
    with atomic_path(out / "model.bin") as tmp:
        model.save_model(str(tmp))
    features = bigram_weights(model, folder / "train.fasttext", spec.positive_label, spec.negative_label)
    order = np.argsort(-scores, kind="mergesort")
    decile = max(1, len(order) // 10)
    samples = {"top_decile": [{"score": round(float(scores[i]), 4), "reference": bool(positive[i]), "text": texts[i]}
                              for i in order[:decile][:5]],
               "bottom_decile": [{"score": round(float(scores[i]), 4), "reference": bool(positive[i]), "text": texts[i]}
                                 for i in order[::-1][:decile][:5]]}
    write_json_atomic(out / "features.json", {**features, "heldout_samples": samples})
    metrics = {
        "name": spec.name, "fingerprint": spec_fingerprint(spec), "seed": spec.seed,
        "labels": {"positive": spec.positive_label, "negative": spec.negative_label},
        "sources": {side: [c.source.name for c, _ in sources] for side, sources in
                    (("positives", sides[spec.positive_label]), ("negatives", sides[spec.negative_label]))},
        "documents": {"available": counts.available, "train": counts.train, "heldout": counts.heldout},
        "fasttext": settings.model_dump(), "normalize": "dclm", "max_chars": spec.max_chars,
        "heldout": heldout, "train_seconds": round(train_seconds, 3),
    }
    write_json_atomic(out / "metrics.json", metrics)
    for name in ("train", "heldout"):  # the sample is remade from the sources when needed
        (folder / f"{name}.fasttext").unlink(missing_ok=True)
    return ClassifierResult(model=str(out / "model.bin"), metrics=heldout)
