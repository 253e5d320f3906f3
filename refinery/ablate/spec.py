"""What an ablation config says (`parse_ablation`), and each variant's pipeline config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationError, model_validator

from refinery.config import ConfigError, RunConfig, _first_error, _Strict, named_key, resolve_paths
from refinery.mix.spec import exactly_one
from refinery.paths import PathName
from refinery.train import ModelSettings, TrainSettings

if TYPE_CHECKING:
    from refinery.io import InputShard


class VariantSpec(_Strict):
    name: PathName  # OUTPUT/variants/NAME
    description: str = ""
    stages: list[str] | Literal["all"] = "all"  # the base config's stages to keep (its order stays)
    dedup: list[str] | Literal["all"] = "all"


class ReferenceSet(_Strict):
    name: PathName  # OUTPUT/eval/NAME
    variant: str | None = None  # the held-out documents of this variant
    paths: list[str] | None = None  # or the held-out part of curated files (JSONL(.gz), Parquet)
    # "all": every record of `paths` is an eval document. Right when no variant's training text
    # comes from these files (a plain crawl ablation); "heldout" keeps the records a mix or a
    # quality classifier leaves out (split by record id).
    records: Literal["heldout", "all"] = "heldout"
    text_field: str = "text"
    id_field: str = "id"
    format: Literal["plain", "code", "chat", "wikitext"] = "plain"  # wikitext: MediaWiki markup, as text

    @model_validator(mode="after")
    def _one_kind(self):
        exactly_one(self, "variant", "paths", "give either `variant` (its held-out documents) or `paths` (curated files)")
        if self.variant and "records" in self.model_fields_set:
            raise ValueError("`records` is only for curated `paths`; a variant's eval set is its held-out part")
        return self


class AblationTokenizer(_Strict):
    tokenizer: str = "train"  # "train", or a local folder / tokenizer.json
    vocab_size: int = Field(default=8192, ge=268)
    train_sample_bytes: int = Field(default=20_000_000, gt=0)


class ControlSpec(_Strict):
    """The positive control: a variant known to be worse. ``of`` (default: the last variant) with
    ``share`` of its training text replaced by what the pipeline removed: the documents of
    ``removed_from`` (default: the first variant) missing from ``of``, in the proportions they were
    dropped, repeated when there are too few."""

    enabled: bool = True
    name: PathName = "degraded"
    of: str | None = None
    removed_from: str | None = None
    share: float = Field(default=0.3, gt=0, lt=1)
    seed: int = 1


PRESETS = {
    # the size this config family was built with: about 25 minutes on 2 cores for 4 variants x 2 seeds
    "cpu-small": {"model": {"layers": 2, "hidden_size": 128, "heads": 4, "seq_len": 128},
                  "train": {"tokens": 1_000_000, "batch_size": 16}},
    # 4x the tokens and 2 more layers: under 3 hours on 2 cores
    "cpu-large": {"model": {"layers": 4, "hidden_size": 128, "heads": 4, "seq_len": 128},
                  "train": {"tokens": 4_000_000, "batch_size": 16}},
    # about 50M parameters (with an 8,192-token vocabulary) on 200M tokens, bf16 on CUDA
    "gpu": {"model": {"layers": 12, "hidden_size": 576, "heads": 9, "seq_len": 1024},
            "train": {"tokens": 200_000_000, "batch_size": 32, "lr": 6e-4, "min_lr": 6e-5, "warmup_steps": 200,
                      "device": "auto", "eval_every": 500, "checkpoint_every": 1000}},
}


def apply_preset(raw: dict, preset: str, key: str = "--preset", over: bool = True) -> dict:
    """``raw`` with a preset's model and train settings: laid over its own (``--preset``), or under
    them (a config's ``preset:`` key, whose own settings then win)."""
    if preset not in PRESETS:
        raise ConfigError(key, f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    raw = dict(raw)
    for section, values in PRESETS[preset].items():
        own = raw.get(section) if isinstance(raw.get(section), dict) else {}
        raw[section] = {**own, **values} if over else {**values, **own}
    raw["preset"] = preset
    return raw


class AblationSpec(_Strict):
    name: PathName  # runs/NAME
    base: str  # the pipeline config the variants are cut from
    input: list[str] | None = None  # default: the base config's inputs
    output: str | None = None
    variants: list[VariantSpec] = Field(min_length=1)
    heldout_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    eval: list[ReferenceSet] = Field(min_length=1)
    tokenize: AblationTokenizer = AblationTokenizer()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings(heldout_fraction=0)
    seeds: list[int] = Field(default=[1], min_length=1)
    run: RunConfig = RunConfig()
    control: ControlSpec = ControlSpec()
    preset: str | None = None  # the preset the model and train settings came from (--preset)
    document_tokens: int = Field(default=2048, ge=16)  # each eval document is scored on at most this many tokens


ABLATION_PATH_KEYS = ("base", "input[]", "output", "eval[].paths[]", "tokenize.tokenizer")


def parse_ablation(raw: dict, path: str = "") -> AblationSpec:
    """``raw`` read from the ablation file ``path``: its relative paths (ABLATION_PATH_KEYS) resolve
    from the file's folder. :func:`check_ablation` checks what it names."""
    if isinstance(raw, dict) and isinstance(raw.get("train"), dict):
        for key in ("seed", "heldout_fraction"):
            if key in raw["train"]:
                raise ConfigError(f"train.{key}", "set by the ablation: use `seeds`, and `heldout_fraction` at the top")
    raw = resolve_paths(raw, ABLATION_PATH_KEYS, path) if isinstance(raw, dict) else raw
    if isinstance(raw, dict) and isinstance(raw.get("preset"), str) and raw.get("preset") not in ("", None):
        raw = apply_preset(raw, raw["preset"], key="preset", over=False)
    try:
        spec = AblationSpec.model_validate(raw)
    except ValidationError as err:
        error = _first_error(err)
        key = named_key(named_key(error.key, "variants", raw.get("variants")), "eval", raw.get("eval"))
        raise ConfigError(key, error.message) from None
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"heldout_fraction": 0.0})})
    names = [v.name for v in spec.variants]
    if len(set(names)) != len(names):
        raise ConfigError("variants", f"variant names repeat: {names}")
    if len({e.name for e in spec.eval}) != len(spec.eval):
        raise ConfigError("eval", "eval set names repeat")
    if spec.model.hidden_size % spec.model.heads:
        raise ConfigError("model.heads", f"must divide hidden_size {spec.model.hidden_size}")
    for index, reference in enumerate(spec.eval):
        if reference.variant is not None and reference.variant not in names:
            raise ConfigError(f"{_named('eval', index, reference)}.variant",
                              f"no variant {reference.variant!r} (variants: {names})")
    if spec.tokenize.tokenizer != "train" and not Path(spec.tokenize.tokenizer).exists():
        raise ConfigError("tokenize.tokenizer", f"no tokenizer at {spec.tokenize.tokenizer!r} (or use `train`)")
    for index, variant in enumerate(spec.variants):
        variant_config(spec, variant, key=_named("variants", index, variant))  # names stages the base has
    control = spec.control
    if control.enabled:
        for key in ("of", "removed_from"):
            if getattr(control, key) is not None and getattr(control, key) not in names:
                raise ConfigError(f"control.{key}", f"no variant {getattr(control, key)!r} (variants: {names})")
        if control.name in names:
            raise ConfigError("control.name", f"{control.name!r} is already a variant")
        if (control.of or names[-1]) == (control.removed_from or names[0]):
            if control.of is not None or control.removed_from is not None:
                raise ConfigError("control", "`of` and `removed_from` must be two variants, one removing more")
            # one variant: there is nothing the pipeline removed to degrade it with; no control
            spec = spec.model_copy(update={"control": control.model_copy(update={"enabled": False})})
    return spec


def control_variants(spec: AblationSpec) -> tuple[str, str] | None:
    """(the variant degraded, the variant whose extra documents degrade it), or None without control."""
    if not spec.control.enabled:
        return None
    names = [v.name for v in spec.variants if v.name != spec.control.name]  # the control may be appended already
    return spec.control.of or names[-1], spec.control.removed_from or names[0]


def _named(section: str, index: int, entry: VariantSpec | ReferenceSet) -> str:
    return f"{section}[{index}] ({entry.name})"  # a PathName: nothing to escape


@dataclass(frozen=True)
class CheckedAblation:
    """What :func:`check_ablation` found: the input shards (every variant reads the same) and each
    curated eval set's files."""

    shards: list[InputShard]
    eval_files: dict[str, list[str]]


def check_ablation(spec: AblationSpec, preflight_stages: bool = True) -> CheckedAblation:
    """Everything an ablation would find wrong at its start, before any work: the base config and
    each variant of it, the inputs (``input``, else the base config's) expanded, each eval set's
    paths matching files, and each variant's stages preflighted (models load)."""
    from refinery.config import preflight, with_overrides
    from refinery.io import expand_inputs
    from refinery.mix.spec import curated_paths

    configs = [variant_config(spec, variant, key=_named("variants", index, variant))
               for index, variant in enumerate(spec.variants)]
    config = with_overrides(configs[0], inputs=spec.input)
    try:
        shards = expand_inputs(config.spec.input.paths, config.spec.input)
    except ConfigError as err:
        if spec.input is None:  # the base config's own inputs
            raise ConfigError("base", f"{spec.base}: {err}") from None
        raise ConfigError(err.key.replace("input.paths", "input", 1), err.message) from None
    eval_files = {reference.name: curated_paths(reference.paths, f"{_named('eval', index, reference)}.paths")
                  for index, reference in enumerate(spec.eval) if reference.paths}
    if preflight_stages:
        for config in configs:
            try:
                preflight(config)
            except ConfigError as err:
                raise ConfigError("base", f"{spec.base}: {err}") from None
    return CheckedAblation(shards, eval_files)


def preflight_ablation(spec: AblationSpec) -> CheckedAblation:
    """:func:`check_ablation`: kept under its old name."""
    return check_ablation(spec)


def variant_config(spec: AblationSpec, variant: VariantSpec, key: str = "variants"):
    """The base pipeline config with only the variant's stages and dedup stages (its relative paths
    resolve from the base config's folder)."""
    from refinery.config import parse_config, read_yaml

    try:
        raw = read_yaml(spec.base)
    except ConfigError as err:
        raise ConfigError("base", err.message) from None
    if not isinstance(raw, dict):
        raise ConfigError("base", f"{spec.base} is not a pipeline config")
    for section in ("stages", "dedup"):
        entries = raw.get(section) or []
        names = [e if isinstance(e, str) else next(iter(e)) for e in entries]
        wanted = getattr(variant, section)
        if wanted == "all":
            continue
        missing = [n for n in wanted if n not in names]
        if missing:
            raise ConfigError(f"{key}.{section}", f"{missing} not in {spec.base}'s {section}: {names}")
        raw[section] = [e for e, n in zip(entries, names) if n in wanted]
    raw["name"] = f"{spec.name}-{variant.name}"
    try:
        return parse_config(raw, spec.base)
    except ConfigError as err:
        raise ConfigError("base", f"{spec.base}: {err}") from None
