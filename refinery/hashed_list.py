"""A large list of strings kept as sorted 64-bit hashes in a memory-mapped file: membership tests
without the strings in memory.

UT1's domain blocklist has 4.56 M lines; as a Python set it costs every worker about 770 MB and
3.5 s to build. Hashed once per machine (a cache file beside the other caches, written
atomically), it is a 36 MB array that every worker maps from the page cache in milliseconds. Two
different strings share a 64-bit BLAKE2b hash with probability 2^-64: over 4.56 M entries, one URL
in about 4 x 10^12 could be taken for a listed one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def string_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


def hashed_lines(path: Path, member: str | None = None) -> np.ndarray:
    """The sorted distinct hashes of a list file's entries (or of ``member``, a file inside the
    tar archive ``path``), read as datatrove's ``parse_list(..., do_normalize=False)`` reads them
    (every line not starting with "#", stripped), streamed: the strings are never all in memory."""
    if member is None:
        with open(path, encoding="utf-8", errors="surrogateescape") as lines:
            return _hashed(lines)
    import io
    import tarfile

    with tarfile.open(path) as archive:
        binary = archive.extractfile(member)
        if binary is None:
            raise FileNotFoundError(f"{path} has no file {member!r}")
        with io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape") as lines:
            return _hashed(lines)


def _hashed(lines) -> np.ndarray:
    hashes = np.fromiter((string_hash(line.strip()) for line in lines if not line.startswith("#")), dtype=np.uint64)
    return np.unique(hashes)


def cache_dir() -> Path:
    return Path(os.environ.get("REFINERY_CACHE_DIR") or Path.home() / ".cache" / "refinery") / "hashed_lists"


class HashedList:
    """``item in hashed_list``: one of the hashed entries, or of ``extra`` (kept as strings)."""

    def __init__(self, hashes: np.ndarray, extra=()):
        self.hashes = hashes
        self.extra = frozenset(extra)

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, item) -> bool:
        if item in self.extra:
            return True
        if not isinstance(item, str):
            return False
        value = np.uint64(string_hash(item))
        at = int(np.searchsorted(self.hashes, value))
        return at < len(self.hashes) and self.hashes[at] == value

    @classmethod
    def load(cls, source: Path, extra=(), member: str | None = None) -> HashedList:
        """The hashes of ``source``'s lines (or of ``member``'s, a file inside the tar archive
        ``source``), from the cache when it has them for this file (its path, size and
        modification time), else built and cached."""
        import fasteners

        stat = source.stat()
        if member is None:
            name, tag = source.name, hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
        else:
            name, tag = member, hashlib.sha1(f"{source.resolve()}:{member}".encode()).hexdigest()[:12]
        cached = cache_dir() / f"{name}-{tag}-{stat.st_size}-{stat.st_mtime_ns}.npy"
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            lock = fasteners.InterProcessLock(str(cached) + ".lock")  # workers starting together build it once
            lock.acquire()
        except OSError:  # no writable cache: this process keeps its own copy
            return cls(hashed_lines(source, member), extra)
        try:
            if cached.is_file():
                try:
                    return cls(np.load(cached, mmap_mode="r"), extra)
                except (OSError, ValueError):  # a damaged cache file: build it again
                    pass
            hashes = hashed_lines(source, member)
            tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, hashes)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, cached)
            return cls(np.load(cached, mmap_mode="r"), extra)
        finally:
            lock.release()
