"""What a mix config says: its sources, shares, and how it is tokenized (`parse_mix`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from refinery.config import ConfigError, RunConfig, _first_error, _Strict
from refinery.paths import PathName


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
    format: Literal["plain", "code", "chat"] = "plain"
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


def parse_mix(raw: dict, path: str = "") -> MixSpec:
    try:
        spec = MixSpec.model_validate(raw)
    except ValidationError as err:
        raise _first_error(err) from None
    names = [s.name for s in spec.sources]
    if len(set(names)) != len(names):
        raise ConfigError("sources", f"source names repeat: {names}")
    if set(spec.mix.shares) != set(names):
        raise ConfigError("mix.shares", f"must name every source exactly once: {sorted(names)}")
    from refinery.config import dedup_only_config

    if spec.tokenize.tokenizer != "train" and not Path(spec.tokenize.tokenizer).exists():
        raise ConfigError("tokenize.tokenizer", f"no tokenizer at {spec.tokenize.tokenizer!r} (or use `train`)")
    for index, source in enumerate(spec.sources):
        if source.dedup and source.config:
            raise ConfigError(f"sources[{index}].dedup", "a pipeline source deduplicates in its own config")
        if source.heldout_fraction and source.config:
            raise ConfigError(f"sources[{index}].heldout_fraction", "only curated sources (`paths`) are split")
        if source.dedup:
            dedup_only_config(source.name, source.dedup, spec.run, key=f"sources[{index}].dedup")
    if any(v <= 0 for v in spec.mix.shares.values()) or abs(sum(spec.mix.shares.values()) - 1) > 1e-6:
        raise ConfigError("mix.shares", f"must be positive and add up to 1 (they add up to {sum(spec.mix.shares.values()):g})")
    return spec


def preflight_mix(spec: MixSpec) -> None:
    """`refinery.config.preflight` for every source: its pipeline config, or its dedup stages."""
    from refinery.config import dedup_only_config, load_config, preflight

    for index, source in enumerate(spec.sources):
        key = f"sources[{index}]"
        if source.config:
            try:
                preflight(load_config(source.config))
            except ConfigError as err:
                raise ConfigError(f"{key}.config", f"{source.config}: {err}") from None
        elif source.dedup:
            preflight(dedup_only_config(source.name, source.dedup, spec.run, key=f"{key}.dedup"), prefix=key)
