"""Runs a function in a child process, so a document that hangs or crashes it is dropped alone.

The child is a plain `python -m refinery.sandbox` subprocess rather than a multiprocessing
Process, because Dask workers are daemonic and may not fork multiprocessing children.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])  # the folder that holds this refinery package


class SandboxTimeout(Exception):
    pass


class SandboxCrashed(Exception):
    pass


class SandboxError(Exception):
    """The function raised; the message is the child's exception."""


def _resolve(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


PIPE_BYTES = 1 << 20  # Linux's default pipe-max-size


def _widen(fd: int) -> int:
    """A pipe that holds a whole page: with the default 64 KiB, sending a 140 KB page waits for
    the other side to be scheduled twice (about 1 ms a page on a busy machine). Linux only; where
    it is refused the pipe keeps its size. Returns the size (0 where it cannot be read)."""
    import fcntl

    try:
        return fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except OSError:
        try:
            return fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032))
        except OSError:
            return 0


class ProcessSandbox:
    def __init__(self, fn_ref: str, kwargs: dict[str, Any], timeout_s: float, startup_timeout_s: float = 120.0):
        self.fn_ref = fn_ref
        self.kwargs = kwargs
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._pipe_bytes = 0
        self.restarts = 0

    def _start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self._pipe_bytes = _widen(to_child_w)
        _widen(from_child_w)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "refinery.sandbox", str(to_child_r), str(from_child_w)],
            pass_fds=(to_child_r, from_child_w),
            stdin=subprocess.DEVNULL,
            # `-m` puts the working directory first on sys.path: start beside the refinery package
            # this process imported, so that a source checkout in the working directory does not
            # shadow an installed refinery (whose stages live in refinery/stages).
            cwd=PACKAGE_ROOT,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._conn = _DuplexConnection(reader=Connection(from_child_r, writable=False),
                                       writer=Connection(to_child_w, readable=False))
        self._conn.send((self.fn_ref, self.kwargs))
        if not self._conn.poll(self.startup_timeout_s):
            self.close()
            raise SandboxCrashed("sandbox did not start")
        status, detail = self._conn.recv()
        if status != "ready":
            self.close()
            raise SandboxCrashed(f"sandbox failed to start: {detail}")

    def call(self, *args: Any) -> Any:
        """One call's value; its failure raised as SandboxError, SandboxTimeout or SandboxCrashed."""
        (status, value), = self.call_each([args])
        if status == "ok":
            return value
        raise {"error": SandboxError, "timeout": SandboxTimeout}.get(status, SandboxCrashed)(value)

    def call_each(self, calls: list[tuple]) -> list[tuple[str, Any]]:
        """Each call's outcome, in order: ("ok", value), or ("error" | "timeout" | "crashed", message).
        Calls are sent ahead while they fit in half the pipe, so the child goes from one to the next
        without waiting for this process to be scheduled; each still has ``timeout_s`` of its own,
        counted from the answer before it (the child works in order). After a timeout or crash the
        calls sent behind it go to a new child."""
        import pickle

        payloads = [pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL) for args in calls]
        outcomes: list[tuple[str, Any]] = []
        sent = unanswered = 0  # calls written to the child; bytes of those not answered yet
        for n, payload in enumerate(payloads):
            try:
                if self._proc is None:
                    self._start()
                    sent, unanswered = n, 0
                assert self._conn is not None
                while sent < len(payloads) and (sent == n or unanswered + len(payloads[sent]) + 16 <= self._pipe_bytes // 2):
                    self._conn.send_bytes(payloads[sent])  # the first is read at once: the child is idle
                    unanswered += len(payloads[sent])
                    sent += 1
                if not self._conn.poll(self.timeout_s):
                    self._restart_later()
                    outcomes.append(("timeout", f"no answer within {self.timeout_s}s"))
                    continue
                outcomes.append(self._conn.recv())
                unanswered -= len(payload)
            except SandboxCrashed as err:  # the child could not start: nothing to restart
                outcomes.append(("crashed", str(err)))
            except (EOFError, OSError, BrokenPipeError):
                self._restart_later()
                outcomes.append(("crashed", "the sandbox process died"))
        return outcomes

    def _restart_later(self) -> None:
        self.restarts += 1
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> ProcessSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_SHARED: dict[tuple, ProcessSandbox] = {}


def shared_sandbox(fn_ref: str, kwargs: dict[str, Any], timeout_s: float) -> ProcessSandbox:
    """One sandbox per function, settings and process, kept across shards: starting a child costs
    about 0.4 s, more than a small shard's work. Closed when this process exits."""
    import atexit
    import json

    key = (fn_ref, json.dumps(kwargs, sort_keys=True, default=str), timeout_s)
    if key not in _SHARED:
        if not _SHARED:
            atexit.register(lambda: [sandbox.close() for sandbox in _SHARED.values()])
        _SHARED[key] = ProcessSandbox(fn_ref, kwargs, timeout_s)
    return _SHARED[key]


class _DuplexConnection:
    def __init__(self, reader: Connection, writer: Connection):
        self.reader = reader
        self.writer = writer

    def send(self, obj: Any) -> None:
        self.writer.send(obj)

    def send_bytes(self, payload: bytes) -> None:
        self.writer.send_bytes(payload)

    def recv(self) -> Any:
        return self.reader.recv()

    def poll(self, timeout: float) -> bool:
        return self.reader.poll(timeout)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def _child(read_fd: int, write_fd: int) -> None:
    conn = _DuplexConnection(reader=Connection(read_fd, writable=False),
                             writer=Connection(write_fd, readable=False))
    fn_ref, kwargs = conn.recv()
    try:
        fn = _resolve(fn_ref)
    except Exception as err:  # noqa: BLE001 - reported to the parent
        conn.send(("failed", repr(err)))
        return
    conn.send(("ready", None))
    while True:
        try:
            args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", fn(*args, **kwargs)))
        except Exception as err:  # noqa: BLE001 - one document's failure, reported
            conn.send(("error", f"{type(err).__name__}: {err}"))


if __name__ == "__main__":
    _child(int(sys.argv[1]), int(sys.argv[2]))
