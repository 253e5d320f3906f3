"""Inputs through fsspec (local, s3://, https://) and atomic local outputs."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from refinery.config import ConfigError, InputConfig
from refinery.sample import SAMPLE_SCHEME, materialise

_GLOB_CHARS = re.compile(r"[*?\[]")
T = TypeVar("T")


@dataclass(frozen=True, order=True)
class InputShard:
    path: str  # local path or fsspec URL
    shard_id: str  # stable, file-system-safe name for this shard's outputs
    start: int = 0  # a byte range of the file (refinery.pipeline.split): [start, end)
    end: int | None = None
    kind: str = ""  # the reader the run chose (source_kind); "" lets the file's name decide

    @staticmethod
    def for_path(path: str, named: str | None = None, kind: str = "") -> InputShard:
        """The digest in ``shard_id`` covers ``named`` (see :func:`input_names`), else ``path``."""
        base = re.sub(r"[^A-Za-z0-9._-]", "_", path.rstrip("/").rsplit("/", 1)[-1])
        for suffix in (".gz", ".zst", ".warc", ".arc", ".wet", ".jsonl", ".parquet"):
            base = base.removesuffix(suffix)
        digest = hashlib.sha1((path if named is None else named).encode()).hexdigest()[:8]
        return InputShard(path=path, shard_id=f"{base}-{digest}", kind=kind)


DOCUMENT_SUFFIXES = {"jsonl": (".jsonl", ".jsonl.gz", ".jsonl.zst"), "parquet": (".parquet",),
                     "wet": (".wet", ".wet.gz")}


def source_kind(path: str, fmt: str = "auto") -> str:
    """Which reader a file needs: warc (WARC or ARC), wet, jsonl or parquet."""
    if fmt in ("wet", "jsonl", "parquet"):
        return fmt
    if fmt in ("warc", "arc"):
        return "warc"
    name = path.lower().rstrip("/")
    for kind, suffixes in DOCUMENT_SUFFIXES.items():
        if name.endswith(suffixes):
            return kind
    return "warc"


def read_input_list(path: str, base_url: str | None = None, select: str | None = None,
                    config: InputConfig | None = None) -> list[tuple[int, str]]:
    """(line number, path) for each entry of a list of inputs, one a line (a Common Crawl
    ``warc.paths.gz``, or any list; gzipped when its name ends in .gz; blank lines and lines
    starting with # are skipped). Entries without a scheme get ``base_url`` in front (for Common
    Crawl ``s3://commoncrawl/`` or ``https://data.commoncrawl.org/``), else are paths from the
    current directory. ``select`` "i/n" keeps every n-th entry from the i-th (1-based): a
    deterministic 1/n of the list. Raises UsageError."""
    import gzip

    from refinery.config import UsageError

    if select is not None:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", select)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise UsageError("--select", f"expected i/n with 1 <= i <= n (e.g. 3/10), got {select!r}")
        part, parts = int(match[1]), int(match[2])
    try:
        with open_input(path, config) as stream:
            data = stream.read()
        if path.lower().endswith(".gz"):
            data = gzip.decompress(data)
        text = data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as err:
        raise UsageError("--input-list", f"cannot read {path!r}: {_one_line(err)}") from None
    entries = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)
               if line.strip() and not line.lstrip().startswith("#")]
    if base_url:
        base = base_url.rstrip("/") + "/"
        entries = [(n, e if "://" in e else base + e.lstrip("/")) for n, e in entries]
    if select is not None:
        entries = [entry for index, entry in enumerate(entries) if index % parts == part - 1]
    if not entries:
        raise UsageError("--input-list", f"{path!r} names no input" + (f" for --select {select}" if select else ""))
    return entries


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def input_names(paths: list[str]) -> dict[str, str]:
    """What each shard's name digest covers: a URL as it is; a local file by its last two path
    components (``web/dev-00000.warc.gz``), more where two inputs would share them. So a checkout
    moved elsewhere (or reached through a symlink) writes the same names and dedup keys."""
    local = [p for p in paths if not is_remote(p)]
    names = {p: p for p in paths if is_remote(p)}
    parts = {p: Path(p).parts for p in local}
    depth = 2
    while local:
        tails = {p: "/".join(parts[p][-depth:]) for p in local}
        counts: dict[str, int] = {}
        for tail in tails.values():
            counts[tail] = counts.get(tail, 0) + 1
        unique = [p for p in local if counts[tails[p]] == 1 or depth >= len(parts[p])]
        names.update({p: tails[p] for p in unique})
        local = [p for p in local if p not in names]
        depth += 1
    return names


def expand_inputs(patterns: list[str], config: InputConfig | None = None) -> list[InputShard]:
    """Resolves globs and URLs into a sorted, de-duplicated shard list; raises ConfigError.
    ``config`` (the ``input:`` section) bounds the waits on remote inputs."""
    paths: list[str] = []
    sample_names: dict[str, str] = {}
    for index, pattern in enumerate(patterns):
        key = f"input.paths[{index}]"
        if pattern.startswith(SAMPLE_SCHEME):
            name = pattern.removeprefix(SAMPLE_SCHEME)
            try:
                shards = materialise(name)
            except KeyError:
                raise ConfigError(key, f"unknown embedded sample {pattern!r}") from None
            paths.extend(shards)
            sample_names.update({path: f"{SAMPLE_SCHEME}{os.path.basename(path)}" for path in shards})
            continue
        if is_remote(pattern):
            paths.extend(_expand_remote(pattern, key, _settings(config)))
            continue
        local = pattern.removeprefix("file://")
        matches = sorted(glob.glob(local)) if _GLOB_CHARS.search(local) else [local]
        matches = [f for m in matches for f in (_documents_in(m) if os.path.isdir(m) else [m])]
        if not matches or not os.path.exists(matches[0]):
            raise ConfigError(key, f"no input file matches {pattern!r}")
        for match in matches:
            if not os.access(match, os.R_OK):
                raise ConfigError(key, f"input is not readable: {match!r}")
        paths.extend(os.path.abspath(m) for m in matches)
    unique = sorted(set(paths))
    kinds = sorted({source_kind(p, _settings(config).format) for p in unique})
    if kinds == ["warc", "wet"]:
        kinds = ["warc"]  # a WET file among WARCs: the WARC reader counts its records as `conversion`
    if len(kinds) > 1:
        raise ConfigError("input.paths", f"inputs of different kinds ({', '.join(kinds)}): one run reads one kind")
    names = input_names(unique) | sample_names
    return [InputShard.for_path(p, names[p], kinds[0] if kinds else "") for p in unique]


def _documents_in(folder: str) -> list[str]:
    """A folder given as input (a Hugging Face dataset folder, refinery's documents/): the
    JSONL and Parquet files under it."""
    suffixes = DOCUMENT_SUFFIXES["jsonl"] + DOCUMENT_SUFFIXES["parquet"]
    return sorted(str(p) for p in Path(folder).rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))


def _expand_remote(url: str, key: str, config: InputConfig) -> list[str]:
    try:
        fs, fs_path = _remote_fs(url, config)
        if _GLOB_CHARS.search(url.split("://", 1)[1]) and not url.startswith(("http://", "https://")):
            found = sorted(with_retries(lambda: fs.glob(fs_path), config))
            if not found:
                raise ConfigError(key, f"no input matches {url!r}")
            protocol = url.split("://", 1)[0]
            return [f"{protocol}://{p}" if "://" not in p else p for p in found]
        if not with_retries(lambda: _exists(fs, fs_path, url), config):
            raise ConfigError(key, f"input not found: {url!r}")
    except ConfigError:
        raise
    except ImportError as err:
        raise ConfigError(key, f"no fsspec backend for {url!r}: {err}") from None
    except Exception as err:  # noqa: BLE001 - network and auth errors become one config line
        tries = config.retries + 1 if transient(err) else 1
        raise ConfigError(key, f"cannot reach {url!r}: {_one_line(err)} ({tries} {'try' if tries == 1 else 'tries'}; "
                               f"input.connect_timeout_s {config.connect_timeout_s:g}, "
                               f"input.read_timeout_s {config.read_timeout_s:g})") from None
    return [url]


def _exists(fs, path: str, url: str) -> bool:
    if url.startswith(("http://", "https://")):
        return fs.exists(path, strict=True)  # a timeout or a 5xx raises instead of reading as "missing"
    return fs.exists(path)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "no message"
    return f"{type(err).__name__}: {text[:300]}"


# --- remote inputs: every wait is bounded --------------------------------------------------------

DEFAULT_INPUT = InputConfig()  # the timeouts and retries used where no ``input:`` section is passed
BACKOFF_S = 0.5  # the first wait before another try; each later wait doubles


def _settings(config: InputConfig | None) -> InputConfig:
    return DEFAULT_INPUT if config is None else config


def _storage_options(url: str) -> dict:
    # Common Crawl's bucket is public; anonymous access needs no credentials.
    if url.startswith("s3://") and os.environ.get("REFINERY_S3_ANON", "1") == "1":
        return {"anon": True}
    return {}


def remote_storage_options(url: str, config: InputConfig | None = None) -> dict:
    """fsspec storage options for a remote input: anonymous s3, and the connect and read timeouts
    of ``config``. A stream silent for the read timeout raises (it is not retried)."""
    config = _settings(config)
    options = _storage_options(url)
    protocol = url.split("://", 1)[0].lower()
    if protocol in ("http", "https"):
        import aiohttp

        # no total: a large shard may take long, so long as bytes keep coming; sock_read bounds
        # the wait for the response headers and for every later read of the body
        timeout = aiohttp.ClientTimeout(total=None, connect=config.connect_timeout_s,
                                        sock_connect=config.connect_timeout_s, sock_read=config.read_timeout_s)
        options["client_kwargs"] = {"timeout": timeout}
    elif protocol in ("s3", "s3a"):
        options["config_kwargs"] = {  # botocore's Config, through s3fs
            "connect_timeout": config.connect_timeout_s,
            "read_timeout": config.read_timeout_s,
            "retries": {"total_max_attempts": config.retries + 1, "mode": "standard"},
        }
    return options


def _remote_fs(url: str, config: InputConfig):
    import fsspec

    return fsspec.core.url_to_fs(url, **remote_storage_options(url, config))


def transient(err: BaseException) -> bool:
    """Whether another try may succeed: a timeout, a refused or reset connection, a 5xx or 429
    answer (also as the cause of another error) - not a missing or forbidden input."""
    for _ in range(8):  # the error and its causes
        if err is None:
            return False
        status = getattr(err, "status", None)
        if isinstance(status, int):  # an HTTP answer
            return status >= 500 or status == 429
        if isinstance(err, (TimeoutError, ConnectionError)):
            return True
        if type(err).__module__.startswith(("aiohttp", "botocore", "aiobotocore")):
            return True
        err = err.__cause__ or err.__context__
    return False


def with_retries(call: Callable[[], T], config: InputConfig | None = None) -> T:
    """``call()``, tried again up to ``config.retries`` times on a transient error, after
    BACKOFF_S, then twice as long each time."""
    retries = _settings(config).retries
    attempt = 0
    while True:
        try:
            return call()
        except Exception as err:
            if attempt >= retries or not transient(err):
                raise
        time.sleep(BACKOFF_S * 2**attempt)
        attempt += 1


def remote_identity(path: str, config: InputConfig | None = None) -> list:
    """What identifies a remote input's content: its ETag when the store gives one, else its size
    and modification time."""
    config = _settings(config)
    fs, fs_path = _remote_fs(path, config)
    info = with_retries(lambda: fs.info(fs_path), config)
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return ["etag", str(etag).strip('"')]
    return ["size", info.get("size"), str(info.get("LastModified") or info.get("mtime") or "")]


@contextlib.contextmanager
def open_input(path: str, config: InputConfig | None = None) -> Iterator[IO[bytes]]:
    """Opens raw bytes; WARC readers do their own per-member gzip decoding. A remote input is
    opened with ``config``'s timeouts and retries (the ``input:`` section; defaults without one);
    a read that stalls raises after the read timeout and is not tried again (over http(s),
    aiohttp's SocketTimeoutError, a TimeoutError; over s3, botocore's ReadTimeoutError)."""
    if not is_remote(path):
        with open(path.removeprefix("file://"), "rb") as handle:
            yield handle
        return
    config = _settings(config)
    fs, fs_path = _remote_fs(path, config)
    with with_retries(lambda: fs.open(fs_path, "rb"), config) as handle:
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

