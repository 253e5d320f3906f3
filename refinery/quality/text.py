"""The text a fastText quality model sees: one line, as fastText reads one example."""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"([.,!?;:()\[\]{}\"'/\\<>|@#$%^&*+=~`«»“”‘’—–-])")


def dclm_line(text: str) -> str:
    """DCLM's fastText preprocessing: lowercase, punctuation spaced out as its own token, every
    run of whitespace (newlines too) folded into one space."""
    return " ".join(_PUNCTUATION.sub(r" \1 ", text.lower()).split())  # split(): \s+ in C


def plain_line(text: str) -> str:
    """Newlines and whitespace runs folded only: how DCLM's released OH-2.5 model scores."""
    return " ".join(text.split())


NORMALIZERS = {"dclm": dclm_line, "lines": plain_line}
