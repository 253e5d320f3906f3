"""Benchmark decontamination: a document that shares an n-gram (13 normalised words by default, as
GPT-3 and datatrove) with an item of a local evaluation set is dropped (``contaminated``); the set
and item go into the dropped samples' ``detail``.

Evaluation sets are local files, never downloaded: JSON Lines (``.jsonl``, ``.jsonl.gz``), Parquet,
or plain text (one item a line), with a ``text_field`` or a ``template`` of fields
(``"{question} {answer}"``). Words are those of :func:`decontamination_text`: case, accents and
punctuation do not matter. An item shorter than ``n`` words but of at least ``min_item_words`` is
matched whole; shorter ones are skipped (counted).

The index is every distinct n-gram hash, 64 bits, in a sorted array beside the number of its item
(32 bits): 12 bytes an n-gram; 10^6 items of 30 words make 1.8 x 10^7 n-grams, 216 MB. With 64-bit
hashes, a document of m n-grams meets a false match with probability about m x N / 2^64 against N
indexed n-grams: 10^-8 for m = 10^4 and N = 1.8 x 10^7. The driver's check builds it once into
REFINERY_CACHE/decontaminate/<identity>/ (one .npy per array), and each worker process maps it once
(the pages are shared between the workers of a machine); a worker without that folder builds it
itself, once. An unreadable set, or one without a usable item, is a config error."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np
from pydantic import Field

from refinery.document import Document, Drop
from refinery.paths import PathName
from refinery.stage import Stage, StageConfig
from refinery.text import normalize

CONTAMINATED = "contaminated"
_SEPARATORS = re.compile(r"[-‐‑‒–—―/\\|_…]")  # joiners that separate words: spaced, not removed


def decontamination_text(text: str) -> str:
    """Lowercased words without accents or punctuation; dashes and slashes separate words."""
    return normalize(_SEPARATORS.sub(" ", text))


class EvalSet(StageConfig):
    name: PathName
    paths: list[str] = Field(min_length=1)  # .jsonl, .jsonl.gz, .parquet, or .txt (one item a line)
    text_field: str = "text"
    template: str | None = None  # e.g. "{question} {answer}": fields of each record, instead of text_field


class DecontaminateConfig(StageConfig):
    sets: list[EvalSet] = Field(min_length=1)
    n: int = Field(default=13, ge=3, le=64)
    min_item_words: int = Field(default=8, ge=1)  # shorter items are skipped; items under n words match whole


def _records(path: str) -> Iterator[dict | str]:
    name = path.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if not line.strip():
                continue
            if name.endswith((".jsonl", ".jsonl.gz", ".json")):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record
            else:
                yield line.rstrip("\n")


def item_texts(spec: EvalSet) -> Iterator[tuple[int, str]]:
    """(row, text) of each item of a set, in file order ("" where a record lacks the fields)."""
    row = 0
    for path in spec.paths:
        for record in _records(path):
            if isinstance(record, str):
                text = record
            elif spec.template is not None:
                try:
                    text = spec.template.format_map({k: "" if v is None else v for k, v in record.items()})
                except (KeyError, IndexError, ValueError):
                    text = ""
            else:
                text = record.get(spec.text_field)
                text = text if isinstance(text, str) else ""
            yield row, text
            row += 1


@dataclass
class Index:
    """Per window length: sorted n-gram hashes and, beside each, its item; an item is a set (an
    index into ``sets``) and a row of that set."""

    hashes: dict[int, np.ndarray]
    owners: dict[int, np.ndarray]
    item_sets: np.ndarray  # int16, per item
    item_rows: np.ndarray  # int64, per item
    sets: list[str]
    skipped: int = 0

    def first_match(self, words: str) -> tuple[str, int] | None:
        from refinery.windowhash import window_hashes

        for length, hashes in self.hashes.items():
            grams = window_hashes(words, length)
            if not len(grams) or not len(hashes):
                continue
            at = np.searchsorted(hashes, grams)
            at[at == len(hashes)] = 0
            hit = np.flatnonzero(hashes[at] == grams)
            if len(hit):
                item = int(self.owners[length][at[hit[0]]])
                return self.sets[int(self.item_sets[item])], int(self.item_rows[item])
        return None

    def save(self, folder: Path) -> None:
        """One .npy per array, so that every worker of a machine maps the same pages."""
        from refinery.io import atomic_path

        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"item_sets": self.item_sets, "item_rows": self.item_rows,
                  **{f"hashes-{n}": h for n, h in self.hashes.items()},
                  **{f"owners-{n}": o for n, o in self.owners.items()}}
        for name, array in arrays.items():
            with atomic_path(folder / f"{name}.npy") as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, array)
        with atomic_path(folder / "index.json") as tmp:  # written last: the folder is whole
            tmp.write_text(json.dumps({"sets": self.sets, "lengths": list(self.hashes), "skipped": self.skipped}))

    @classmethod
    def load(cls, folder: Path) -> Index:
        meta = json.loads((folder / "index.json").read_text())
        mapped = functools.partial(np.load, mmap_mode="r")
        return cls({n: mapped(folder / f"hashes-{n}.npy") for n in meta["lengths"]},
                   {n: mapped(folder / f"owners-{n}.npy") for n in meta["lengths"]},
                   mapped(folder / "item_sets.npy"), mapped(folder / "item_rows.npy"), meta["sets"], meta["skipped"])

    @property
    def ngrams(self) -> int:
        return sum(len(h) for h in self.hashes.values())


def build_index(config: DecontaminateConfig) -> Index:
    from refinery.windowhash import window_hashes

    parts: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    item_sets, item_rows = [], []
    skipped = 0
    for set_number, spec in enumerate(config.sets):
        for row, text in item_texts(spec):
            words = decontamination_text(text)
            count = len(words.split())
            if count < config.min_item_words:
                skipped += 1
                continue
            length = min(count, config.n)
            grams = window_hashes(words, length)
            parts.setdefault(length, []).append((grams, np.full(len(grams), len(item_sets), dtype=np.int32)))
            item_sets.append(set_number)
            item_rows.append(row)
    hashes, owners = {}, {}
    for length in sorted(parts, reverse=True):
        h = np.concatenate([g for g, _ in parts[length]])
        o = np.concatenate([w for _, w in parts[length]])
        order = np.argsort(h, kind="stable")
        h, o = h[order], o[order]
        first = np.concatenate([[True], h[1:] != h[:-1]])  # one entry per distinct n-gram: its first item
        hashes[length], owners[length] = h[first], o[first]
    return Index(hashes, owners, np.array(item_sets, dtype=np.int16), np.array(item_rows, dtype=np.int64),
                 [spec.name for spec in config.sets], skipped)


def _identity(config: DecontaminateConfig) -> str:
    files = [(str(Path(p).resolve()), Path(p).stat().st_size, Path(p).stat().st_mtime_ns)
             for s in config.sets for p in s.paths]
    body = json.dumps([config.model_dump(), files], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:24]


def index_folder(config: DecontaminateConfig) -> Path:
    import os

    root = os.environ.get("REFINERY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "refinery")
    return Path(root) / "decontaminate" / _identity(config)


@functools.lru_cache(maxsize=2)
def _loaded(folder: str, config_json: str) -> Index:
    path = Path(folder)
    if (path / "index.json").is_file():
        return Index.load(path)
    index = build_index(DecontaminateConfig.model_validate_json(config_json))
    try:
        index.save(path)
    except OSError:  # a read-only cache: this process keeps its own copy
        pass
    return index


def load_index(config: DecontaminateConfig) -> Index:
    """The index of ``config``'s sets, once per process: mapped from the cache folder that the
    driver's check (or the first worker) wrote, else built; again if a file changes."""
    return _loaded(str(index_folder(config)), config.model_dump_json())


class Decontaminate(Stage):
    name: ClassVar[str] = "decontaminate"
    reasons: ClassVar[tuple[str, ...]] = (CONTAMINATED,)
    Config = DecontaminateConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._found: Counter = Counter()

    @classmethod
    def preflight(cls, config: DecontaminateConfig) -> None:
        """Every file readable, and every set with at least one item of min_item_words words."""
        from refinery.config import ConfigError

        for index, spec in enumerate(config.sets):
            for path in spec.paths:
                if not Path(path).is_file():
                    raise ConfigError(f"sets[{index}].paths", f"no evaluation file at {path!r}")
            try:
                usable = any(len(decontamination_text(text).split()) >= config.min_item_words
                             for _, text in item_texts(spec))
            except (OSError, UnicodeDecodeError, ValueError) as err:
                raise ConfigError(f"sets[{index}].paths", f"cannot read {spec.paths}: {err}") from None
            if not usable:
                what = f"template {spec.template!r}" if spec.template else f"field {spec.text_field!r}"
                raise ConfigError(f"sets[{index}].paths", f"no item with {config.min_item_words} words or more "
                                                          f"(by {what}) in {spec.paths}")
        load_index(config)  # built here once, into the cache the workers map
    def setup(self) -> None:
        self._index = load_index(self.config)

    def process_doc(self, doc: Document) -> Document | Drop:
        match = self._index.first_match(decontamination_text(doc.text))
        if match is None:
            return doc
        self._found[match[0]] += 1
        return Drop(doc, CONTAMINATED, detail=f"{match[0]} item {match[1]}")

    def extra_stats(self) -> dict:
        return {"contaminated_by_set": dict(self._found)} if self._found else {}
