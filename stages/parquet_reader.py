"""Reads Parquet files, or a Hugging Face dataset folder as ``datasets`` writes it (its
``*.parquet`` files, found when the folder is the input), one document a row: refinery's own
``documents/`` output, or a corpus downloaded to be filtered or deduplicated again.

Fields are named as for the JSONL reader (``input.text_field``, ``id_field``, ``url_field``,
``metadata_fields``); only the named columns are read, in batches of ``run.batch_size`` rows. A
file without the text column is one ``missing_text_column`` drop; a row whose text is null or
not a string is ``missing_text``, a blank one ``empty_text``, one longer than
``input.max_record_bytes`` ``too_large``. A file Parquet cannot read is one ``unreadable_file``."""

from __future__ import annotations

from typing import ClassVar, Iterator

from refinery.document import Document, Drop
from refinery.io import open_input
from refinery.stages.jsonl_reader import DocumentFileReader, document_from_fields
from refinery.stages.warc_reader import _fatal, _file_drop

BATCH_ROWS = 1024
_CARRIED = ("warc_date", "language", "language_score")  # refinery's own columns, kept where present


class ParquetReader(DocumentFileReader):
    name: ClassVar[str] = "parquet_reader"
    reasons: ClassVar[tuple[str, ...]] = (
        "missing_text", "empty_text", "too_large", "missing_text_column", "unreadable_file", "read_error",
        "empty_file",
    )

    def _records(self, path: str, shard_name: str) -> Iterator[Document | Drop]:
        import pyarrow.parquet as pq

        cfg = self.config
        with open_input(path, cfg) as raw:
            try:
                file = pq.ParquetFile(raw)
            except BaseException as exc:
                if _fatal(exc):
                    raise
                yield _file_drop(shard_name, "unreadable_file")
                return
            names = set(file.schema_arrow.names)
            if cfg.text_field not in names:
                yield _file_drop(shard_name, "missing_text_column")
                return
            wanted = [cfg.text_field, cfg.id_field, cfg.url_field, *_CARRIED, *cfg.metadata_fields]
            columns = [c for c in dict.fromkeys(wanted) if c in names]
            position = 0
            for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=columns):
                for row in batch.to_pylist():
                    yield document_from_fields(row, cfg, self.source, shard_name, position, "parquet")
                    position += 1
