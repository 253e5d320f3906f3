"""Big ``.warc.gz`` and ``.wet.gz`` inputs cut into byte ranges, one map task each.

A file larger than ``input.split_bytes`` is indexed once (a task of its own): fastwarc walks its
records without parsing HTTP or reading bodies, and each record's offset is where its gzip member
starts. The file is cut at the first record at or after every multiple of ``split_bytes``, so each
range is whole gzip members and whole records. Each range is an :class:`InputShard` with the
file's path, its own shard id (the file's, plus the range's number) and marker; a reader given a
range starts at its first byte and stops at its last, and record ids are the file's own, so the
documents, ids and funnel are those of reading the file whole.

Remote files are indexed and read the same way, fsspec turning the seeks into range requests, when
``input.split_remote`` is on: indexing one reads it whole once more."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from refinery.config import PipelineConfig
from refinery.engine import Engine, Task
from refinery.engine.task import Result
from refinery.io import InputShard, is_remote, open_input

SPLITTABLE = (".warc.gz", ".wet.gz")


@dataclass
class SplitResult(Result):
    path: str
    size: int
    records: int
    bounds: list[int] = field(default_factory=list)  # range starts, then the file's size


def file_size(path: str, config) -> int:
    if not is_remote(path):
        return Path(path.removeprefix("file://")).stat().st_size
    with open_input(path, config) as stream:
        return stream.seek(0, 2)


def record_offsets(path: str, config) -> list[int]:
    """Where each record of a gzipped WARC or WET file starts (its gzip member's offset), up to
    the first damaged member: the rest of the file is then one range, which the reader reads as
    it would read the whole file from there (the damage counted once, as the whole file counts it)."""
    from fastwarc.warc import ArchiveIterator

    offsets = []
    with open_input(path, config) as stream:
        try:
            for record in ArchiveIterator(stream, parse_http=False):
                offsets.append(record.stream_pos)
        except Exception:  # noqa: BLE001 - a damaged member ends the index, not the run
            pass
    return offsets


def split_bounds(offsets: list[int], size: int, split_bytes: int) -> list[int]:
    """Range starts: the first record at or after each multiple of ``split_bytes``; then ``size``."""
    starts, index = [0], 0
    for target in range(split_bytes, size, split_bytes):
        while index < len(offsets) and offsets[index] < target:
            index += 1
        if index == len(offsets):
            break
        if offsets[index] > starts[-1]:
            starts.append(offsets[index])
    return [*starts, size]


def index_file(shard: InputShard, config: PipelineConfig) -> SplitResult:
    """The index task: one file's ranges."""
    cfg = config.spec.input
    size = file_size(shard.path, cfg)
    offsets = record_offsets(shard.path, cfg)
    return SplitResult(shard.path, size, len(offsets), split_bounds(offsets, size, cfg.split_bytes))


def splittable(shard: InputShard, config: PipelineConfig) -> bool:
    """A gzipped WARC or WET file bigger than ``split_bytes``; a remote one only with
    ``split_remote`` (its index pass downloads it once more, and asking its size is a request)."""
    cfg = config.spec.input
    name = shard.path.lower().rstrip("/")
    if cfg.split_bytes <= 0 or not name.endswith(SPLITTABLE) or (is_remote(shard.path) and not cfg.split_remote):
        return False
    return file_size(shard.path, cfg) > cfg.split_bytes


def index_task(shard: InputShard, config: PipelineConfig, out: Path) -> Task:
    marker = out / "_markers" / "split" / f"{shard.shard_id}.done"
    return Task(key=f"split-{shard.shard_id}", func=index_file, args=(shard, config),
                fingerprint=f"split_bytes={config.spec.input.split_bytes}", inputs=(shard.path,),
                outputs=(), marker=str(marker), result_type=SplitResult)


def ranges(shard: InputShard, result: SplitResult) -> list[InputShard]:
    """The shard's byte ranges as shards of their own (the shard itself when there is one)."""
    bounds = result.bounds
    if len(bounds) <= 2:
        return [shard]
    return [replace(shard, shard_id=f"{shard.shard_id}-part{k:04d}", start=start, end=end)
            for k, (start, end) in enumerate(zip(bounds[:-1], bounds[1:]))]


def split_inputs(shards: list[InputShard], config: PipelineConfig, out: Path, engine: Engine) -> list[InputShard]:
    """Every input larger than ``input.split_bytes`` replaced by its ranges, in file order."""
    big = [s for s in shards if splittable(s, config)]
    if not big:
        return shards
    results = dict(zip(big, engine.run([index_task(s, config, out) for s in big])))
    found = []
    for shard in shards:
        found.extend(ranges(shard, results[shard]) if shard in results else [shard])
    return found
