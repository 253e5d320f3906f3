"""`refinery inspect OUTPUT`: kept and dropped documents in the terminal.

Kept documents are OUTPUT/documents/*.parquet; dropped ones are the bounded samples each stage
kept in OUTPUT/dropped/STAGE/. Files are streamed a batch at a time and matches are drawn by
reservoir sampling, so inspecting a large run needs little memory.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from refinery.config import ConfigError

KEPT = "kept"

# what a terminal would act on rather than show: ESC sequences (CSI, OSC/DCS/APC/PM/SOS strings
# ended by BEL or ST, two-byte escapes), then any other C0 control but newline and tab, DEL and C1
_ESCAPE_SEQUENCE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b[\]PX^_][^\x07\x1b\n]*(?:\x07|\x1b\\)?|\x1b[ -~]?"
                              r"|\x9b[0-?]*[ -/]*[@-~]?|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c\n]*[\x07\x9c]?")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` without terminal control characters and escape sequences (newlines and tabs stay)."""
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))


def stage_reasons() -> dict[str, tuple[str, ...]]:
    """The drop reasons each known stage declares, by stage name (the folders of OUTPUT/dropped/)."""
    from refinery.config import default_registry
    from refinery.stages.warc_reader import WarcReader

    registry = default_registry()
    reasons = {name: tuple(cls.reasons) for name, cls in registry.chain.items()}
    reasons.update({name: (cls.reason,) for name, cls in registry.dedup.items()})
    reasons[WarcReader.name] = tuple(WarcReader.reasons)
    return reasons


@dataclass
class Query:
    stage: str | None = None  # "kept", a stage name, or None for everything
    reason: str | None = None
    grep: str | None = None  # a regular expression, case-insensitive, over text and URL
    sample: int = 5
    seed: int = 0


def find(out_dir: str | Path, query: Query) -> list[dict]:
    """Up to ``query.sample`` matching rows (each with ``stage`` and ``reason``; "kept" for kept)."""
    out = Path(out_dir)
    if not (out / "stats.json").is_file() and not (out / "documents").is_dir():
        raise ConfigError("OUTPUT", f"{str(out)!r} is not a refinery output (no stats.json or documents/)")
    stages = sorted(p.name for p in (out / "dropped").iterdir()) if (out / "dropped").is_dir() else []
    if query.stage not in (None, KEPT, *stages):
        raise ConfigError("--stage", printable(f"no documents for {query.stage!r}; choose kept or one of: "
                                               f"{', '.join(stages)}"))
    _check_reason(query, stages)
    try:
        pattern = re.compile(query.grep, re.IGNORECASE) if query.grep else None
    except re.error as err:
        raise ConfigError("--grep", f"not a regular expression: {err}") from None
    rng = random.Random(query.seed)
    chosen: list[dict] = []
    seen = 0
    for row in _rows(out, query, stages):
        if pattern and not (pattern.search(row.get("text") or "") or pattern.search(row.get("url") or "")):
            continue
        seen += 1  # reservoir sampling: every match has the same chance
        if len(chosen) < query.sample:
            chosen.append(row)
        elif (slot := rng.randrange(seen)) < query.sample:
            chosen[slot] = row
    return chosen


def _check_reason(query: Query, stages: list[str]) -> None:
    """``--reason`` must be one the chosen stage (or, without --stage, any stage in OUTPUT) can give."""
    if query.reason is None:
        return
    if query.stage == KEPT:
        raise ConfigError("--reason", "kept documents have no drop reason; leave out --reason or --stage kept")
    known = stage_reasons()
    chosen = stages if query.stage is None else [query.stage]
    if any(not known.get(stage) for stage in chosen):
        return  # a plugin's stage, or one whose reasons come from its config (quality_classifier): any may be its own
    valid = sorted({reason for stage in chosen for reason in known[stage]})
    if query.reason not in valid:
        which = f"stage {query.stage}" if query.stage else "the stages in this output"
        raise ConfigError("--reason", printable(f"{query.reason!r} is not a reason of {which}; choose one of: "
                                                f"{', '.join(valid) or '(none)'}"))


def _rows(out: Path, query: Query, stages: list[str]) -> Iterator[dict]:
    if query.stage in (None, KEPT) and query.reason is None:  # a reason asks for dropped documents
        for path in sorted((out / "documents").glob("*.parquet")):
            yield from ({**row, "stage": KEPT, "reason": KEPT} for row in _batches(path))
    if query.stage == KEPT:
        return
    for stage in stages if query.stage is None else [query.stage]:
        for path in sorted((out / "dropped" / stage).glob("*.parquet")):
            for row in _batches(path):
                if query.reason is None or row["reason"] == query.reason:
                    yield row


def _batches(path: Path) -> Iterator[dict]:
    parquet = pq.ParquetFile(path)
    columns = [c for c in ("id", "url", "source", "stage", "reason", "language", "kept_id", "detail", "text")
               if c in parquet.schema_arrow.names]
    for batch in parquet.iter_batches(columns=columns, batch_size=256):
        yield from batch.to_pylist()


def render(rows: list[dict], console, grep: str | None = None, chars: int = 1200) -> None:
    """Prints each row: a header with stage, reason, URL and id, then its text (matches shown bold)."""
    from rich.text import Text

    if not rows:
        console.print("no matching documents")
        return
    for row in rows:
        row = {key: printable(value) if isinstance(value, str) else value for key, value in row.items()}
        where = "kept" if row["stage"] == KEPT else f"dropped by {row['stage']}: {row['reason']}"
        header = Text(f"── {where} ", style="bold green" if row["stage"] == KEPT else "bold red")
        header.append(row.get("url") or row.get("source") or "", style="cyan")
        header.append(f"  id {row['id']}", style="dim")
        if row.get("kept_id"):
            header.append(f"  (duplicate of {row['kept_id']})", style="dim")
        if row.get("detail"):
            header.append(f"  ({row['detail']})", style="dim")
        console.print(header)
        text = row.get("text") or ""
        body = Text(text[:chars] + (f" … [{len(text) - chars:,} more characters]" if len(text) > chars else ""))
        if grep:
            body.highlight_regex(re.compile(grep, re.IGNORECASE), style="bold reverse")
        console.print(body)
        console.print()
