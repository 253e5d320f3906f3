"""What a mix config says: its sources, shares, and how it is tokenized (`parse_mix`)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, model_validator

from refinery.config import ConfigError, RunConfig, _first_error, _Strict, named_key, resolve_paths
from refinery.paths import PathName

if TYPE_CHECKING:
    from refinery.config import PipelineConfig
    from refinery.io import InputShard


def exactly_one(model, first: str, second: str, message: str):
    """A model validator's check: exactly one of two alternative fields is given."""
    if (getattr(model, first) is None) == (getattr(model, second) is None):
        raise ValueError(message)
    return model


class SourceSpec(_Strict):
    name: PathName  # OUTPUT/sources/NAME, OUTPUT/heldout/NAME
    config: str | None = None  # a refinery pipeline config; its documents/ are this source
    input: list[str] | None = None  # inputs for that pipeline (default: the config's own)
    paths: list[str] | None = None  # curated files: *.jsonl, *.jsonl.gz, *.parquet, or folders of *.txt
    text_field: str = "text"
    id_field: str = "id"
    format: Literal["plain", "code", "chat", "wikitext"] = "plain"  # wikitext: MediaWiki markup, as text
    turns_field: str = "messages"  # chat: a list of {"role", "content"}
    license: str = "unknown"
    languages: list[str] = ["en"]
    max_epochs: float = Field(default=1.0, gt=0)
    heldout_fraction: float = Field(default=0.0, ge=0, lt=0.5)  # curated: records kept out for evaluation
    dedup: list[dict[str, Any]] = []  # curated sources skip the web chain but can opt into dedup stages

    @model_validator(mode="after")
    def _one_kind(self):
        return exactly_one(self, "config", "paths", "give either `config` (a pipeline run) or `paths` (curated files)")


class MixSettings(_Strict):
    shares: dict[str, float]
    total_tokens: int | None = Field(default=None, gt=0)
    seed: int = 1
    allow_short: bool = False  # true: a source that cannot reach its share gives what it has (a warning)


class TokenizeSettings(_Strict):
    tokenizer: str = "train"  # "train", or a local folder / tokenizer.json
    vocab_size: int = Field(default=65024, ge=268)
    train_sample_bytes: int = Field(default=100_000_000, gt=0)
    formats: list[Literal["megatron", "datatrove"]] = Field(default=["megatron", "datatrove"], min_length=1)
    max_file_tokens: int = Field(default=50_000_000, gt=0)  # no file holds more (but one longer document)
    batch_size: int = Field(default=1000, gt=0)


class MixSpec(_Strict):
    name: PathName  # runs/NAME
    output: str | None = None
    sources: list[SourceSpec] = Field(min_length=1)
    mix: MixSettings
    tokenize: TokenizeSettings = TokenizeSettings()
    run: RunConfig = RunConfig()


MIX_PATH_KEYS = ("output", "sources[].config", "sources[].input[]", "sources[].paths[]", "tokenize.tokenizer",
                 "sources[].dedup[].*.*_path")


def parse_mix(raw: dict, path: str = "") -> MixSpec:
    """``raw`` read from the mix file ``path``: its relative paths (MIX_PATH_KEYS) resolve from the
    file's folder. Checks the config alone; :func:`check_mix` checks what it names."""
    raw = resolve_paths(raw, MIX_PATH_KEYS, path) if isinstance(raw, dict) else raw
    items = raw.get("sources") if isinstance(raw, dict) else None
    try:
        spec = MixSpec.model_validate(raw)
    except ValidationError as err:
        error = _first_error(err)
        raise ConfigError(named_key(error.key, "sources", items), error.message) from None
    names = [s.name for s in spec.sources]
    if len(set(names)) != len(names):
        raise ConfigError("sources", f"source names repeat: {names}")
    if set(spec.mix.shares) != set(names):
        raise ConfigError("mix.shares", f"must name every source exactly once: {sorted(names)}")
    from refinery.config import dedup_only_config

    if spec.tokenize.tokenizer != "train" and not Path(spec.tokenize.tokenizer).exists():
        raise ConfigError("tokenize.tokenizer", f"no tokenizer at {spec.tokenize.tokenizer!r} (or use `train`)")
    for index, source in enumerate(spec.sources):
        key = source_key(index, source)
        if source.dedup and source.config:
            raise ConfigError(f"{key}.dedup", "a pipeline source deduplicates in its own config")
        if source.heldout_fraction and source.config:
            raise ConfigError(f"{key}.heldout_fraction", "only curated sources (`paths`) are split")
        if source.input is not None and not source.config:
            raise ConfigError(f"{key}.input", "only pipeline sources (`config`) have inputs; curated files are `paths`")
        if source.dedup:
            dedup_only_config(source.name, source.dedup, spec.run, key=f"{key}.dedup")
    if any(v <= 0 for v in spec.mix.shares.values()) or abs(sum(spec.mix.shares.values()) - 1) > 1e-6:
        raise ConfigError("mix.shares", f"must be positive and add up to 1 (they add up to {sum(spec.mix.shares.values()):g})")
    return spec


def source_key(index: int, source: SourceSpec) -> str:
    """How errors name a source: ``sources[2] (books)``."""
    return f"sources[{index}] ({source.name})"  # a PathName: nothing to escape


@dataclass(frozen=True)
class CheckedMix:
    """What :func:`check_mix` found: each pipeline source's config (with the source's inputs) and
    input shards, and the curated files, in source order."""

    pipelines: dict[str, tuple[PipelineConfig, list[InputShard]]]
    curated: list[tuple[SourceSpec, str]]


def check_mix(spec: MixSpec, preflight_stages: bool = True) -> CheckedMix:
    """Everything a mix run would find wrong at its start, before any work: each source's pipeline
    config parsed, its inputs expanded and its stages preflighted (models load), each curated path
    matching files, each dedup stage preflighted. Errors name the source: ``sources[2] (books).paths``."""
    from refinery.config import dedup_only_config, load_config, preflight, with_overrides
    from refinery.io import expand_inputs

    pipelines, curated = {}, []
    for index, source in enumerate(spec.sources):
        key = source_key(index, source)
        if source.config:
            try:
                config = load_config(source.config)
            except ConfigError as err:
                raise ConfigError(f"{key}.config", f"{source.config}: {err}") from None
            config = with_overrides(config, inputs=source.input)
            try:
                shards = expand_inputs(config.spec.input.paths, config.spec.input)
            except ConfigError as err:
                if source.input is None:  # the pipeline config's own inputs
                    raise ConfigError(f"{key}.config", f"{source.config}: {err}") from None
                raise ConfigError(err.key.replace("input.paths", f"{key}.input", 1), err.message) from None
            if preflight_stages:
                try:
                    preflight(config)
                except ConfigError as err:
                    raise ConfigError(f"{key}.config", f"{source.config}: {err}") from None
            pipelines[source.name] = (config, shards)
        else:
            curated += [(source, path) for path in curated_paths(source.paths, f"{key}.paths")]
            if source.dedup and preflight_stages:
                preflight(dedup_only_config(source.name, source.dedup, spec.run, key=f"{key}.dedup"), prefix=key)
    return CheckedMix(pipelines, curated)


def curated_paths(patterns: list[str], key: str) -> list[str]:
    """The sorted files that ``patterns`` match (files, or folders of ``*.txt``); every pattern must
    match one, and every file must be readable."""
    found, unmatched = set(), []
    for pattern in patterns:
        matches = glob.glob(pattern)
        if not matches:
            unmatched.append(pattern)
        found.update(matches)
    if unmatched:
        raise ConfigError(key, f"no file matches {unmatched}")
    for path in sorted(found):
        if not os.access(path, os.R_OK) or (os.path.isdir(path) and not os.access(path, os.X_OK)):
            raise ConfigError(key, f"not readable: {path!r}")
    return sorted(found)


def preflight_mix(spec: MixSpec) -> CheckedMix:
    """:func:`check_mix`: kept under its old name."""
    return check_mix(spec)
