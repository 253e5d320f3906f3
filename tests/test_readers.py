"""Inputs beyond WARC: WET, JSON Lines, Parquet and dataset folders; --input-list with --select;
big .warc.gz files split into byte ranges, one map task each."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from refinery.document import Document, Drop
from support import ENGLISH_CONFIG, REPO, http_server, run_cli_subprocess, shared_path


def _split(items) -> tuple[list[Document], list[Drop]]:
    items = list(items)
    return [i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, Drop)]


def _config(folder: Path, text: str | None = None, **input_settings) -> Path:
    """english.yaml (or ``text``) with its input section updated, written to ``folder``."""
    raw = yaml.safe_load(text if text is not None else ENGLISH_CONFIG.read_text())
    raw["input"] = {**raw.get("input", {}), **input_settings}
    raw.pop("output", None)
    path = folder / "config.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return path


def _rows(out: Path) -> list[dict]:
    """Every document of a run, its shard files in name order (a split file's ranges in file order)."""
    return [row for f in sorted((out / "documents").glob("*.parquet")) for row in pq.read_table(f).to_pylist()]


def _funnel(out: Path) -> list[tuple]:
    stats = json.loads((out / "stats.json").read_text())
    return [(s["stage"], s["docs_in"], s["docs_out"], s["dropped"]) for s in stats["funnel"]]


# --- WET ------------------------------------------------------------------------------------------

def test_the_whirlwind_wet_sample_reads_with_every_record_counted():
    from refinery.stages.wet_reader import WetReader

    docs, drops = _split(WetReader().read(str(shared_path("warc-samples", "whirlwind--whirlwind.warc.wet.gz"))))
    assert [d.reason for d in drops] == ["warcinfo"]
    assert [(d.id, d.url) for d in docs] == [("ba729a40-ff84-4085-8d48-0a5b2ee0c42d",
                                               "https://an.wikipedia.org/wiki/Escopete")]
    assert docs[0].text.startswith("Escopete - Biquipedia") and len(docs[0].text) == 4302
    assert docs[0].html is None and docs[0].warc_date.startswith("2024-")


def _extracted(limit: int = 40) -> list[Document]:
    """Texts extracted (resiliparse) from the first records of a shared web shard."""
    from resiliparse.extract.html2text import extract_plain_text

    from refinery.stages.warc_reader import WarcReader

    docs, _ = _split(WarcReader(limit=limit).read(str(shared_path("web", "dev-00000.warc.gz"))))
    for doc in docs:
        doc.text = extract_plain_text(doc.html, main_content=True)
    return [d for d in docs if d.text.strip()]


def _write_wet(path: Path, docs: list[Document], extra: bytes = b"") -> None:
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as file:
        writer = WARCWriter(file, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "refinery tests"}))
        for doc in docs:
            writer.write_record(writer.create_warc_record(
                doc.url, "conversion", payload=io.BytesIO(doc.text.encode("utf-8")),
                warc_headers_dict={"WARC-Record-ID": f"<urn:uuid:{doc.id}>", "WARC-Date": doc.warc_date,
                                   "Content-Type": "text/plain"}))
        file.write(extra)


def test_a_wet_made_from_the_web_shards_extracted_text_reads_back(tmp_path):
    from refinery.stages.wet_reader import WetReader

    source = _extracted()
    path = tmp_path / "made.warc.wet.gz"
    _write_wet(path, source)
    docs, drops = _split(WetReader().read(str(path)))
    assert [d.reason for d in drops] == ["warcinfo"]
    assert [(d.id, d.url, d.warc_date) for d in docs] == [(d.id, d.url, d.warc_date) for d in source]
    assert [d.text for d in docs] == [d.text.strip() for d in source]


def test_wet_records_that_are_too_large_or_clipped_are_counted(tmp_path):
    from refinery.config import InputConfig
    from refinery.stages.wet_reader import WetReader

    source = _extracted(12)
    path = tmp_path / "clipped.warc.wet.gz"
    _write_wet(path, source)
    data = path.read_bytes()
    path.write_bytes(data[:-200])  # the last record's member is cut
    longest = max(len(d.text.encode()) for d in source)
    docs, drops = _split(WetReader(InputConfig(max_record_bytes=longest - 1)).read(str(path)))
    reasons = [d.reason for d in drops]
    assert reasons.count("too_large") == 1 and "truncated" in reasons
    assert len(docs) + len(drops) == len(source) + 1  # every record once, the warcinfo too


# --- JSON Lines -----------------------------------------------------------------------------------

ROWS = [{"id": f"doc-{n}", "text": f"text number {n}\nsecond line", "url": f"https://example.org/{n}",
         "lang": "en", "score": n / 10} for n in range(5)]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_jsonl_round_trips_with_metadata_carried(tmp_path, suffix):
    from refinery.config import InputConfig
    from refinery.stages.jsonl_reader import JsonlReader

    data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    if suffix == ".jsonl.gz":
        data = gzip.compress(data)
    elif suffix == ".jsonl.zst":
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path = tmp_path / f"docs{suffix}"
    path.write_bytes(data)
    docs, drops = _split(JsonlReader(InputConfig(metadata_fields=["lang", "score"])).read(str(path)))
    assert not drops
    assert [(d.id, d.text, d.url, d.metadata) for d in docs] == [
        (r["id"], r["text"], r["url"], {"lang": "en", "score": r["score"]}) for r in ROWS]


def test_bad_jsonl_lines_are_counted_drops_and_ids_are_stable(tmp_path):
    from refinery.config import InputConfig
    from refinery.stages.jsonl_reader import JsonlReader

    lines = [
        json.dumps({"text": "no id here", "url": "https://a.example/x"}),  # 0: kept, a made-up id
        "not json at all",                                                 # 1
        "[1, 2, 3]",                                                       # 2: not an object
        json.dumps({"id": "no-text"}),                                     # 3
        json.dumps({"id": "blank", "text": "   "}),                        # 4
        "",                                                                # blank: not a record
        json.dumps({"id": "long", "text": "x" * 5000}),                    # 6: longer than the bound
        json.dumps({"id": "last", "text": "the last line has no newline"}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    reader = JsonlReader(InputConfig(max_record_bytes=1000, text_field="text"))
    items = list(reader.read(str(path)))
    assert [i.reason if isinstance(i, Drop) else "kept" for i in items] == [
        "kept", "malformed_line", "malformed_line", "missing_text", "empty_text", "too_large", "kept"]
    assert items[0].id.startswith("jsonl-") and items[0].id == next(iter(reader.read(str(path)))).id
    assert items[-1].id == "last"


def test_a_damaged_gzip_jsonl_keeps_what_came_before_and_counts_the_rest(tmp_path):
    from refinery.stages.jsonl_reader import JsonlReader

    data = gzip.compress("".join(json.dumps(r) + "\n" for r in ROWS * 400).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    docs, drops = _split(JsonlReader().read(str(path)))
    assert 0 < len(docs) < 2000 and [d.reason for d in drops] == ["read_error"]


# --- Parquet and dataset folders ------------------------------------------------------------------

def test_parquet_without_the_text_column_is_one_counted_drop(tmp_path):
    from refinery.stages.parquet_reader import ParquetReader

    path = tmp_path / "notext.parquet"
    pq.write_table(pa.table({"id": ["a"], "body": ["words"]}), path)
    docs, drops = _split(ParquetReader().read(str(path)))
    assert not docs and [d.reason for d in drops] == ["missing_text_column"]
    path.write_bytes(b"PAR1 this is not parquet")
    assert [d.reason for d in ParquetReader().read(str(path))] == ["unreadable_file"]


def test_a_folder_written_by_datasets_reads_correctly(tmp_path):
    datasets = pytest.importorskip("datasets")
    from refinery.io import expand_inputs
    from refinery.stages.parquet_reader import ParquetReader

    folder = tmp_path / "hub-dataset"
    (folder / "data").mkdir(parents=True)
    rows = [{"text": f"document {n} " * 20, "url": f"https://example.org/{n}", "meta": n} for n in range(30)]
    for part in range(2):
        datasets.Dataset.from_list(rows[part::2]).to_parquet(str(folder / "data" / f"train-0000{part}-of-00002.parquet"))
    shards = expand_inputs([str(folder)])
    assert [Path(s.path).name for s in shards] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    docs = [d for s in shards for d in ParquetReader().read(s.path)]
    assert sorted(d.text for d in docs) == sorted(r["text"] for r in rows)
    assert all(d.id.startswith("parquet-") for d in docs) and len({d.id for d in docs}) == 30


def test_refinery_documents_read_back_through_parquet_reader_are_the_same(tmp_path):
    first = tmp_path / "first"
    web = shared_path("web", "dev-00001.warc.gz")
    result = run_cli_subprocess("run", "configs/english.yaml", "--input", web, "--limit", "80", "--output", first,
                                "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    raw = yaml.safe_load((REPO / "configs" / "recurate.yaml").read_text())
    raw.update(stages=[], dedup=[])
    config = _config(tmp_path / "cfg", yaml.safe_dump(raw), paths=[str(first / "documents")], format="parquet")
    second = tmp_path / "second"
    result = run_cli_subprocess("run", config, "--output", second, "--workers", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    before = [(r["id"], r["text"], r["url"], r["language"]) for r in _rows(first)]
    assert before and [(r["id"], r["text"], r["url"], r["language"]) for r in _rows(second)] == before
    assert _funnel(second)[0][0] == "parquet_reader"


def test_inputs_of_different_kinds_in_one_run_are_a_config_error(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    web = shared_path("web", "dev-00001.warc.gz")
    result = run_cli_subprocess("run", "configs/english.yaml", "--input", web, tmp_path / "a.jsonl", "--dry-run")
    assert result.returncode == 2 and "input.paths" in result.stderr and "different kinds" in result.stderr


# --- --input-list and --select --------------------------------------------------------------------

def test_an_input_list_over_http_gives_the_local_documents_and_select_takes_a_share(tmp_path):
    web = shared_path("web")
    names = sorted(p.name for p in web.glob("*.warc.gz"))
    listing = tmp_path / "warc.paths.gz"
    listing.write_bytes(gzip.compress("".join(f"{n}\n" for n in names).encode()))
    common = ["--limit", "30", "--workers", "2"]
    local = tmp_path / "local"
    chosen = [web / n for n in names[::2]]  # --select 1/2: the first, third, ... entries
    assert run_cli_subprocess("run", "configs/english.yaml", "--input", *chosen, "--output", local, *common).returncode == 0
    with http_server(web, ranges=True) as base:
        remote = tmp_path / "remote"
        result = run_cli_subprocess("run", "configs/english.yaml", "--input-list", listing, "--base-url", base + "/",
                                    "--select", "1/2", "--output", remote, *common)
        assert result.returncode == 0, result.stderr[-3000:]
        missing = tmp_path / "missing.txt"
        missing.write_text(f"{names[0]}\n# a comment\nnot-there.warc.gz\n")
        result = run_cli_subprocess("run", "configs/english.yaml", "--input-list", missing, "--base-url", base,
                                    "--dry-run")
    key = lambda rows: sorted((r["id"], r["text"]) for r in rows)  # noqa: E731
    assert key(_rows(remote)) == key(_rows(local)) and _rows(local)
    assert result.returncode == 2 and result.stderr_lines[-1].startswith("refinery: ")
    assert "--input-list line 3" in result.stderr and "not-there.warc.gz" in result.stderr
    for bad in ("0/2", "3/2", "half"):
        result = run_cli_subprocess("run", "configs/english.yaml", "--input-list", listing, "--select", bad, "--dry-run")
        assert result.returncode == 2 and "--select" in result.stderr


# --- big files split into byte ranges --------------------------------------------------------------

def test_split_bounds_fall_on_records():
    from refinery.pipeline.split import split_bounds

    offsets = [0, 10, 25, 40, 41, 90]
    assert split_bounds(offsets, 100, 30) == [0, 40, 90, 100]
    assert split_bounds(offsets, 100, 1000) == [0, 100]
    assert split_bounds([0], 100, 10) == [0, 100]  # one member: nothing to cut at


@pytest.fixture(scope="module")
def big_warc(tmp_path_factory) -> Path:
    """The four shared web shards as one .warc.gz (gzip members may follow each other)."""
    shards = sorted(shared_path("web").glob("*.warc.gz"))
    path = tmp_path_factory.mktemp("big") / "all-shards.warc.gz"
    path.write_bytes(b"".join(p.read_bytes() for p in shards))
    return path


@pytest.mark.slow
def test_a_big_warc_split_into_8_ranges_gives_the_whole_files_documents_and_funnel(tmp_path, big_warc):
    size = big_warc.stat().st_size
    whole, split = _config(tmp_path / "whole", split_bytes=0), _config(tmp_path / "split", split_bytes=size // 8 + 1)
    runs = {}
    for name, config, workers in (("whole", whole, 2), ("split-1", split, 1), ("split-2", split, 2)):
        runs[name] = tmp_path / name / "out"
        result = run_cli_subprocess("run", config, "--input", big_warc, "--output", runs[name], "--workers", workers,
                                    timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    parts = sorted(p.name for p in (runs["split-2"] / "documents").glob("*.parquet"))
    assert len(parts) == 8 and all("-part000" in p for p in parts)
    assert _rows(runs["split-1"]) == _rows(runs["split-2"]) == _rows(runs["whole"])
    assert _funnel(runs["split-1"]) == _funnel(runs["split-2"]) == _funnel(runs["whole"])
    assert _funnel(runs["whole"])[0][1] == 1778  # every record, once

    # a run killed after some ranges finished: only the others run again
    out = runs["split-2"]
    markers = sorted((out / "_markers" / "map").glob("*part000[5-7]*"))
    assert len(markers) == 3
    for marker in markers:
        marker.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "_markers" / "map").glob("*.done")}
    result = run_cli_subprocess("run", split, "--input", big_warc, "--output", out, "--workers", "2", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    again = {p.name: p.stat().st_mtime_ns for p in (out / "_markers" / "map").glob("*.done")}
    assert {n for n in again if n not in kept or again[n] != kept[n]} == {m.name for m in markers}
    assert _rows(out) == _rows(runs["whole"])


def test_a_truncated_member_at_a_split_boundary_is_counted_once(tmp_path, big_warc):
    """Ranges read alone give what the whole file gives, a cut member included: the index stops at
    the damage, and the last range reads from there as the whole file does."""
    from refinery.config import InputConfig
    from refinery.pipeline.split import record_offsets, split_bounds
    from refinery.stages.warc_reader import WarcReader

    data = big_warc.read_bytes()
    offsets = record_offsets(str(big_warc), None)
    bounds = split_bounds(offsets, len(data), len(data) // 8 + 1)
    cut = bounds[3]  # the member before this boundary loses its last 300 bytes
    damaged = tmp_path / "damaged.warc.gz"
    damaged.write_bytes(data[: cut - 300] + data[cut:])
    offsets = record_offsets(str(damaged), None)
    bounds = split_bounds(offsets, len(data) - 300, (len(data) - 300) // 8 + 1)
    reader = WarcReader(InputConfig())

    def outcome(items):
        return [("drop", i.doc.id, i.reason) if isinstance(i, Drop) else ("kept", i.id, i.html) for i in items]

    whole = outcome(reader.read(str(damaged)))
    ranges = [item for start, end in zip(bounds[:-1], bounds[1:])
              for item in outcome(reader.read(str(damaged), start, end))]
    assert ranges == whole and len(bounds) > 3  # ranges before the damage, then one from it on
    # fastwarc cannot read past a damaged member: what follows ends the shard, counted once
    assert [reason for kind, _, reason in whole if kind == "drop"] == ["unreadable_archive"]
    assert len(whole) == len(offsets) + 1 and len(offsets) > 600  # each record before it, then the drop


def test_a_remote_file_is_indexed_and_read_by_ranges_over_http(tmp_path):
    from refinery.config import InputConfig, load_config
    from refinery.io import InputShard
    from refinery.pipeline.split import index_file
    from refinery.stages.warc_reader import WarcReader

    small = tmp_path / "two.warc.gz"
    shards = sorted(shared_path("web").glob("*.warc.gz"))[:2]
    small.write_bytes(b"".join(p.read_bytes() for p in shards))
    loaded = load_config(str(_config(tmp_path / "cfg", split_bytes=small.stat().st_size // 3 + 1)))
    local = index_file(InputShard(str(small), "two"), loaded)
    with http_server(tmp_path, ranges=True) as base:
        remote = index_file(InputShard(f"{base}/two.warc.gz", "two"), loaded)
        reader = WarcReader(InputConfig())
        ids = [d.id for s, e in zip(remote.bounds[:-1], remote.bounds[1:])
               for d in reader.read(f"{base}/two.warc.gz", s, e) if isinstance(d, Document)]
    assert remote.bounds == local.bounds and len(local.bounds) == 4
    assert ids == [d.id for d in reader.read(str(small)) if isinstance(d, Document)]
