"""A task and the one runner that decides whether to run it. No Dask here.

A task is a key, a function and its arguments, plus what its outputs depend on: a fingerprint
(config and upstream digests), its declared inputs (whose identity is recorded: size and mtime
for local files, ETag or size for remote ones) and its declared outputs. :func:`run_task` skips a
task whose marker matches all three and whose outputs still have their recorded sizes; otherwise
it runs the function (which writes its outputs atomically) and writes the marker last.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

MARKER_VERSION = 1


@dataclass
class Result:
    """Base of the typed results tasks return; ``to_dict`` is what stats.json and markers hold."""

    resumed: ClassVar[bool] = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Task:
    key: str  # unique in one graph; also the scheduler's key
    func: Callable[..., Any]
    args: tuple = ()
    fingerprint: str = ""  # everything besides the inputs that the outputs depend on
    inputs: tuple[str, ...] = ()  # files or folders read
    outputs: tuple[str, ...] = ()  # files or folders written (atomically, by func)
    marker: str | None = None  # the completion marker; None: the task always runs
    after: tuple[str, ...] = ()  # keys of tasks that must finish first
    result_type: type | None = None  # a Result subclass: how a stored result is read back


def input_identity(path: str) -> list:
    """What identifies one input's content: a rewritten file gets a new identity."""
    from refinery.io import is_remote

    if is_remote(path):
        from refinery.io import remote_identity

        return [path, *remote_identity(path)]
    local = Path(path.removeprefix("file://"))
    if local.is_dir():
        return [path, sorted([str(p.relative_to(local)), p.stat().st_size, p.stat().st_mtime_ns]
                             for p in local.rglob("*") if p.is_file())]
    try:
        stat = local.stat()
    except OSError:
        return [path, None]
    return [path, stat.st_size, stat.st_mtime_ns]


def output_sizes(paths: tuple[str, ...]) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    for path in paths:
        local = Path(path)
        if local.is_dir():
            sizes[path] = {str(p.relative_to(local)): p.stat().st_size for p in sorted(local.rglob("*")) if p.is_file()}
        else:
            sizes[path] = local.stat().st_size if local.exists() else None
    return sizes


def _state(task: Task) -> dict:
    return {"version": MARKER_VERSION, "fingerprint": task.fingerprint,
            "inputs": [input_identity(p) for p in task.inputs]}


def finished(task: Task):
    """The stored result of ``task`` when its marker matches, else None."""
    if task.marker is None:
        return None
    try:
        stored = json.loads(Path(task.marker).read_text())
        if {k: stored[k] for k in ("version", "fingerprint", "inputs")} != json.loads(json.dumps(_state(task))):
            return None
        if stored["outputs"] != json.loads(json.dumps(output_sizes(task.outputs))):
            return None
        data = stored["result"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if task.result_type is None:
        return data
    result = task.result_type.from_dict(data)
    result.resumed = True
    return result


def run_task(task: Task, *_upstream):
    """Runs ``task`` unless its marker says it is done; ``_upstream`` only orders it after ``task.after``."""
    done = finished(task)
    if done is not None:
        return done
    if task.marker is not None:
        Path(task.marker).unlink(missing_ok=True)  # a half-rewritten output never looks finished
    state = _state(task)  # the inputs' identity as they were read
    result = task.func(*task.args)
    if task.marker is not None:
        from refinery.io import write_json_atomic

        data = result.to_dict() if isinstance(result, Result) else result
        write_json_atomic(task.marker, {**state, "key": task.key, "outputs": output_sizes(task.outputs),
                                        "result": data})
    return result
