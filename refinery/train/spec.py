"""The settings of `refinery train CONFIG`: model size, training run and held-out sets.

No torch here: parsing a config imports only pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from refinery.config import TRAIN_PATH_KEYS, ConfigError, _first_error, _Strict, resolve_paths
from refinery.paths import DerivedPathName, PathName


class ModelSettings(_Strict):
    layers: int = Field(default=2, ge=1)
    hidden_size: int = Field(default=128, ge=8)
    heads: int = Field(default=4, ge=1)
    seq_len: int = Field(default=128, ge=8)


class TrainSettings(_Strict):
    tokens: int = Field(default=1_000_000, gt=0)  # the token budget
    batch_size: int = Field(default=16, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    min_lr: float = Field(default=2e-4, ge=0)
    warmup_steps: int = Field(default=20, ge=0)
    weight_decay: float = Field(default=0.1, ge=0)
    clip: float = Field(default=1.0, gt=0)
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    eval_every: int = Field(default=50, ge=1)
    eval_batches: int = Field(default=8, ge=1)
    heldout_fraction: float = Field(default=0.05, ge=0, lt=0.5)  # 0: no `heldout` set from the data's tail
    checkpoint_every: int = Field(default=100, ge=1)


class EvalSet(_Strict):
    name: PathName
    data: str  # a token folder never trained on, e.g. a mix's OUTPUT/heldout/NAME
    every: int | None = Field(default=None, ge=1)  # evaluated every this many steps; None: train.eval_every
    batches: int | None = Field(default=None, ge=1)  # windows: batches * batch_size; None: train.eval_batches


class TrainSpec(_Strict):
    name: DerivedPathName  # runs/train/NAME; an ablation names its runs VARIANT-seedN
    data: str  # a token folder (refinery's OUTPUT/tokens)
    tokenizer: str  # a folder with tokenizer.json, or the file
    output: str | None = None
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    eval: list[EvalSet] = []  # more held-out sets, besides `heldout` (the data's tail)


EVALUATION_ONLY = ("eval_every", "eval_batches", "checkpoint_every")  # train keys a resume may change


def eval_plan(spec: TrainSpec) -> dict[str, tuple[int, int]]:
    """Each held-out set's ``(every, batches)``: ``heldout`` (the data's tail) takes
    ``train.eval_every``/``eval_batches``, an ``eval`` entry its own or those."""
    cfg = spec.train
    plan = {"heldout": (cfg.eval_every, cfg.eval_batches)} if cfg.heldout_fraction else {}
    for e in spec.eval:
        plan[e.name] = (e.every or cfg.eval_every, e.batches or cfg.eval_batches)
    return plan


def sets_due(plan: dict[str, tuple[int, int]], step: int, total_steps: int) -> list[str]:
    """The sets evaluated after ``step``: those whose ``every`` divides it, and all at the last step."""
    return [name for name, (every, _) in plan.items() if step == total_steps or step % every == 0]


def trajectory(spec: TrainSpec, device: str) -> dict:
    """What a checkpoint's training path depends on, as plain values (a ``weights_only`` checkpoint
    holds it): the model, the train settings but evaluation-only ones, the device it ran on, and
    the identity of the token files and tokenizer (names and sizes; the tokenizer's sha256)."""
    from refinery import tokenizer as tk

    train = spec.train.model_dump(exclude={*EVALUATION_ONLY, "device"})  # the device: as resolved ("auto")
    files = sorted(p for p in Path(spec.data).glob("*") if p.suffix in (".bin", ".idx"))
    return {"model": spec.model.model_dump(), "train": {**train, "device": device},
            "data": {"files": [[p.name, p.stat().st_size] for p in files]},
            "tokenizer": {"sha256": tk.file_hash(spec.tokenizer)}}


def check_trajectory(stored: dict | None, current: dict, path: Path) -> None:
    """Refuses (exit 2, one line naming the keys) to resume from a checkpoint whose training path
    differs from the config's; evaluation and checkpoint settings may change."""
    if stored is None:
        raise ConfigError("output", f"{str(path)!r} records no settings (written by an older refinery): it cannot "
                                    f"be checked against this config; train again with --force")
    old, new = _flat(stored), _flat(current)
    changed = [key for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]
    if changed:
        shown = ", ".join(key if isinstance(new.get(key), list) else f"{key} {old.get(key)!r} -> {new.get(key)!r}"
                          for key in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ConfigError(changed[0].split(".")[0], f"the checkpoint {str(path)!r} was trained with other settings "
                                                    f"({shown}{more}); resuming would mix two runs: restore them, "
                                                    f"or train again with --force")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint (state dicts, step, clock, numpy generator state), read with
    ``weights_only``: a file that would run code or build other objects when unpickled is refused."""
    import pickle

    import torch

    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        first = next((line for line in str(err).splitlines() if line.strip()), "")[:200]
        raise ConfigError("output", f"refusing to resume from {str(path)!r}: not a checkpoint refinery wrote "
                                    f"({first}); remove it, or train again with --force") from None


def parse_train(raw: dict, path: str = "") -> TrainSpec:
    """The training spec; relative paths in it resolve from the folder of the file at ``path``."""
    raw = resolve_paths(raw, TRAIN_PATH_KEYS, path) if isinstance(raw, dict) else raw
    try:
        spec = TrainSpec.model_validate(raw)
    except ValidationError as err:
        raise _first_error(err) from None
    if spec.model.hidden_size % spec.model.heads:
        raise ConfigError("model.heads", f"must divide hidden_size {spec.model.hidden_size}")
    if not list(Path(spec.data).glob("*.idx")):
        raise ConfigError("data", f"no Megatron .idx/.bin token files in {spec.data!r}")
    for index, eval_set in enumerate(spec.eval):
        if not list(Path(eval_set.data).glob("*.idx")):
            raise ConfigError(f"eval[{index}].data", f"no Megatron .idx/.bin token files in {eval_set.data!r}")
    names = [e.name for e in spec.eval] + (["heldout"] if spec.train.heldout_fraction else [])
    if not names:
        raise ConfigError("eval", "no held-out set: give `eval` sets or a train.heldout_fraction above 0")
    if len(set(names)) != len(names):
        raise ConfigError("eval", f"eval set names repeat: {names}")
    tok = Path(spec.tokenizer)
    if not (tok / "tokenizer.json" if tok.is_dir() else tok).is_file():
        raise ConfigError("tokenizer", f"no tokenizer.json at {spec.tokenizer!r}")
    return spec
