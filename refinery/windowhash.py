"""Hashes of every n-token window of a text, for exact-substring dedup across parts.

Tokens are what ``str.split()`` yields (Unicode whitespace, found in the UTF-8 bytes by
:func:`_space_bytes`); each token is hashed with FNV-1a 64 and the splitmix64 finaliser, and each
window of ``n`` token hashes with a rolling polynomial (an odd base, so every step is a bijection
of the state), finalised again. Depends on nothing but the bytes: the same in every process."""

from __future__ import annotations

import numba
import numpy as np

from refinery.minhash import _FNV_OFFSET, _FNV_PRIME
from refinery.minhash import _nb_fmix64 as _fmix64  # the same word hash and finaliser as MinHash's

_WINDOW_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so the rolling hash is a bijection per step


@numba.njit(cache=True, nogil=True, inline="always")
def _space_bytes(buf, i, n):
    """Bytes of the whitespace character at ``buf[i]`` (str.isspace in UTF-8), 0 if none."""
    b = buf[i]
    if b < 0x80:
        return 1 if (9 <= b <= 13 or 28 <= b <= 32) else 0
    if b == 0xC2 and i + 1 < n:
        return 2 if buf[i + 1] == 0x85 or buf[i + 1] == 0xA0 else 0
    if i + 2 >= n:
        return 0
    c, d = buf[i + 1], buf[i + 2]
    if b == 0xE1:
        return 3 if c == 0x9A and d == 0x80 else 0
    if b == 0xE2:
        if c == 0x80 and (d <= 0x8A or d == 0xA8 or d == 0xA9 or d == 0xAF):
            return 3 if d >= 0x80 else 0
        return 3 if c == 0x81 and d == 0x9F else 0
    if b == 0xE3:
        return 3 if c == 0x80 and d == 0x80 else 0
    return 0


@numba.njit(cache=True, nogil=True)
def _token_hashes(buf, out):
    """FNV-1a + splitmix64 hash of each whitespace-separated token of UTF-8 ``buf`` (as
    ``str.split()`` splits it) into ``out``; returns the number of tokens."""
    n, i, t = len(buf), 0, 0
    while i < n:
        w = _space_bytes(buf, i, n)
        if w:
            i += w
            continue
        h = np.uint64(_FNV_OFFSET)
        while i < n and _space_bytes(buf, i, n) == 0:
            h = (h ^ np.uint64(buf[i])) * np.uint64(_FNV_PRIME)
            i += 1
        out[t] = _fmix64(h)
        t += 1
    return t


@numba.njit(cache=True, nogil=True)
def _rolling_windows(tokens, m, out):
    """Hash of each ``m``-token window: a polynomial over the token hashes, rolled, finalised."""
    top = np.uint64(1)
    for _ in range(m - 1):
        top *= _WINDOW_BASE
    h = np.uint64(0)
    for j in range(m):
        h = h * _WINDOW_BASE + tokens[j]
    out[0] = _fmix64(h)
    for i in range(1, len(tokens) - m + 1):
        h = (h - tokens[i - 1] * top) * _WINDOW_BASE + tokens[i + m - 1]
        out[i] = _fmix64(h)


def window_hashes(text: str, min_tokens: int) -> np.ndarray:
    """uint64 hash of each ``min_tokens``-token window of ``text``, in position order; empty when
    the text has fewer tokens than one window."""
    buf = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    tokens = np.empty(len(buf) // 2 + 1, dtype=np.uint64)
    count = _token_hashes(buf, tokens)
    if count < min_tokens:
        return np.empty(0, dtype=np.uint64)
    out = np.empty(count - min_tokens + 1, dtype=np.uint64)
    _rolling_windows(tokens[:count], min_tokens, out)
    return out
