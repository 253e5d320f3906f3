"""The output folder a product writes into: checked writable, and cleared of a killed run's temporaries."""

from __future__ import annotations

import os
import re
from pathlib import Path

from refinery.config import ConfigError
from refinery.engine.task import clear_markers

TEMPORARY = re.compile(r"\.tmp(-\d+)?$")  # what atomic_path and TokenShardWriter write before renaming


def prepare_output(out_dir: str, force: bool) -> None:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError("output", f"output directory {out_dir!r} is not writable: {err.strerror}") from None
    for path in out.rglob("*.tmp*"):  # temporaries of a killed run (NAME.tmp, NAME.tmp-PID): never outputs
        if TEMPORARY.search(path.name) and path.is_file():
            path.unlink(missing_ok=True)
    if force:
        clear_markers(out / "_markers")
