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

MARKER_VERSION = 2


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
    reports: bool = False  # func takes ``report=``, a callable for its progress (refinery.engine.watch)


HASHED_UP_TO = 64 << 20  # inputs up to this size also record their sha256


def input_identity(path: str) -> dict:
    """What identifies one input's content: size and mtime (and, up to HASHED_UP_TO, the sha256,
    so that a file written again with the same bytes still matches), per file of a folder, or the
    ETag (else size and date) of a remote file."""
    from refinery.io import is_remote

    if is_remote(path):
        from refinery.io import remote_identity

        return {"remote": remote_identity(path)}
    local = Path(path.removeprefix("file://"))
    if local.is_dir():
        return {"files": {str(p.relative_to(local)): _file_identity(p) for p in sorted(local.rglob("*")) if p.is_file()}}
    return _file_identity(local)


def _file_identity(path: Path) -> dict:
    try:
        stat = path.stat()
    except OSError:
        return {"missing": True}
    digest = _sha256(path) if stat.st_size <= HASHED_UP_TO else None
    return {"size": stat.st_size, "mtime": stat.st_mtime_ns, "sha256": digest}


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _same_input(stored: dict, path: str) -> bool:
    """Whether ``path`` still is what ``stored`` recorded; hashes only a file whose mtime moved."""
    local = Path(path.removeprefix("file://"))
    if "files" in stored and local.is_dir():
        now = {str(p.relative_to(local)): p for p in local.rglob("*") if p.is_file()}
        return now.keys() == stored["files"].keys() and all(_same_file(stored["files"][k], p) for k, p in now.items())
    if "size" in stored or "missing" in stored:
        return _same_file(stored, local)
    return stored == json.loads(json.dumps(input_identity(path)))


def _same_file(stored: dict, path: Path) -> bool:
    try:
        stat = path.stat()
    except OSError:
        return stored.get("missing", False)
    if stored.get("size") != stat.st_size:
        return False
    if stored.get("mtime") == stat.st_mtime_ns:
        return True
    return stored.get("sha256") is not None and stored["sha256"] == _sha256(path)


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
            "inputs": [[p, input_identity(p)] for p in task.inputs]}


def finished(task: Task):
    """The stored result of ``task`` when its marker matches, else None."""
    if task.marker is None:
        return None
    try:
        stored = json.loads(Path(task.marker).read_text())
        if (stored["version"], stored["fingerprint"]) != (MARKER_VERSION, task.fingerprint):
            return None
        if [p for p, _ in stored["inputs"]] != list(task.inputs):
            return None
        if not all(_same_input(identity, path) for path, identity in stored["inputs"]):
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


def run_task(task: Task, *_upstream, files=None):
    """Runs ``task`` unless its marker says it is done; ``_upstream`` only orders it after ``task.after``.
    ``files`` (a :class:`refinery.engine.watch.TaskFiles`, which the engine passes) is where the task
    keeps its progress and log; called on the driver without it, the current monitor's are used."""
    if files is None:
        from refinery.engine.watch import current

        monitor = current()
        if monitor is not None:
            with monitor.phase([task]):
                return run_task(task, *_upstream, files=monitor.files)
    done = finished(task)
    if done is not None:
        if files is not None:
            _record(task, files, "resumed", done)
        return done
    if task.marker is not None:
        Path(task.marker).unlink(missing_ok=True)  # a half-rewritten output never looks finished
    state = _state(task) if task.marker is not None else None  # the inputs' identity as they were read
    if files is None:
        result = task.func(*task.args)
    else:
        result = _run_watched(task, files)
    if task.marker is not None:
        from refinery.io import write_json_atomic

        data = result.to_dict() if isinstance(result, Result) else result
        write_json_atomic(task.marker, {**state, "key": task.key, "outputs": output_sizes(task.outputs),
                                        "result": data})
    if files is not None:
        _record(task, files, "done", result)
    return result


def _run_watched(task: Task, files):
    """``task.func`` with its log, and its ``report=`` callable when it takes one."""
    import time

    from refinery.engine.watch import Reporter, task_log

    reporter = Reporter(files.progress(task.key), task.key)
    with task_log(files.log(task.key), task.key) as log:
        started = time.perf_counter()
        try:
            result = task.func(*task.args, **({"report": reporter} if task.reports else {}))
        except BaseException:
            reporter.write("failed", {})
            raise
        log.end(result, time.perf_counter() - started)
    return result


def _record(task: Task, files, state: str, result) -> None:
    from refinery.engine.watch import Reporter, TaskLog, numbers

    if state == "resumed":
        TaskLog(files.log(task.key), task.key).line("resumed: its marker matches, not run again")
    Reporter(files.progress(task.key), task.key).write(state, numbers(result))
