"""YAML config, validated into typed objects before any work starts."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import reprlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from refinery.paths import DerivedPathName
from refinery.stage import SelectStage, SpanCutStage, StageConfig

MESSAGE_VALUE_CHARS = 200  # an error message shows at most this much of a value
YAML_NODE_BUDGET = 100_000  # nodes of a config, aliases expanded; refinery's own configs have a few hundred


class ConfigError(Exception):
    """A configuration problem, reported as one line naming the key path (``refinery: config error:``)."""

    label = "config error"  # how `refinery` labels it on stderr

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class UsageError(ConfigError):
    """An expected failure that is not about a config: a command-line argument, or a folder that is
    not what the command needs (e.g. `refinery report` on a training folder). Exit 2 like a config
    error, labelled ``refinery: error:``; a ConfigError subclass so every existing handler still
    turns it into one line."""

    label = "error"


# --- relative paths: from the config file's folder -----------------------------------------------
# A key pattern is dotted; ``name[]`` maps over a list, and a name may be an fnmatch pattern
# (``stages[].*.*_path``: every stage parameter whose name ends in _path).
PIPELINE_PATH_KEYS = ("input.paths[]", "output", "stages[].*.*_path", "stages[].*.models[].path",
                      "stages[].*.word_lists.*", "stages[].*.sets[].paths[]", "dedup[].*.*_path")
TRAIN_PATH_KEYS = ("data", "tokenizer", "eval[].data", "output")
RESERVED_PATH_VALUES = ("train",)  # `tokenize.tokenizer: train` is not a path


def relative_to_config(path: str, config_path: str | Path | None) -> str:
    """``path`` as written in the config file ``config_path``: a relative path resolves from that
    file's folder (not from the current directory). Absolute paths, URLs (``://``, ``sample://``)
    and values in RESERVED_PATH_VALUES are left as they are; so is everything when ``config_path``
    is empty (a config given as data, or a command-line value: from the current directory)."""
    if not config_path or not isinstance(path, str) or not path or "://" in path or path in RESERVED_PATH_VALUES \
            or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(os.path.dirname(str(config_path)), path))


def resolve_paths(raw: Any, keys: Iterable[str], config_path: str | Path | None) -> Any:
    """A copy of the parsed YAML ``raw`` with the values at ``keys`` (see PIPELINE_PATH_KEYS) resolved
    by :func:`relative_to_config`; values of the wrong type are left for validation to report."""
    if not config_path:
        return raw
    for key in keys:
        raw = _resolve_at(raw, key.split("."), config_path)
    return raw


def _resolve_at(node: Any, parts: list[str], config_path: str | Path) -> Any:
    if not parts:
        return relative_to_config(node, config_path)
    if not isinstance(node, dict):
        return node
    name, each = parts[0].removesuffix("[]"), parts[0].endswith("[]")
    resolved = dict(node)
    for key in [k for k in node if isinstance(k, str) and fnmatch.fnmatchcase(k, name)]:
        value = node[key]
        if each and isinstance(value, list):
            resolved[key] = [_resolve_at(item, parts[1:], config_path) for item in value]
        elif not each:
            resolved[key] = _resolve_at(value, parts[1:], config_path)
    return resolved


def named_key(key: str, section: str, raw_items: Any) -> str:
    """``sources[2].paths`` -> ``sources[2] (books).paths``: a key inside a list of named entries
    (``section``: sources, variants, eval) names the entry too, when ``raw_items`` gives its name."""
    match = re.match(re.escape(section) + r"\[(\d+)\]", key)
    if not match or not isinstance(raw_items, list) or int(match[1]) >= len(raw_items):
        return key
    item = raw_items[int(match[1])]
    name = item.get("name") if isinstance(item, dict) else getattr(item, "name", None)
    if not isinstance(name, str) or key[match.end():].startswith(" ("):
        return key
    return f"{match[0]} ({_key_part(name, 60)}){key[match.end():]}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(_Strict):
    paths: list[str] = Field(default=["sample://english"], min_length=1)
    # auto: by file name (.jsonl[.gz|.zst], .parquet or a folder of them, .wet[.gz], else WARC/ARC)
    format: str = Field(default="auto", pattern="^(auto|warc|arc|wet|jsonl|parquet)$")
    max_record_bytes: int = Field(default=10_000_000, gt=0)
    # a .warc.gz or .wet.gz bigger than this is read as byte ranges of about this size, one task each
    split_bytes: int = Field(default=256 << 20, ge=0)  # 0: never split
    split_remote: bool = False  # also split remote files (their index reads each one once more)
    # JSONL and Parquet documents: the fields that hold the text, id and URL, and fields carried
    # through to the output's `metadata` column (as JSON)
    text_field: str = Field(default="text", min_length=1)
    id_field: str = Field(default="id", min_length=1)
    url_field: str = Field(default="url", min_length=1)
    metadata_fields: list[str] = []
    keep_status: list[int] = Field(default=[200], min_length=1)
    # remote inputs (http(s)://, s3://): how they are fetched, not what they hold (no output depends on them)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    read_timeout_s: float = Field(default=60.0, gt=0, le=3600)  # a stream silent this long raises
    retries: int = Field(default=3, ge=0, le=10)  # more tries to list or open one, after 0.5 s, 1 s, 2 s, ...


SLURM_KEYS = ("cores", "memory", "walltime", "queue", "account", "job_extra_directives", "job_script_prologue",
              "python", "interface")
KUBERNETES_KEYS = ("image", "resources", "namespace", "volumes")


_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*([kKmMgGtTpP]i?[bB]?|[bB])?\s*$")  # what Dask and Kubernetes read as sizes


def _byte_size(value: str) -> str:
    if not isinstance(value, str) or not _SIZE.match(value):
        raise PydanticCustomError("size", "not a size like '16GiB' or '8Gi'")
    return value


class PodResources(_Strict):
    """What each Kubernetes worker pod requests (and is limited to)."""

    cpu: int = Field(default=1, ge=1)  # also the worker's threads
    memory: str = "4Gi"

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        return _byte_size(value)


class ClusterConfig(_Strict):
    """``run.cluster``: Dask workers as Slurm jobs (dask-jobqueue) or Kubernetes pods (dask-kubernetes)."""

    kind: Literal["slurm", "kubernetes"]
    workers: int = Field(default=1, ge=1)  # Slurm jobs or worker pods, one Dask worker each
    cores: int = Field(default=1, ge=1)  # Slurm: CPUs per job, the worker's threads
    memory: str = "4GiB"  # Slurm: memory per job, the worker's limit
    walltime: str | None = Field(default=None, pattern=r"^(\d+-)?\d+(:\d{2}){0,2}$")
    queue: str | None = None  # Slurm partition
    account: str | None = None
    job_extra_directives: list[str] = []  # more `#SBATCH` lines, e.g. "--exclusive"
    job_script_prologue: list[str] = []  # shell lines before the worker starts, e.g. "source venv/bin/activate"
    python: str | None = None  # the Python on the nodes; default: this one
    interface: str | None = None  # the network interface workers reach the scheduler on, e.g. "ib0"
    image: str | None = Field(default=None, validate_default=True)  # Kubernetes: refinery installed in it
    resources: PodResources = PodResources()
    namespace: str | None = None
    volumes: dict[str, str] = {}  # PersistentVolumeClaim -> where every worker pod mounts it (the data, OUTPUT)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        return _byte_size(value)

    @field_validator(*SLURM_KEYS, *KUBERNETES_KEYS)
    @classmethod
    def _of_its_kind(cls, value: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        if info.field_name == "image" and kind == "kubernetes" and not value:
            raise PydanticCustomError("missing", "required for kind kubernetes: an image with refinery installed")
        default = cls.model_fields[info.field_name].default  # what a model_dump() round trip gives back
        if value != default and kind is not None and info.field_name not in _KEYS_OF[kind]:
            raise PydanticCustomError("extra_forbidden", "a {other} setting; kind {kind} takes workers, {keys}",
                                      {"other": "Slurm" if kind == "kubernetes" else "Kubernetes", "kind": kind,
                                       "keys": ", ".join(_KEYS_OF[kind])})
        return value


_KEYS_OF = {"slurm": SLURM_KEYS, "kubernetes": KUBERNETES_KEYS}


class RunConfig(_Strict):
    workers: int | None = Field(default=None, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    batch_size: int = Field(default=256, ge=1)
    row_group_size: int = Field(default=2048, ge=1)
    limit: int | None = Field(default=None, ge=1)
    dropped_samples: int = Field(default=20, ge=0)  # kept per stage, reason and shard
    dashboard: bool = True
    # dask's dataframe shuffle for dedup: p2p spills to the workers' local folders, so worker memory
    # stays flat with the corpus (10^5 -> 10^6 documents: tasks 545 -> 909 MiB, p2p 562 -> 654)
    shuffle: str = Field(default="p2p", pattern="^(tasks|p2p|disk)$")
    cluster: ClusterConfig | None = None  # Slurm or Kubernetes workers instead of a local cluster


class PipelineSpec(_Strict):
    name: DerivedPathName  # runs/NAME
    source: str = "web"
    output: str | None = None
    input: InputConfig = InputConfig()
    run: RunConfig = RunConfig()
    stages: list[dict[str, Any]]  # empty only for documents (wet, jsonl, parquet): a run that only reads
    dedup: list[dict[str, Any]] = []  # corpus-wide stages, run in this order after `stages`

    @field_validator("stages")
    @classmethod
    def _a_chain_for_pages(cls, value: list, info: ValidationInfo) -> list:
        fmt = getattr(info.data.get("input"), "format", "auto")
        if not value and fmt not in ("wet", "jsonl", "parquet"):
            raise ValueError("no stages: pages need at least `extract`; a run that only reads documents sets "
                             "input.format to wet, jsonl or parquet")
        return value


@dataclass(frozen=True)
class StageSpec:
    name: str
    config: StageConfig
    stage_class: type  # from the registry the config was parsed with

    def build(self):
        return self.stage_class(self.config)


@dataclass(frozen=True)
class Registry:
    """The stages a config may name: per-shard chain stages and corpus-wide dedup stages."""

    chain: dict[str, type]
    dedup: dict[str, type]


def default_registry() -> Registry:
    """refinery's own stages (``refinery.stages``); importing them loads no model or parser."""
    from refinery.stages import DEDUP_STAGES, STAGES

    return Registry(STAGES, DEDUP_STAGES)


@dataclass(frozen=True)
class PipelineConfig:
    spec: PipelineSpec
    stages: tuple[StageSpec, ...]
    path: str = ""
    dedup: tuple[StageSpec, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def fingerprint(self) -> str:
        """Hash of everything that affects outputs (not where they go, nor how many workers)."""
        body = {
            "source": self.spec.source,
            # how inputs are fetched and cut into tasks does not change what they hold
            "input": self.spec.input.model_dump(exclude={"paths", "connect_timeout_s", "read_timeout_s", "retries",
                                                         "split_bytes", "split_remote"}),
            "limit": self.spec.run.limit,
            "stages": [[s.name, s.config.model_dump()] for s in self.stages],
            "dedup": bool(self.dedup),  # the chain writes to filtered/ instead of documents/
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def dedup_fingerprint(self) -> str:
        """Hash of the chain and the dedup stages: what the deduplicated documents depend on."""
        body = {"map": self.fingerprint(), "dedup": [[s.name, s.config.model_dump()] for s in self.dedup]}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


_VALUE_REPR = reprlib.Repr()
_VALUE_REPR.maxlevel, _VALUE_REPR.maxlist, _VALUE_REPR.maxtuple, _VALUE_REPR.maxdict = 2, 4, 4, 4
_VALUE_REPR.maxset = _VALUE_REPR.maxfrozenset = 4
_VALUE_REPR.maxstring, _VALUE_REPR.maxother, _VALUE_REPR.maxlong = 80, 80, 40
_VALUE_REPR.repr_int = lambda value, level: (  # repr() refuses ints of over 4,300 digits
    repr(value) if value.bit_length() <= 128 else f"<an integer of {value.bit_length():,} bits>")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def shown(value: Any, limit: int = MESSAGE_VALUE_CHARS) -> str:
    """A bounded repr for error messages: never expands a large or deeply nested value."""
    return _cut(_VALUE_REPR.repr(value), limit)


def _key_part(part: Any, limit: int = 80) -> str:
    return _cut(str(part).replace("\n", "\\n"), limit)


def _first_error(err: ValidationError, prefix: str = "") -> ConfigError:
    first = err.errors(include_url=False)[0]
    loc = ""
    for part in first["loc"]:
        part = part if isinstance(part, int) else _key_part(part)
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else part)
    key = ".".join(p for p in (prefix, loc) if p) or "(root)"
    message = first["msg"]
    if first["type"] not in ("missing", "extra_forbidden") and "input" in first:
        message += f" (got {shown(first['input'])})"
    return ConfigError(key, message)


def parse_config(raw: Any, path: str = "", registry: Registry | None = None) -> PipelineConfig:
    """``raw`` read from the file ``path``: its relative paths (PIPELINE_PATH_KEYS) resolve from the
    file's folder; with no ``path``, from the current directory."""
    registry = registry or default_registry()
    if not isinstance(raw, dict):
        raise ConfigError("(root)", "the config must be a YAML mapping")
    raw = resolve_paths(raw, PIPELINE_PATH_KEYS, path)
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as err:
        raise _first_error(err) from None
    stage_specs = _parse_stage_list(spec.stages, "stages", registry.chain)
    dedup_specs = _parse_stage_list(spec.dedup, "dedup", registry.dedup)
    _check_corpus_order(dedup_specs, stage_specs)
    return PipelineConfig(spec=spec, stages=tuple(stage_specs), path=path, dedup=tuple(dedup_specs))


def _check_corpus_order(dedup_specs: list[StageSpec], stage_specs: list[StageSpec]) -> None:
    """The span cut comes after the clustering stages (it cuts what they kept), a selection last
    (it ranks what is left), and a selection's score columns come from the chain."""
    rank = [2 if issubclass(s.stage_class, SelectStage) else 1 if issubclass(s.stage_class, SpanCutStage) else 0
            for s in dedup_specs]
    for index, spec in enumerate(dedup_specs):
        if rank[index] and any(later < rank[index] or (later == rank[index]) for later in rank[index + 1:]):
            what = "a selection must be the last dedup stage" if rank[index] == 2 else \
                f"{spec.name} must come after the clustering stages and before a selection"
            raise ConfigError(f"dedup[{index}]", what)
        if rank[index] == 2:
            made = {c for s in stage_specs for c in s.stage_class.score_columns(s.config)}
            missing = [c for c in spec.build().score_columns() if c not in made]
            if missing:
                raise ConfigError(f"dedup[{index}].{spec.name}.scores",
                                  f"no stage scores {', '.join(missing)} (a quality_classifier model named "
                                  f"{missing[0].removeprefix('quality_')!r}); scored: {', '.join(sorted(made)) or 'none'}")


def _parse_stage_list(entries: list, section: str, registry: dict) -> list[StageSpec]:
    stage_specs = []
    for index, entry in enumerate(entries):
        where = f"{section}[{index}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(where, "each stage is a mapping with one key, the stage name")
        (name, params), = entry.items()
        if name not in registry:
            raise ConfigError(where, f"unknown stage {shown(name, 80)} (known: {', '.join(sorted(registry))})")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where}.{name}", "stage parameters must be a mapping")
        try:
            stage_config = registry[name].Config.model_validate(params)
        except ValidationError as err:
            raise _first_error(err, f"{where}.{name}") from None
        stage_specs.append(StageSpec(name, stage_config, registry[name]))
    seen = [s.name for s in stage_specs]
    duplicates = {n for n in seen if seen.count(n) > 1}
    if duplicates:
        raise ConfigError(section, f"stage listed twice: {', '.join(sorted(duplicates))}")
    return stage_specs


def preflight(config: PipelineConfig, prefix: str = "") -> None:
    """Checks what validation alone cannot (e.g. that a model file loads) by calling each stage's
    ``preflight``; run before any work, in a dry run too. A stage raises ConfigError with a key
    relative to its parameters; the error raised here names the full key path."""
    for section, specs in (("stages", config.stages), ("dedup", config.dedup)):
        for index, spec in enumerate(specs):
            try:
                spec.stage_class.preflight(spec.config)
            except ConfigError as err:
                where = ".".join(p for p in (prefix, f"{section}[{index}].{spec.name}", err.key) if p)
                raise ConfigError(where, err.message) from None


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML of a config file; unreadable files and bad YAML are ConfigErrors."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError("(file)", f"cannot read config {str(path)!r}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError("(file)", f"config {str(path)!r} is not UTF-8 (byte {err.start})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, YAML_NODE_BUDGET) > YAML_NODE_BUDGET:
            raise ConfigError("(file)", f"config {str(path)!r} expands to more than {YAML_NODE_BUDGET:,} YAML "
                                        "nodes (nested aliases?); refusing to read it")
        return loader.construct_document(node)
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise ConfigError("(file)", f"invalid YAML: {_cut(str(err), MESSAGE_VALUE_CHARS)}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError("(file)", f"invalid YAML{where}: {getattr(err, 'problem', err)}") from None
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, budget: int) -> int:
    """How many nodes ``node`` has with every alias expanded, counting no further than budget + 1
    (an alias is the same node object again, so a cycle or a "billion laughs" stops at the budget)."""
    count, stack = 0, [node]
    while stack and count <= budget:
        node = stack.pop()
        count += 1
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))
    return count


def load_config(path: str | Path, registry: Registry | None = None) -> PipelineConfig:
    return parse_config(read_yaml(path), str(path), registry)


def with_overrides(config: PipelineConfig, **run_overrides: Any) -> PipelineConfig:
    """Applies CLI flags (inputs, output, workers, limit) with the same validation."""
    raw = config.spec.model_dump()
    inputs = run_overrides.pop("inputs", None)
    output = run_overrides.pop("output", None)
    if inputs:
        raw["input"]["paths"] = list(inputs)
    if output:
        raw["output"] = str(output)
    for key, value in run_overrides.items():
        if value is not None:
            raw["run"][key] = value
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as err:
        raise _first_error(err) from None
    return PipelineConfig(spec=spec, stages=config.stages, path=config.path, dedup=config.dedup)


def dedup_only_config(name: str, dedup: list[dict], run: RunConfig, key: str = "dedup",
                      registry: Registry | None = None) -> PipelineConfig:
    """A config with no chain, only dedup stages: for sources that arrive as documents
    (curated files in a mix) and opt into dedup."""
    specs = _parse_stage_list(dedup, key, (registry or default_registry()).dedup)
    spec = PipelineSpec.model_construct(name=name, source=name, output=None, input=InputConfig(), run=run,
                                        stages=[], dedup=list(dedup))
    return PipelineConfig(spec=spec, stages=(), path="", dedup=tuple(specs))
