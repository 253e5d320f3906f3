"""An ablation's tokenization: the train/held-out split of crawl documents (by normalised text),
one task per input shard for every variant's train part and the variant eval sets, and one task
per curated reference file (its records held out by record id). Each task writes exactly its own
token files, so a rerun redoes only the tasks whose marker does not match."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from refinery.ablate.spec import AblationSpec, ReferenceSet, VariantSpec
from refinery.engine.task import Result, Task
from refinery.mix.sources import held_out_by_record_id, held_out_by_text
from refinery.mix.tokenize import digest

EXTENSIONS = (".bin", ".idx")  # the Megatron files each task writes per folder


@dataclass
class ShardSplit(Result):
    shard: str
    variants: dict  # variant -> {"train"|"heldout": {"documents", "tokens"}}


@dataclass
class ReferenceTokens(Result):
    set: str
    path: str
    records: int
    documents: int
    tokens: int
    dropped: dict = field(default_factory=dict)  # reason -> records (wikitext past its bound, malformed lines)


def documents_path(out: Path, variant: str, stem: str) -> Path:
    return out / "variants" / variant / "run" / "documents" / f"{stem}.parquet"


def token_folders(out: Path, spec: AblationSpec, variant: VariantSpec) -> dict[str, Path]:
    """Where a variant's tokens go: ``train`` to its own folder, its held-out documents to the
    folder of each eval set that names it."""
    return {"train": out / "variants" / variant.name / "tokens",
            **{e.name: out / "eval" / e.name for e in spec.eval if e.variant == variant.name}}


def split_documents(documents: Path, fraction: float) -> dict[str, bool]:
    """Per id in a documents Parquet file, whether it is held out."""
    split = {}
    if documents.exists():
        for batch in pq.ParquetFile(documents).iter_batches(columns=["id", "text"], batch_size=1024):
            for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist()):
                split[doc_id] = held_out_by_text(text, fraction)
    return split


def tokenize_shard(stem: str, spec: AblationSpec, tokenizer_path: str, out_dir: str) -> ShardSplit:
    """One input shard: every variant's train documents into its token folder, and the held-out
    documents of the variants that eval sets name into those sets' folders."""
    from refinery import tokenizer as tk
    from refinery.tokens import TokenShardWriter, encoded_parquet

    out = Path(out_dir)
    tokenizer = tk.load(tokenizer_path)
    first_split = split_documents(documents_path(out, spec.variants[0].name, stem), spec.heldout_fraction)
    result = {}
    for variant in spec.variants:
        path = documents_path(out, variant.name, stem)
        folders = token_folders(out, spec, variant)
        writers: dict[str, TokenShardWriter] = {}
        counts = {part: {"documents": 0, "tokens": 0} for part in ("train", "heldout")}
        try:
            for doc_id, text, tokens in (encoded_parquet(tokenizer, path) if path.exists() else []):
                is_heldout = first_split.get(doc_id)
                if is_heldout is None:  # not in the first variant: split on its own text
                    is_heldout = held_out_by_text(text, spec.heldout_fraction)
                part = "heldout" if is_heldout else "train"
                counts[part]["documents"] += 1
                counts[part]["tokens"] += len(tokens)
                for name in (["train"] if part == "train" else [n for n in folders if n != "train"]):
                    if name not in writers:
                        writers[name] = TokenShardWriter(folders[name], stem, tokenizer.get_vocab_size(), ("megatron",))
                    writers[name].add(tokens)
            for writer in writers.values():
                writer.close()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            raise
        for name in folders.keys() - writers.keys():  # none of this shard goes there: an earlier run's file goes
            for ext in EXTENSIONS:
                (folders[name] / f"{stem}{ext}").unlink(missing_ok=True)
        result[variant.name] = counts
    return ShardSplit(shard=stem, variants=result)


def tokenize_reference(name: str, path: str, reference: ReferenceSet, fraction: float, tokenizer_path: str,
                       out_dir: str) -> ReferenceTokens:
    """The held-out records of one curated file (split by record id), or all of them
    (``records: all``), into ``OUTPUT/eval/NAME/``."""
    from refinery import tokenizer as tk
    from refinery.io import InputShard
    from refinery.mix import SourceSpec, curated_texts
    from refinery.stats import StageStats
    from refinery.tokens import write_token_file

    source = SourceSpec(name=name, paths=[path], text_field=reference.text_field, id_field=reference.id_field,
                        format=reference.format)
    stats = StageStats("curated_reader")
    texts = []
    for record_id, text in curated_texts(path, source, stats):
        if text and (reference.records == "all" or held_out_by_record_id(record_id, fraction)):
            texts.append(text)
    tokens = write_token_file(Path(out_dir) / "eval" / name, InputShard.for_path(path).shard_id,
                              tk.load(tokenizer_path), texts)
    return ReferenceTokens(set=name, path=path, records=stats.docs_in, documents=len(texts), tokens=tokens,
                           dropped=dict(stats.dropped))


# --- the tasks -----------------------------------------------------------------------------------

def shard_task(stem: str, spec: AblationSpec, tokenizer_path: str, tokenizer_hash: str, out: Path) -> Task:
    outputs = tuple(str(folder / f"{stem}{ext}") for v in spec.variants
                    for folder in token_folders(out, spec, v).values() for ext in EXTENSIONS)
    return Task(key=f"tokenize-{stem}", func=tokenize_shard, args=(stem, spec, tokenizer_path, str(out)),
                fingerprint=digest(tokenizer_hash, spec.heldout_fraction, [v.name for v in spec.variants],
                                   [[e.name, e.variant] for e in spec.eval if e.variant]),
                inputs=tuple(str(documents_path(out, v.name, stem)) for v in spec.variants), outputs=outputs,
                marker=str(out / "_markers" / "ablate" / "tokenize" / f"{stem}.done"), result_type=ShardSplit)


def reference_task(n: int, path: str, reference: ReferenceSet, spec: AblationSpec, tokenizer_path: str,
                   tokenizer_hash: str, out: Path) -> Task:
    from refinery.io import InputShard

    shard_id = InputShard.for_path(path).shard_id
    return Task(key=f"reference-{reference.name}-{n}", func=tokenize_reference,
                args=(reference.name, path, reference, spec.heldout_fraction, tokenizer_path, str(out)),
                fingerprint=digest(tokenizer_hash, spec.heldout_fraction, reference.model_dump(mode="json")),
                inputs=(path,), outputs=tuple(str(out / "eval" / reference.name / f"{shard_id}{ext}")
                                              for ext in EXTENSIONS),
                marker=str(out / "_markers" / "ablate" / "reference" / f"{reference.name}-{shard_id}.done"),
                result_type=ReferenceTokens)


def remove_stale_token_files(folder: Path, names: set[str]) -> None:
    """Token files of shards that no longer exist (an earlier run had other inputs): only the
    ``NAME.bin``/``NAME.idx`` files these tasks write."""
    for path in folder.glob("*"):
        if path.suffix in EXTENSIONS and path.is_file() and path.stem not in names:
            path.unlink()
