"""What every command that writes an output folder keeps in ``OUTPUT/logs/``, and its progress.

- ``logs/driver.log``: the command line, the config and its fingerprint, start and end, each
  phase (task list) with its counts, every line the command prints, warnings (the ``logging``
  and ``warnings`` modules) and an error with its traceback;
- ``logs/tasks/<key>.log``: one per task (:mod:`refinery.engine.watch`).

Logs are appended to, so a resumed run keeps the story of the one that failed. A log that
cannot be written (a full disk) is skipped silently: logging never fails a run.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from refinery.progress import Display, display_for

DRIVER_LOG = ("logs", "driver.log")


class _QuietFileHandler(logging.FileHandler):
    def handleError(self, record) -> None:  # a full disk does not fail the run
        pass


@dataclass
class Session:
    """One command's logs and display: ``say`` prints a line and logs it."""

    driver_log: Path
    display: Display
    log: logging.Logger

    def say(self, line: str) -> None:
        self.display.message(line)
        self.log.info(line)

    def progress(self):
        """What :func:`refinery.pipeline.run.execute` reports to (its start and phase lines)."""
        from refinery.pipeline.run import Progress

        return Progress(on_start=self.display.start, on_phase=self.say)


@contextlib.contextmanager
def command_logs(out_dir: str, facts: dict | None = None, stream=None) -> Iterator[Session]:
    """``OUTPUT/logs/`` for the block, a progress display (a bar on a terminal, lines elsewhere)
    fed by the engine's tasks, and the driver log's record of how the block ended."""
    from refinery import __version__
    from refinery.engine.watch import Monitor, hook_warnings, warning_listeners

    folder = Path(out_dir).joinpath(*DRIVER_LOG).parent
    with contextlib.suppress(OSError):
        (folder / "tasks").mkdir(parents=True, exist_ok=True)
    handler, library = (_QuietFileHandler(folder / "driver.log", encoding="utf-8", delay=True) for _ in range(2))
    for h in (handler, library):
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    library.setLevel(logging.WARNING)  # libraries' records: warnings and errors only
    log = logging.getLogger("refinery.driver")
    log.setLevel(logging.INFO)
    log.propagate = False  # the driver's own lines (and tracebacks) go to the file, not to stderr
    log.addHandler(handler)
    root = logging.getLogger()
    root_handlers = [library]
    if not root.handlers:  # keep stderr as it was: libraries' warnings reach it through lastResort
        root_handlers.append(logging.lastResort)
    for h in root_handlers:
        root.addHandler(h)

    def on_warning(text: str) -> None:
        log.warning(text)

    hook_warnings()
    warning_listeners.append(on_warning)
    started = time.time()
    log.info(f"start: refinery {__version__}: {' '.join(sys.argv)}")
    for key, value in (facts or {}).items():
        log.info(f"{key}: {value}")
    display = display_for(stream)
    try:
        with display, Monitor(out_dir, display, log):
            yield Session(folder / "driver.log", display, log)
    except BaseException as exc:
        from refinery.config import ConfigError

        if isinstance(exc, (ConfigError, KeyboardInterrupt)):
            log.error(f"end after {time.time() - started:.1f} s: {type(exc).__name__}: {exc}")
        else:
            log.exception(f"end after {time.time() - started:.1f} s: failed: {type(exc).__name__}: {exc}")
        raise
    else:
        log.info(f"end: done in {time.time() - started:.1f} s")
    finally:
        warning_listeners.remove(on_warning)
        for h in root_handlers:
            root.removeHandler(h)
        log.removeHandler(handler)
        handler.close()
        library.close()
