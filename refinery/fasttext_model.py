"""fastText models from local files: loaded once per process, and checked in a child process
first (a truncated or foreign file can make fastText allocate without bound)."""

from __future__ import annotations

import functools
from pathlib import Path

MODEL_CHECK_TIMEOUT_S = 120.0
MODEL_CHECK_MEMORY_BYTES = 1 << 30  # plus 8 times the file's size: a python with fastText needs ~170 MB
_MODEL_CHECK = """
import os, resource, sys
from pathlib import Path
for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # thread stacks count too
    os.environ[name] = "1"
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
from refinery.fasttext_model import load_fasttext
load_fasttext(Path(sys.argv[1])).predict("a short text", k=1)
"""
_models_checked: dict[tuple, str | None] = {}


def model_problem(path: Path) -> str | None:
    """None if the fastText model at ``path`` loads and predicts, else why not, in one line.

    It is loaded in a child process under a time and memory limit: fastText reads a truncated
    model by looping at the end of the file (it grows a string until memory runs out), and a file
    that is not a model can make it allocate without bound."""
    import subprocess
    import sys

    from refinery.sandbox import PACKAGE_ROOT

    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _models_checked:
        limit = MODEL_CHECK_MEMORY_BYTES + 8 * stat.st_size
        try:
            proc = subprocess.run([sys.executable, "-c", _MODEL_CHECK, str(path.resolve()), str(limit)],
                                  cwd=PACKAGE_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=MODEL_CHECK_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            problem = f"loading it took over {MODEL_CHECK_TIMEOUT_S:g} s"
        else:
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            problem = None if proc.returncode == 0 else (lines[-1][:200] if lines else f"exit {proc.returncode}")
            if problem and ("MemoryError" in problem or "bad_alloc" in problem):
                problem = "loading it ran out of memory (a truncated or corrupt file?)"
        _models_checked[key] = problem
    return _models_checked[key]


def default_model_path() -> Path:
    """lid.176.ftz as shipped inside refinery (refinery/models/, CC BY-SA 3.0, see its NOTICE.md)."""
    from importlib.resources import files

    return Path(str(files("refinery") / "models" / "lid.176.ftz"))


def load_fasttext(path: Path):
    """The model at ``path``, loaded once per process (and again if the file changes)."""
    stat = Path(path).stat()
    return _load_fasttext(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _load_fasttext(path: str, size: int, mtime_ns: int):
    import fasttext

    if not hasattr(fasttext, "train_supervised"):
        raise ImportError(
            "the `fasttext` module is fasttext-predict, not fasttext-numpy2-wheel; run "
            "`pip install --force-reinstall --no-deps fasttext-numpy2-wheel==0.9.2`"
        )
    # fasttext.load_model prints a deprecation banner on stderr; _FastText is the same loader.
    from fasttext.FastText import _FastText

    return _FastText(model_path=str(path))
