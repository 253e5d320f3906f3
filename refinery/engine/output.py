"""The output folder a product writes into, and what refinery may do to it.

- **Ownership.** A folder refinery writes into carries a stamp (``.refinery-output.json``). A
  non-empty folder without one is not refinery's, and a run refuses it (exit 2) unless ``--force``
  is given. Every cleanup deletes only files whose names refinery itself gives (temporaries
  ``*.refinery-tmp-PID``, markers ``*.done``, its Parquet and JSON outputs) inside the folders it
  creates; nothing else is ever removed, even with ``--force``.
- **A lock.** One run at a time per folder: ``.refinery.lock`` names its holder (pid, host, start
  time). A second run exits 2 naming it; the lock of a killed run on this host is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Iterator

from refinery.config import ConfigError

STAMP = ".refinery-output.json"
LOCK = ".refinery.lock"
TEMPORARY = re.compile(r"\.refinery-tmp-\d+$")  # what refinery.io.atomic_path and TokenShardWriter write first
OWN_FOLDERS = ("documents", "filtered", "stats", "dedup", "dropped", "_markers", "tokens", "sources", "heldout",
               "tokenizer", "variants", "eval", "logs", "model", "checkpoint", "_progress")
OWN_FILE = re.compile(r"(\.parquet|\.json|\.jsonl|\.done|\.bin|\.bands|\.win|\.npy|\.idx|\.ds|\.ds\.index|\.ds\.metadata|\.tokens|\.pt|\.log|\.fasttext|\.fasttext\.part)$")


class OutputInUse(ConfigError):
    pass


@contextlib.contextmanager
def claim_output(out_dir: str, force: bool) -> Iterator[Path]:
    """Holds ``out_dir`` for one run: checks it is writable and refinery's (or ``force``), takes
    its lock, stamps it, sweeps temporaries of killed tasks, and with ``force`` removes
    refinery's markers (of sub-runs too), so that every task runs again."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError("output", f"output directory {out_dir!r} is not writable: {err.strerror}") from None
    foreign = sorted(p.name for p in out.iterdir() if p.name not in (STAMP, LOCK))
    unclaimed = bool(foreign) and not is_refinery_output(out)  # with --force too, none of its files is refinery's
    if unclaimed and not force:
        raise ConfigError("output", f"{out_dir!r} is not empty and is not a refinery output (it holds "
                                    f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                                    f"choose a new folder, or --force (refinery removes only files it wrote)")
    with output_lock(out_dir):
        if not (out / STAMP).is_file():
            from refinery import __version__
            from refinery.io import write_json_atomic

            write_json_atomic(out / STAMP, {"refinery_version": __version__, "created": _now()})
        for path in own_files(out):
            if TEMPORARY.search(path.name) or (force and path.suffix == ".done"):
                path.unlink(missing_ok=True)
        if force and not unclaimed:  # the files that say it (or a sub-run in it) finished: a killed run leaves none
            sub_runs = [m.parent for name in OWN_FOLDERS if (out / name).is_dir() and not (out / name).is_symlink()
                        for m in (out / name).rglob("_markers")]
            for root in [out, *sub_runs]:
                for path in map(root.joinpath, ("stats.json", "report.html", "tokens/manifest.json", "README.md",
                                                "ablation.json", "ablation.md", "ablation.png")):
                    if path.is_file() and not path.is_symlink() and (path.name != "README.md" or _is_card(path)):
                        path.unlink()
        yield out


def _is_card(path: Path) -> bool:
    """A README.md that is refinery's dataset card of a mix (:mod:`refinery.mix.card`)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return "built with refinery" in handle.read(1 << 16)


def is_refinery_output(out: Path) -> bool:
    """Stamped, or written by a refinery from before the stamp (it has markers)."""
    return (out / STAMP).is_file() or (out / "_markers").is_dir()


def own_files(out: Path) -> Iterator[Path]:
    """Files below refinery's own folders of ``out``, depth first; a user's folders are never walked."""
    for name in OWN_FOLDERS:
        folder = out / name
        if folder.is_dir() and not folder.is_symlink():
            yield from (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def is_own_name(path: Path) -> bool:
    """A name refinery gives its outputs, markers or temporaries."""
    return bool(OWN_FILE.search(path.name) or TEMPORARY.search(path.name))


def remove_own(path: Path) -> None:
    """Removes ``path`` if it is a file with a name refinery gives, or a folder of such files
    (then the folder too, once empty); anything else stays."""
    if path.is_symlink() or not path.exists():
        return
    if path.is_file():
        if is_own_name(path):
            path.unlink()
        return
    for child in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if child.is_file() and not child.is_symlink() and is_own_name(child):
            child.unlink()
        elif child.is_dir() and not child.is_symlink():
            with contextlib.suppress(OSError):
                child.rmdir()  # only when empty
    with contextlib.suppress(OSError):
        path.rmdir()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _alive(pid: int, started: float | None) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        return started is None or abs(process.create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


@contextlib.contextmanager
def output_lock(out_dir: str) -> Iterator[None]:
    """Holds ``OUT/.refinery.lock`` for the block. A lock left by a dead process on this host is
    taken over; a live holder (or one on another host) makes this run exit 2, naming it."""
    import psutil

    path = Path(out_dir) / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
          "process_start": psutil.Process().create_time()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            if holder is not None and (holder.get("host") != me["host"]
                                       or _alive(holder.get("pid", -1), holder.get("process_start"))):
                raise OutputInUse("output", f"{out_dir!r} is in use by another refinery run: pid {holder.get('pid')} "
                                            f"on {holder.get('host')}, started {holder.get('started')} "
                                            f"(remove {path} if that run is gone)") from None
            path.unlink(missing_ok=True)  # a killed run's lock (or an unreadable one): take it over
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(me, handle)
        break
    else:
        raise OutputInUse("output", f"could not take the lock {path}")
    try:
        yield
    finally:
        if (_read_lock(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
