"""Curated sources: reading their records, formatting them into text, the held-out splits, and
converting each curated file into refinery's documents (the source stage of a curated source).

Conversion counts its funnel like a pipeline's reader: records read, documents kept, and the
records dropped with a reason (``malformed``: a line that is not a JSON object; ``empty_text``:
no text after formatting; ``held_out``: kept out of the mix for evaluation; ``wikitext_timeout``
and ``wikitext_error``: MediaWiki markup that could not be turned into text within its bound)."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.task import Result
from refinery.io import atomic_path
from refinery.mix.spec import SourceSpec
from refinery.stats import StageStats

# mwparserfromhell's tokenizer backtracks on unclosed markup: 200 KB of `[http://a ` takes ~40 s, a
# real article ~0.7 s a MB. So the conversion runs in a sandboxed child with this bound.
WIKITEXT_TIMEOUT_S = 20.0
WIKI_NON_TEXT_LINKS = ("file:", "image:", "category:")  # strip_code would leave "thumb|caption"
CHAT_ROLES = {"system": "System", "user": "User", "assistant": "Falcon", "falcon": "Falcon", "human": "User"}
READER_STAGE = "curated_reader"


# --- the held-out splits -------------------------------------------------------------------------

def _hashes_below(key: str, fraction: float) -> bool:
    digest = hashlib.blake2b(f"heldout:{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


def held_out_by_record_id(record_id: str, fraction: float) -> bool:
    """Whether a curated record is held out for evaluation: a hash of its id below ``fraction``
    (a mix's ``heldout_fraction``, and `refinery ablate`'s reference sets)."""
    return _hashes_below(record_id, fraction)


def held_out_by_text(text: str, fraction: float) -> bool:
    """Whether a crawl document is held out (`refinery ablate`): a hash of its normalised text, so
    its exact copies fall on the same side."""
    from refinery.minhash import normalize

    return _hashes_below(normalize(text), fraction)


# --- records and their text ----------------------------------------------------------------------

def wikitext_to_text(wikitext: str) -> str:
    """An article's text from its MediaWiki markup (mwparserfromhell's ``strip_code``): templates,
    references, comments, file and category links go; link labels, list items and table cells stay."""
    import mwparserfromhell

    code = mwparserfromhell.parse(wikitext)
    for link in code.filter_wikilinks(recursive=False):
        if str(link.title).strip().lower().startswith(WIKI_NON_TEXT_LINKS):
            code.remove(link)
    text = code.strip_code(normalize=True, collapse=True)
    return "\n".join(line.strip() for line in text.strip().splitlines())


def format_record(record: dict, source: SourceSpec) -> str:
    """A record's text as the source's ``format`` says: chat turns as ``Role: text`` lines, code
    with every whitespace kept, plain text stripped (``wikitext`` too: its markup is converted by
    :func:`curated_texts`). "" when the record has none."""
    if source.format == "chat" and isinstance(record.get(source.turns_field), list):
        lines = []
        for turn in record[source.turns_field]:
            role = CHAT_ROLES.get(str(turn.get("role", "user")).lower(), "User")
            lines.append(f"{role}: {str(turn.get('content', '')).strip()}")
        return "\n".join(lines)
    text = record.get(source.text_field)
    if not isinstance(text, str):
        return ""
    return text if source.format == "code" else text.strip()  # code keeps every whitespace


def read_records(path: Path, source: SourceSpec) -> Iterator[dict | None]:
    """The records of a curated file (None for a line that is not a JSON object)."""
    if path.is_dir():
        for txt in sorted(path.rglob("*.txt")):
            yield {source.id_field: str(txt.relative_to(path)), source.text_field: txt.read_text(encoding="utf-8")}
    elif path.name.endswith(".parquet"):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
    else:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except ValueError:
                        record = None
                    yield record if isinstance(record, dict) else None


def curated_texts(path: str, source: SourceSpec, stats: StageStats | None = None) -> Iterator[tuple[str, str]]:
    """(record id, formatted text) of each record of a curated file; the text is "" when the
    record has none. A record without an id gets ``<shard id>:<position>``. Malformed records, and
    wikitext past its time bound, are skipped (counted in ``stats``)."""
    from refinery.io import InputShard

    stem = InputShard.for_path(path).shard_id
    formatted: list[tuple[str, str]] = []
    for n, record in enumerate(read_records(Path(path), source)):
        if stats is not None:
            stats.docs_in += 1
        if record is None:
            if stats is not None:
                stats.dropped["malformed"] += 1
            continue
        formatted.append((str(record.get(source.id_field, f"{stem}:{n}")), format_record(record, source)))
        if len(formatted) == WIKITEXT_BATCH:
            yield from _converted(formatted, source, stats)
            formatted = []
    yield from _converted(formatted, source, stats)


WIKITEXT_BATCH = 16  # records sent to the sandbox at once, so the child converts one after another


def _converted(formatted: list[tuple[str, str]], source: SourceSpec,
               stats: StageStats | None) -> Iterator[tuple[str, str]]:
    """The records as text: wikitext is converted in the sandbox, each record with its own time
    bound; a record past it, or one the parser fails on, is a counted drop."""
    if source.format != "wikitext":
        yield from formatted
        return
    from refinery.sandbox import shared_sandbox

    sandbox = shared_sandbox("refinery.mix.sources:wikitext_to_text", {}, WIKITEXT_TIMEOUT_S)
    marked = [n for n, (_, text) in enumerate(formatted) if text]
    outcomes = dict(zip(marked, sandbox.call_each([(formatted[n][1],) for n in marked])))
    for n, (record_id, text) in enumerate(formatted):
        status, value = outcomes.get(n, ("ok", text))
        if status == "ok":
            yield record_id, value
        elif stats is not None:
            stats.dropped["wikitext_timeout" if status == "timeout" else "wikitext_error"] += 1


# --- conversion: the source stage of a curated source --------------------------------------------

@dataclass
class ConvertResult(Result):
    source: str
    input: str
    path: str
    documents: int
    heldout_documents: int
    empty: int
    funnel: list[dict] = field(default_factory=list)


def converted_paths(path: str, source: SourceSpec, out_dir: str) -> tuple[Path, Path]:
    """Where a curated file's documents go (filtered/ when the source has dedup stages, which then
    write documents/), and its held-out records."""
    from refinery.io import InputShard

    stem = InputShard.for_path(path).shard_id
    folder = Path(out_dir) / "sources" / source.name
    return folder / ("filtered" if source.dedup else "documents") / f"{stem}.parquet", folder / "heldout" / f"{stem}.parquet"


def convert_curated_file(path: str, source: SourceSpec, out_dir: str) -> ConvertResult:
    """One curated file -> OUTPUT/sources/NAME/documents/<shard id>.parquet with refinery's
    columns. Records held out (``heldout_fraction``, by record id) go to OUTPUT/sources/NAME/heldout/."""
    from refinery.pipeline.chain import DOCUMENT_SCHEMA

    started = time.perf_counter()
    target, heldout_path = converted_paths(path, source, out_dir)
    stats = StageStats(READER_STAGE)
    language = source.languages[0] if len(source.languages) == 1 else ""
    rows, held = [], []
    for record_id, text in curated_texts(path, source, stats):
        if not text:
            stats.dropped["empty_text"] += 1
            continue
        row = {"id": f"{source.name}/{record_id}", "url": "", "warc_date": "", "source": source.name,
               "language": language, "language_score": 1.0, "text": text}
        if held_out_by_record_id(record_id, source.heldout_fraction):
            stats.dropped["held_out"] += 1
            held.append(row)
        else:
            stats.count_out(language, text)
            rows.append(row)
    with atomic_path(target) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA), tmp, compression="zstd")
    if held:
        with atomic_path(heldout_path) as tmp:
            pq.write_table(pa.Table.from_pylist(held, schema=DOCUMENT_SCHEMA), tmp, compression="zstd")
    else:
        heldout_path.unlink(missing_ok=True)
    stats.check_balanced()
    stats.seconds = time.perf_counter() - started
    return ConvertResult(source=source.name, input=path, path=str(target), documents=len(rows),
                         heldout_documents=len(held), empty=stats.dropped["empty_text"], funnel=[stats.to_dict()])


def curated_funnels(results: list[ConvertResult]) -> dict[str, list[dict]]:
    """Each curated source's funnel, summed over its files."""
    totals: dict[str, StageStats] = {}
    for result in results:
        for stage in map(StageStats.from_dict, result.funnel):
            totals[result.source] = totals[result.source] + stage if result.source in totals else stage
    return {name: [stats.to_dict()] for name, stats in totals.items()}


def source_files(out: Path, name: str) -> list[Path]:
    return sorted((out / "sources" / name / "documents").glob("*.parquet"))
