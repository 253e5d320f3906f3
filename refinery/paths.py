"""Names from configs that become folder names, and joining them under an output folder safely.

A pipeline's, mix's, ablation's or training's ``name`` (``runs/NAME``), a mix source's name
(``OUTPUT/sources/NAME``), an ablation variant's (``OUTPUT/variants/NAME``) and an eval set's
(``OUTPUT/eval/NAME``) are single path components: letters, digits, ``-`` and ``_``, starting with
a letter or digit, so never ``.``, ``..``, a separator or a hidden name. ``inside`` checks a join
as well, for paths built from anything else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

NAME_MAX = 64
NAME_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{NAME_MAX - 1}}}")
# names refinery derives from two others (an ablation variant's pipeline, "ABLATION-VARIANT")
DERIVED_NAME_MAX = 200
DERIVED_NAME_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{DERIVED_NAME_MAX - 1}}}")


def _checker(pattern: re.Pattern, limit: int):
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"must be 1 to {limit} letters, digits, '-' or '_', starting with a letter or digit "
                             "(it becomes a folder name)")
        return value

    return check


PathName = Annotated[str, AfterValidator(_checker(NAME_PATTERN, NAME_MAX))]
"""A config name that becomes one path component."""
DerivedPathName = Annotated[str, AfterValidator(_checker(DERIVED_NAME_PATTERN, DERIVED_NAME_MAX))]
"""The same, for names that may be built from two PathNames."""


class PathEscapeError(ValueError):
    """A path built from a name resolves outside the folder it was meant to be in."""


def inside(root: str | Path, *parts: str | Path) -> Path:
    """``root / parts...``, resolved; raises PathEscapeError if it leaves ``root`` (``..``, an absolute
    part, or a symlink pointing elsewhere)."""
    base = Path(root).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise PathEscapeError(f"{'/'.join(map(str, parts))!r} leads outside {str(root)!r}")
    return path
