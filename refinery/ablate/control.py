"""The positive control of an ablation: the ``of`` variant's training text with a known share
replaced by what its pipeline removed, that is, the documents of ``removed_from`` that ``of`` does
not keep (filter and dedup drops, in the proportions they were dropped), repeated when there are
too few. A model trained on it should do worse; an ablation that cannot tell is too small to judge
the filters.

Shares are of UTF-8 bytes of training text (the held-out documents left out), which the tokens
follow closely; the achieved shares are reported. Each input shard is read and written alone, and
every choice is a seeded hash of the document, so the result does not depend on the sharding."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.ablate.spec import AblationSpec, VariantSpec, control_variants
from refinery.ablate.tokenize import documents_path
from refinery.config import ConfigError
from refinery.mix.sources import held_out_by_text

COLUMNS = ["id", "url", "warc_date", "source", "language", "language_score", "text"]


def _draw(seed: int, *parts) -> float:
    digest = hashlib.blake2b("\x00".join(map(str, (seed, *parts))).encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def _rows(path: Path):
    if path.exists():
        for batch in pq.ParquetFile(path).iter_batches(columns=COLUMNS, batch_size=1024):
            yield from batch.to_pylist()


def control_variant(spec: AblationSpec) -> VariantSpec:
    of, removed_from = control_variants(spec)
    return VariantSpec(name=spec.control.name,
                       description=f"positive control: {of} with {spec.control.share:.0%} of its training text "
                                   f"replaced by the documents its pipeline removed from {removed_from}")


def build_control(spec: AblationSpec, out: Path, stems: list[str], log=print) -> dict:
    """Writes variants/<control>/run/documents/<stem>.parquet; returns its pipeline entry."""
    began = time.perf_counter()
    of, removed_from = control_variants(spec)
    fraction, seed, share = spec.heldout_fraction, spec.control.seed, spec.control.share
    kept_ids, kept_bytes, removed_bytes = set(), 0, 0
    for stem in stems:
        for row in _rows(documents_path(out, of, stem)):
            kept_ids.add(row["id"])
            if not held_out_by_text(row["text"], fraction) and _draw(seed, "keep", row["id"]) < 1 - share:
                kept_bytes += len(row["text"].encode("utf-8", "surrogatepass"))
    removed: list[tuple[float, int]] = []  # (draw, bytes) of each removed document: no text is held
    for stem in stems:
        for row in _rows(documents_path(out, removed_from, stem)):
            if row["id"] not in kept_ids and not held_out_by_text(row["text"], fraction):
                size = len(row["text"].encode("utf-8", "surrogatepass"))
                removed.append((_draw(seed, "copies", row["id"]), size))
                removed_bytes += size
    if removed_bytes == 0:
        raise ConfigError("control", f"{of} keeps every document of {removed_from}: nothing to degrade it with")
    # removed text must be `share` of the whole beside the documents of `of` that stay: every removed
    # document goes in `whole` times, then one more copy of each in draw order until the target is
    # reached (within one document), as quality_select's cut-off is
    target = share / (1 - share) * kept_bytes
    whole, rest = int(target // removed_bytes), target % removed_bytes
    cut, filled = -1.0, 0
    for draw, size in sorted(removed):
        if filled >= rest:
            break
        cut, filled = draw, filled + size
    repeats = target / removed_bytes
    written = {"documents": 0, "kept_bytes": 0, "removed_bytes": 0, "removed_documents": 0}
    for stem in stems:
        rows = [r for r in _rows(documents_path(out, of, stem))
                if not held_out_by_text(r["text"], fraction) and _draw(seed, "keep", r["id"]) < 1 - share]
        written["kept_bytes"] += sum(len(r["text"].encode("utf-8", "surrogatepass")) for r in rows)
        for row in _rows(documents_path(out, removed_from, stem)):
            if row["id"] in kept_ids or held_out_by_text(row["text"], fraction):
                continue
            copies = whole + (_draw(seed, "copies", row["id"]) <= cut)
            rows += [row] * copies
            written["removed_bytes"] += copies * len(row["text"].encode("utf-8", "surrogatepass"))
            written["removed_documents"] += copies > 0
        path = documents_path(out, spec.control.name, stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        from refinery.io import atomic_path

        with atomic_path(path) as tmp:
            pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(
                [(c, pa.float64() if c == "language_score" else pa.string()) for c in COLUMNS])), tmp,
                compression="zstd")
        written["documents"] += len(rows)
    achieved = written["removed_bytes"] / max(written["kept_bytes"] + written["removed_bytes"], 1)
    log(f"control {spec.control.name}: {written['documents']:,} documents; {achieved:.1%} of the training text "
        f"is from {written['removed_documents']:,} documents that {of} removed (target {share:.0%})")
    return {"stages": [f"{of} with {share:.0%} of its text replaced by {removed_from}'s removed documents"],
            "dedup": [], "documents": written["documents"], "records": 0,
            "seconds": round(time.perf_counter() - began, 3),
            "control": {"of": of, "removed_from": removed_from, "target_share": share, "achieved_share": round(achieved, 4),
                        "removed_documents": written["removed_documents"], "repeats": round(repeats, 3)}}
