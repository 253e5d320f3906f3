"""Training as a task on refinery's one runner: a finished run is not trained again."""

from __future__ import annotations

import hashlib
import json
import os

from refinery.engine.task import Task, finished, run_task
from refinery.train.loop import train
from refinery.train.spec import TrainSpec


def training_task(spec: TrainSpec, out_dir: str, log=print, fresh: bool = False) -> Task:
    """`train` as a task: keyed by the spec, reading its token folders and tokenizer, writing the
    model, train.json and metrics.jsonl; the marker is ``OUT/_markers/train.done``. ``fresh``
    (``--force``): an interrupted run's checkpoint is removed and training starts at step 0."""
    fingerprint = hashlib.sha256(json.dumps(spec.model_dump(), sort_keys=True).encode()).hexdigest()
    inputs = (*_token_files(spec.data), *(p for e in spec.eval for p in _token_files(e.data)), spec.tokenizer)
    outputs = tuple(os.path.join(out_dir, name) for name in ("model", "train.json", "metrics.jsonl"))
    return Task(key=f"train:{spec.name}", func=train, args=(spec, out_dir, log, fresh), fingerprint=fingerprint,
                inputs=inputs, outputs=outputs, marker=os.path.join(out_dir, "_markers", "train.done"))


def _token_files(folder: str) -> list[str]:
    """The token shards a data folder holds (not its manifest or card, which are rewritten freely)."""
    if not os.path.isdir(folder):
        return [folder]
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith((".bin", ".idx")))


def run_training(spec: TrainSpec, out_dir: str, log=print, fresh: bool = False) -> dict:
    """`train`'s summary; the stored one, without training, when the run has finished already
    (``fresh`` trains from step 0 once the caller has cleared the marker, as ``--force`` does)."""
    task = training_task(spec, out_dir, log, fresh)
    if finished(task) is not None:
        log(f"train: {out_dir} is finished already (marker {task.marker}); not trained again")
    return run_task(task)
