"""The settings of `refinery train CONFIG`: model size, training run and held-out sets.

No torch here: parsing a config imports only pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from refinery.config import ConfigError, _first_error, _Strict
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


class TrainSpec(_Strict):
    name: DerivedPathName  # runs/train/NAME; an ablation names its runs VARIANT-seedN
    data: str  # a token folder (refinery's OUTPUT/tokens)
    tokenizer: str  # a folder with tokenizer.json, or the file
    output: str | None = None
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    eval: list[EvalSet] = []  # more held-out sets, besides `heldout` (the data's tail)


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


def parse_train(raw: dict) -> TrainSpec:
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
