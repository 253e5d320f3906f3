"""Inputs through fsspec (local, s3://, https://) and atomic local outputs."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from refinery.config import ConfigError
from refinery.sample import SAMPLE_SCHEME, materialise

_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True, order=True)
class InputShard:
    path: str  # local path or fsspec URL
    shard_id: str  # stable, file-system-safe name for this shard's outputs

    @staticmethod
    def for_path(path: str) -> InputShard:
        base = re.sub(r"[^A-Za-z0-9._-]", "_", path.rstrip("/").rsplit("/", 1)[-1])
        for suffix in (".gz", ".warc", ".arc"):
            base = base.removesuffix(suffix)
        digest = hashlib.sha1(path.encode()).hexdigest()[:8]
        return InputShard(path=path, shard_id=f"{base}-{digest}")


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def expand_inputs(patterns: list[str]) -> list[InputShard]:
    """Resolves globs and URLs into a sorted, de-duplicated shard list; raises ConfigError."""
    paths: list[str] = []
    for index, pattern in enumerate(patterns):
        key = f"input.paths[{index}]"
        if pattern.startswith(SAMPLE_SCHEME):
            name = pattern.removeprefix(SAMPLE_SCHEME)
            try:
                paths.extend(materialise(name))
            except KeyError:
                raise ConfigError(key, f"unknown embedded sample {pattern!r}") from None
            continue
        if is_remote(pattern):
            paths.extend(_expand_remote(pattern, key))
            continue
        local = pattern.removeprefix("file://")
        matches = sorted(glob.glob(local)) if _GLOB_CHARS.search(local) else [local]
        matches = [m for m in matches if not os.path.isdir(m)]
        if not matches or not os.path.exists(matches[0]):
            raise ConfigError(key, f"no input file matches {pattern!r}")
        for match in matches:
            if not os.access(match, os.R_OK):
                raise ConfigError(key, f"input is not readable: {match!r}")
        paths.extend(os.path.abspath(m) for m in matches)
    unique = sorted(set(paths))
    return [InputShard.for_path(p) for p in unique]


def _expand_remote(url: str, key: str) -> list[str]:
    import fsspec

    try:
        fs, _, _ = fsspec.core.get_fs_token_paths(url, storage_options=_storage_options(url))
        if _GLOB_CHARS.search(url.split("://", 1)[1]) and not url.startswith(("http://", "https://")):
            found = sorted(fs.glob(url))
            if not found:
                raise ConfigError(key, f"no input matches {url!r}")
            protocol = url.split("://", 1)[0]
            return [f"{protocol}://{p}" if "://" not in p else p for p in found]
        if not fs.exists(url):
            raise ConfigError(key, f"input not found: {url!r}")
    except ConfigError:
        raise
    except ImportError as err:
        raise ConfigError(key, f"no fsspec backend for {url!r}: {err}") from None
    except Exception as err:  # noqa: BLE001 - network and auth errors become one config line
        raise ConfigError(key, f"cannot reach {url!r}: {type(err).__name__}: {err}") from None
    return [url]


def _storage_options(url: str) -> dict:
    # Common Crawl's bucket is public; anonymous access needs no credentials.
    if url.startswith("s3://") and os.environ.get("REFINERY_S3_ANON", "1") == "1":
        return {"anon": True}
    return {}


def remote_identity(path: str) -> list:
    """What identifies a remote input's content: its ETag when the store gives one, else its size
    and modification time."""
    import fsspec

    fs, _, _ = fsspec.core.get_fs_token_paths(path, storage_options=_storage_options(path))
    info = fs.info(path)
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return ["etag", str(etag).strip('"')]
    return ["size", info.get("size"), str(info.get("LastModified") or info.get("mtime") or "")]


@contextlib.contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """Opens raw bytes; WARC readers do their own per-member gzip decoding."""
    if not is_remote(path):
        with open(path.removeprefix("file://"), "rb") as handle:
            yield handle
        return
    import fsspec

    with fsspec.open(path, "rb", compression=None, **_storage_options(path)) as handle:
        yield handle


def temporary_suffix() -> str:
    """What every file refinery writes carries until it is renamed into place: a killed task's
    temporaries are found by this name, and no user file is mistaken for one."""
    return f".refinery-tmp-{os.getpid()}"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{temporary_suffix()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary sibling path; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")

