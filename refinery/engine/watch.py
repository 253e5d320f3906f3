"""Task progress and task logs, kept as small files in the output folder. No Dask.

Files work the same under the sync scheduler, a LocalCluster and a remote ``--scheduler``
cluster: the output folder is shared by every worker already, so nothing else has to be.

- **Progress.** A task whose ``Task.reports`` is set is called with ``report=``, a plain
  callable taking its counts (``records=``, ``documents=``, ``bytes=``, ...); each call
  rewrites ``OUTPUT/_progress/<key>.json`` atomically (the task decides how often: every ~2 s).
  :func:`refinery.engine.run_task` writes the file's last state: done, resumed or failed, with
  the numbers of the result.
- **Task logs.** Every task run under a :class:`Monitor` appends to ``OUTPUT/logs/tasks/<key>.log``:
  its start, its end with its counts and every drop reason counted (not one line per record),
  warnings of libraries from its thread (``logging`` records of level WARNING and up, and the
  ``warnings`` module), and a failure's traceback.
- **The driver's side.** A :class:`Monitor` (one per command, see :mod:`refinery.logs`) polls
  the progress files of the tasks running now every second and hands their states to a sink
  (the display), from its own thread; :meth:`Monitor.phase` brackets each task list.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

PROGRESS = "_progress"
POLL_S = 1.0  # how often the driver reads the progress files
TICK_S = 0.25  # how often the sink is told the time (a display prints on its own schedule)
FINAL = ("done", "resumed", "failed")


def file_name(key: str) -> str:
    """A task key as a file name: scheduler keys may hold ``:`` or ``/``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


@dataclass(frozen=True)
class TaskFiles:
    """Where the tasks of one command keep their progress and logs (picklable: it travels with
    each task to the workers)."""

    folder: str

    def progress(self, key: str) -> Path:
        return Path(self.folder) / PROGRESS / f"{file_name(key)}.json"

    def log(self, key: str) -> Path:
        return Path(self.folder) / "logs" / "tasks" / f"{file_name(key)}.log"


def write_progress(path: Path, state: dict) -> None:
    """Replaces ``path`` with ``state`` atomically (no fsync: it is rewritten every few seconds).
    A failed write (a full disk) is ignored: progress never fails a task."""
    from refinery.io import temporary_suffix

    tmp = path.with_name(path.name + temporary_suffix())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def read_progress(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def numbers(result: Any) -> dict:
    """The counts of a task's result (its whole-number fields) that a display adds up."""
    data = result.to_dict() if hasattr(result, "to_dict") else result
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)}


class Reporter:
    """The ``report=`` callable a task is given: ``report(records=..., documents=...)``."""

    def __init__(self, path: Path, key: str):
        self.path, self.key, self.started = path, key, time.time()

    def __call__(self, **counts) -> None:
        self.write("running", counts)

    def write(self, state: str, counts: dict) -> None:
        write_progress(self.path, {"key": self.key, "state": state, "started": self.started,
                                   "updated": time.time(), "counts": counts})


# --- task logs --------------------------------------------------------------------------------

_active: dict[int, TaskLog] = {}  # thread id -> the task log of the task that thread runs
_lock = threading.Lock()
_original_showwarning = None
warning_listeners: list[Callable[[str], None]] = []  # e.g. the driver log (refinery.logs)


def _showwarning(message, category, filename, lineno, file=None, line=None):
    text = warnings.formatwarning(message, category, filename, lineno, line).strip()
    log = _active.get(threading.get_ident())
    if log is not None:
        log.line(f"warning: {text}")
    for listener in tuple(warning_listeners):  # a copy: a listener may go meanwhile
        listener(text)
    _original_showwarning(message, category, filename, lineno, file, line)


def hook_warnings() -> None:
    """Shows every warning to the task log of its thread and to the listeners too (and, as
    before, to whatever showed it: stderr)."""
    global _original_showwarning
    with _lock:
        if warnings.showwarning is not _showwarning:
            _original_showwarning = warnings.showwarning
            warnings.showwarning = _showwarning


class _ThreadHandler(logging.Handler):
    """Passes the records of one thread to its task log."""

    def __init__(self, log: TaskLog):
        super().__init__(logging.WARNING)
        self.task_log = log
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread == self.task_log.thread and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        self.task_log.line(self.format(record))

    def handleError(self, record) -> None:  # a log never fails a task
        pass


class TaskLog:
    """Appends timestamped lines to one task's log; writing errors (a full disk) are ignored."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        self.thread = threading.get_ident()

    def line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("".join(f"{stamp} {self.key} {part}\n" for part in text.splitlines() or [""]))
        except OSError:
            pass

    def end(self, result: Any, seconds: float) -> None:
        counts = ", ".join(f"{k} {v:,}" for k, v in numbers(result).items())
        self.line(f"end: {seconds:.1f} s" + (f"; {counts}" if counts else ""))
        data = result.to_dict() if hasattr(result, "to_dict") else result
        for stage in (data.get("funnel") or []) if isinstance(data, dict) else []:
            dropped = ", ".join(f"{reason} {n:,}" for reason, n in sorted(stage.get("dropped", {}).items()))
            self.line(f"  {stage['stage']}: in {stage['docs_in']:,}, out {stage['docs_out']:,}"
                      + (f", dropped: {dropped}" if dropped else ""))


@contextlib.contextmanager
def task_log(path: Path, key: str) -> Iterator[TaskLog]:
    """The task log of the task this thread runs, for the block: library warnings of this
    thread go to it too; an exception's traceback is written before it propagates."""
    log = TaskLog(path, key)
    handler = _ThreadHandler(log)
    hook_warnings()
    with _lock:
        _active[log.thread] = log
    logging.getLogger().addHandler(handler)
    log.line(f"start: pid {os.getpid()}")
    try:
        yield log
    except BaseException as exc:
        log.line(f"failed: {type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc()).rstrip())
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        with _lock:
            _active.pop(log.thread, None)


# --- the driver's side ------------------------------------------------------------------------

def input_bytes(paths: tuple[str, ...]) -> int | None:
    """The size of a task's local input files; None when one is remote, a folder or missing."""
    from refinery.io import is_remote

    total = 0
    for path in paths:
        local = Path(path.removeprefix("file://"))
        try:
            if is_remote(path) or not local.is_file():
                return None
            total += local.stat().st_size
        except OSError:
            return None
    return total


@dataclass
class Phase:
    """One task list as the display sees it: keys, their groups (``map``, ``keys``, ...) and input sizes."""

    keys: list[str]
    sizes: dict[str, int | None]
    started: float

    @staticmethod
    def group(key: str) -> str:
        return re.split(r"[-:]", key, maxsplit=1)[0]


class Monitor:
    """The driver's view of the tasks: gives them :class:`TaskFiles` under ``folder``, reads
    their progress files every POLL_S and calls ``sink.begin(phase)``, ``sink.update(phase,
    states, now)`` (every TICK_S, and at ``sink.due()``, from its own thread) and
    ``sink.end(phase, states, failed)``.

    ``with monitor:`` makes it the current one: :class:`refinery.engine.Engine` and
    :func:`refinery.engine.run_task` (called directly on the driver) use it."""

    def __init__(self, folder: str, sink, log: logging.Logger | None = None):
        self.files = TaskFiles(str(folder))
        self.sink = sink
        self.log = log or logging.getLogger("refinery")
        self._phase: Phase | None = None
        self._states: dict[str, dict] = {}
        self._read_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Monitor:
        global _current
        self._previous, _current = _current, self
        self._thread = threading.Thread(target=self._loop, name="refinery-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        global _current
        _current = self._previous
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        from refinery.engine.output import remove_own

        remove_own(Path(self.files.folder) / PROGRESS)

    @contextlib.contextmanager
    def phase(self, tasks) -> Iterator[None]:
        """Brackets one task list; a task list started inside another (a task that runs more
        tasks on the driver) is part of the outer one."""
        if self._phase is not None or not tasks:
            yield
            return
        keys = [t.key for t in tasks]
        for key in keys:  # a killed run's states are not this run's
            with contextlib.suppress(OSError):
                self.files.progress(key).unlink()
        phase = Phase(keys, {t.key: input_bytes(t.inputs) for t in tasks}, time.time())
        groups: dict[str, int] = {}
        for key in keys:
            groups[Phase.group(key)] = groups.get(Phase.group(key), 0) + 1
        self.log.info("phase: " + ", ".join(f"{g} ({n} tasks)" for g, n in groups.items()))
        with self._lock:
            self._phase, self._states, self._read_at = phase, {}, 0.0
            self.sink.begin(phase)
        failed = True
        try:
            yield
            failed = False
        finally:
            with self._lock:
                self._read(phase)
                self._phase = None
                line = self.sink.end(phase, dict(self._states), failed)
            seconds = time.time() - phase.started
            self.log.info(f"phase {'failed' if failed else 'done'} after {seconds:.1f} s" + (f": {line}" if line else ""))

    def _read(self, phase: Phase) -> None:
        for key in phase.keys:
            if self._states.get(key, {}).get("state") not in FINAL:
                state = read_progress(self.files.progress(key))
                if state is not None:
                    self._states[key] = state
        self._read_at = time.time()

    def _loop(self) -> None:
        wait = TICK_S
        while not self._stop.wait(wait):
            with self._lock:
                wait = TICK_S
                if self._phase is None:
                    continue
                due = self.sink.due()  # when the display next prints: wake for it, with fresh states
                if time.time() - self._read_at >= POLL_S or (due is not None and time.time() >= due):
                    self._read(self._phase)
                try:
                    self.sink.update(self._phase, dict(self._states), time.time())
                except Exception:  # a display never stops the run
                    self.log.warning("progress display failed:\n" + traceback.format_exc())
                due = self.sink.due()
                if due is not None:
                    wait = min(TICK_S, max(due - time.time(), 0.001))


_current: Monitor | None = None


def current() -> Monitor | None:
    """The monitor of the command running in this process, if any."""
    return _current
