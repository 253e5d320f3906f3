"""Pipeline stages, one module each. Heavy libraries are imported in `setup`, not here.

Every `Stage` (per-shard chain) and `DedupStage` (corpus-wide) subclass with a `name` defined
in a module of this package is registered under that name, so a config can list it.
"""

from __future__ import annotations

import importlib
import pkgutil

from refinery.stage import DedupStage, Stage


def _discover(base: type) -> dict[str, type]:
    found: dict[str, type] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, base) and value is not base
                    and value.__module__ == module.__name__ and "name" in vars(value)):
                if value.name in found:
                    raise RuntimeError(f"two stages named {value.name!r}")
                found[value.name] = value
    return found


def __getattr__(name: str):
    """``STAGES`` and ``DEDUP_STAGES``, discovered on first use: a process that imports one stage
    module (the extractor's sandbox) does not import them all."""
    if name in ("STAGES", "DEDUP_STAGES"):
        globals()[name] = _discover(Stage if name == "STAGES" else DedupStage)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
