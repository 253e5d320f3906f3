"""The `refinery` command line: help, dry runs, and bad configs (exit 2, one line naming the key)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from refinery.sample import SAMPLE_VERSION

from support import (ENGLISH_CONFIG, REPO, article_html, http_response, is_root, run_cli_inprocess, run_cli_subprocess,
                     write_warc)

ERROR_PREFIX = "refinery: config error: "

GOOD = {
    "name": "cli-test",
    "stages": [
        {"extract": {"extractor": "trafilatura", "isolation": "inline"}},
        {"language_id": {"languages": ["en"], "threshold": 0.65}},
    ],
}

ENGLISH_TEXT = [
    "The library in the old market square will open on Sundays from next month, the town council said "
    "after a long debate about staff and heating costs.",
    "Volunteers from the reading club have offered to help at the front desk, and the council will pay "
    "for a new heating system that should keep the building warm through the winter.",
    "Families with young children are expected to benefit most, because the reading room for children "
    "has been one of the busiest places in town on Saturday afternoons.",
]
GERMAN_TEXT = [
    "Die Bibliothek am alten Marktplatz wird ab dem nächsten Monat auch sonntags geöffnet sein, teilte der "
    "Gemeinderat nach einer langen Debatte über Personal und Heizkosten mit.",
    "Freiwillige aus dem Leseclub haben angeboten, am Empfang zu helfen, und die Gemeinde bezahlt eine neue "
    "Heizung, die das Gebäude den ganzen Winter über warm halten soll.",
]


def write_config(path: Path, raw) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def good_config(tmp_path: Path, **changes) -> Path:
    raw = json.loads(json.dumps(GOOD))
    raw.update(changes)
    return write_config(tmp_path / "good.yaml", raw)


@pytest.fixture
def small_warc(tmp_path) -> Path:
    """Three English articles, a German one and a PDF."""
    responses = [http_response(f"https://library.example.org/en/{n}",
                               article_html(f"Library news {n}", ENGLISH_TEXT[n:] + ENGLISH_TEXT[:n]).encode())
                 for n in range(3)]
    responses.append(http_response("https://bibliothek.example.org/de/1",
                                   article_html("Bibliothek", GERMAN_TEXT, lang="de").encode()))
    responses.append(http_response("https://library.example.org/report.pdf", b"%PDF-1.4\n", "application/pdf"))
    return write_warc(tmp_path / "small.warc.gz", responses)


def assert_config_error(result, key: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert line.startswith(ERROR_PREFIX + key + ": "), line
    assert result.stdout == ""
    return line


# --- help and version --------------------------------------------------------------------------

def test_help_subprocess():
    result = run_cli_subprocess("--help")
    assert result.returncode == 0, result.stderr
    assert "usage: refinery" in result.stdout
    assert "run" in result.stdout and "RefinedWeb" in result.stdout


def test_run_help():
    result = run_cli_inprocess("run", "--help")
    assert result.returncode == 0
    for flag in ("--input", "--output", "--workers", "--scheduler", "--limit", "--force", "--dry-run"):
        assert flag in result.stdout
    assert "exit codes" in result.stdout


def test_run_help_subprocess():
    result = run_cli_subprocess("run", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: refinery run" in result.stdout


def test_version():
    from refinery import __version__

    result = run_cli_inprocess("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"refinery {__version__}"


def test_no_command_prints_help_and_exits_2():
    result = run_cli_inprocess()
    assert result.returncode == 2
    assert "usage: refinery" in result.stdout


@pytest.mark.parametrize("args", [
    ["run", str(ENGLISH_CONFIG), "--workers", "0", "--dry-run"],
    ["run", str(ENGLISH_CONFIG), "--limit", "many", "--dry-run"],
    ["run", str(ENGLISH_CONFIG), "--no-such-flag"],
    ["run"],
    ["frobnicate"],
])
def test_bad_arguments_exit_2(args):
    result = run_cli_inprocess(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr


# --- dry run -------------------------------------------------------------------------------------

def test_dry_run_lists_the_embedded_sample(out_dir):
    result = run_cli_inprocess("run", ENGLISH_CONFIG, "--output", out_dir, "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"config {ENGLISH_CONFIG} (") and lines[0].endswith(f"-> {out_dir}")
    assert lines[1].startswith("stages: warc_reader -> ")
    stages = lines[1].split("stages: ")[1].split(" -> ")
    assert stages.index("extract") < stages.index("language_id")
    assert lines[2] == "dedup:  exact_dedup -> minhash_dedup -> url_dedup -> substring_dedup"
    shards = [line.split() for line in lines[3:]]
    assert len(shards) == 2
    cache = Path(os.environ["REFINERY_CACHE"])
    for n, (shard_id, path) in enumerate(shards):
        assert shard_id.startswith(f"english-v{SAMPLE_VERSION}-{n:05d}-")
        assert Path(path).parent == cache / "sample" and Path(path).is_file()
    assert not out_dir.exists()  # a dry run writes nothing


def test_dry_run_lists_input_shards_sorted_and_unique(tmp_path, out_dir):
    for name in ("c.warc.gz", "a.warc.gz", "b.warc.gz"):
        write_warc(tmp_path / name, [http_response("https://x.example.org/", b"<html><body>x</body></html>")])
    (tmp_path / "notes.txt").write_text("not an input")
    result = run_cli_inprocess("run", good_config(tmp_path), "--input", tmp_path / "*.warc.gz",
                               "--input", tmp_path / "a.warc.gz", "--output", out_dir, "--dry-run")
    assert result.returncode == 0, result.stderr
    shard_lines = [line.split() for line in result.stdout.splitlines()[2:]]
    assert [Path(path).name for _, path in shard_lines] == ["a.warc.gz", "b.warc.gz", "c.warc.gz"]
    assert [shard_id.rsplit("-", 1)[0] for shard_id, _ in shard_lines] == ["a", "b", "c"]
    assert len({shard_id for shard_id, _ in shard_lines}) == 3
    assert "stages: warc_reader -> extract -> language_id" in result.stdout


def test_dry_run_subprocess(out_dir):
    result = run_cli_subprocess("run", "configs/english.yaml", "--output", out_dir, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert f"english-v{SAMPLE_VERSION}-00000-" in result.stdout and f"english-v{SAMPLE_VERSION}-00001-" in result.stdout


# --- bad configs ---------------------------------------------------------------------------------

def _set_lid(key, value):
    def change(raw):
        raw["stages"][1]["language_id"][key] = value
    return change


BAD_CONFIGS = {
    "unknown top-level key": (lambda r: r.update(treshold=0.5), "treshold"),
    "unknown stage key": (_set_lid("treshold", 0.5), "stages[1].language_id.treshold"),
    "negative threshold": (_set_lid("threshold", -1), "stages[1].language_id.threshold"),
    "wrong type": (_set_lid("threshold", "high"), "stages[1].language_id.threshold"),
    "wrong type run": (lambda r: r.update(run={"batch_size": "many"}), "run.batch_size"),
    "unknown stage": (lambda r: r["stages"].append({"dedupe": {"threshold": 0.8}}), "stages[2]"),
    "missing input": (lambda r: r.update(input={"paths": ["/nonexistent/crawl/*.warc.gz"]}), "input.paths[0]"),
    "missing input file": (lambda r: r.update(input={"paths": ["sample://english", "/nonexistent/x.warc.gz"]}),
                           "input.paths[1]"),
    "unknown sample": (lambda r: r.update(input={"paths": ["sample://klingon"]}), "input.paths[0]"),
    "stage listed twice": (lambda r: r["stages"].append({"extract": {}}), "stages"),
    "missing name": (lambda r: r.pop("name"), "name"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_exits_2_with_one_line(tmp_path, out_dir, case):
    change, key = BAD_CONFIGS[case]
    raw = json.loads(json.dumps(GOOD))
    change(raw)
    result = run_cli_inprocess("run", write_config(tmp_path / "bad.yaml", raw), "--output", out_dir)
    assert_config_error(result, key)
    assert not out_dir.exists()  # validation happens before any work


@pytest.mark.parametrize("case", ["unknown stage key", "negative threshold", "unknown stage", "missing input"])
def test_bad_config_subprocess(tmp_path, out_dir, case):
    change, key = BAD_CONFIGS[case]
    raw = json.loads(json.dumps(GOOD))
    change(raw)
    result = run_cli_subprocess("run", write_config(tmp_path / "bad.yaml", raw), "--output", out_dir)
    assert_config_error(result, key)


def test_negative_threshold_message_matches_the_readme(tmp_path):
    raw = json.loads(json.dumps(GOOD))
    _set_lid("threshold", -1)(raw)
    result = run_cli_inprocess("run", write_config(tmp_path / "bad.yaml", raw), "--dry-run")
    assert result.stderr_lines == [
        "refinery: config error: stages[1].language_id.threshold: "
        "Input should be greater than or equal to 0 (got -1)"]


def test_english_config_with_a_typo(tmp_path, out_dir):
    raw = yaml.safe_load(ENGLISH_CONFIG.read_text(encoding="utf-8"))
    index = next(i for i, entry in enumerate(raw["stages"]) if "language_id" in entry)
    raw["stages"][index]["language_id"]["treshold"] = 0.5
    result = run_cli_subprocess("run", write_config(tmp_path / "typo.yaml", raw), "--output", out_dir)
    assert_config_error(result, f"stages[{index}].language_id.treshold")


def test_invalid_yaml(tmp_path, out_dir):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstages:\n  - extract: {isolation: inline\n  - language_id: {}\n", encoding="utf-8")
    line = assert_config_error(run_cli_inprocess("run", path, "--output", out_dir), "(file)")
    assert "invalid YAML" in line


def test_yaml_that_is_not_a_mapping(tmp_path, out_dir):
    path = tmp_path / "list.yaml"
    path.write_text("- extract\n- language_id\n", encoding="utf-8")
    assert_config_error(run_cli_inprocess("run", path, "--output", out_dir), "(root)")


def test_missing_config_file(tmp_path, out_dir):
    line = assert_config_error(run_cli_inprocess("run", tmp_path / "nope.yaml", "--output", out_dir), "(file)")
    assert "nope.yaml" in line


def test_missing_input_override(tmp_path, out_dir):
    result = run_cli_inprocess("run", good_config(tmp_path), "--input", tmp_path / "nothing-*.warc.gz",
                               "--output", out_dir)
    assert_config_error(result, "input.paths[0]")
    result = run_cli_inprocess("run", good_config(tmp_path), "--input", tmp_path, "--output", out_dir)
    assert_config_error(result, "input.paths[0]")  # a directory is not an input file


def test_s3_inputs_are_read_anonymously(tmp_path, out_dir, monkeypatch):
    """Common Crawl's bucket is public: s3:// inputs need no credentials unless asked to
    (README, "Running on real CommonCrawl data")."""
    import importlib.util

    from refinery.io import _storage_options

    assert _storage_options("s3://commoncrawl/crawl-data/x.warc.gz") == {"anon": True}
    assert _storage_options("https://data.commoncrawl.org/x.warc.gz") == {}
    monkeypatch.setenv("REFINERY_S3_ANON", "0")
    assert _storage_options("s3://commoncrawl/crawl-data/x.warc.gz") == {}
    readme = (REPO / "README.md").read_text()
    assert "--input 's3://commoncrawl/crawl-data/" in readme and "anonymous access by default" in readme
    if importlib.util.find_spec("s3fs") is None:  # without the [s3] extra: one line naming the input
        result = run_cli_inprocess("run", good_config(tmp_path), "--input", "s3://commoncrawl/x.warc.gz",
                                   "--output", out_dir)
        assert "no fsspec backend for 's3://commoncrawl/x.warc.gz'" in assert_config_error(result, "input.paths[0]")


@pytest.mark.skipif(is_root(), reason="root can read a file whatever its mode")
def test_unreadable_input(tmp_path, out_dir):
    path = write_warc(tmp_path / "secret.warc.gz", [http_response("https://x.example.org/", b"<html>x</html>")])
    path.chmod(0)
    try:
        result = run_cli_inprocess("run", good_config(tmp_path), "--input", path, "--output", out_dir)
        line = assert_config_error(result, "input.paths[0]")
        assert "not readable" in line
    finally:
        path.chmod(0o644)


@pytest.mark.skipif(is_root(), reason="root can read a file whatever its mode")
def test_unreadable_config(tmp_path, out_dir):
    path = good_config(tmp_path)
    path.chmod(0)
    try:
        assert_config_error(run_cli_inprocess("run", path, "--output", out_dir), "(file)")
    finally:
        path.chmod(0o644)


def test_unusable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    for output in (blocker, blocker / "sub"):
        result = run_cli_inprocess("run", good_config(tmp_path), "--output", output, "--scheduler", "sync")
        assert_config_error(result, "output")


def test_missing_language_model_is_a_config_error(tmp_path, out_dir, small_warc):
    raw = json.loads(json.dumps(GOOD))
    _set_lid("model_path", str(tmp_path / "no-such-model.ftz"))(raw)
    result = run_cli_subprocess("run", write_config(tmp_path / "model.yaml", raw), "--input", small_warc,
                                "--output", out_dir, "--scheduler", "sync", timeout=120)
    assert_config_error(result, "stages[1].language_id.model_path")


# --- a small real run in-process -------------------------------------------------------------------

def test_sync_run_on_a_small_warc(small_warc, tmp_path, out_dir):
    result = run_cli_inprocess("run", good_config(tmp_path), "--input", small_warc, "--output", out_dir,
                               "--scheduler", "sync")
    assert result.returncode == 0, result.stderr
    assert "done: 5 records in 1 shards -> 3 documents" in result.stdout
    stats = json.loads((out_dir / "stats.json").read_text())
    assert [(s["stage"], s["docs_in"], s["docs_out"], s["dropped"]) for s in stats["funnel"]] == [
        ("warc_reader", 5, 4, {"non_html": 1}),
        ("extract", 4, 4, {}),
        ("language_id", 4, 3, {"language_not_kept": 1}),
    ]
    docs = pq.read_table(out_dir / "documents").to_pylist()
    assert sorted(d["url"] for d in docs) == [f"https://library.example.org/en/{n}" for n in range(3)]
    for d in docs:
        assert d["language"] == "en" and d["language_score"] >= 0.65
        assert "Library news" in d["text"] and "Sign in" not in d["text"]
        assert d["source"] == "web" and d["warc_date"] == "2024-01-01T00:00:00Z"


def test_limit_reads_at_most_n_records_per_shard(small_warc, tmp_path, out_dir):
    result = run_cli_inprocess("run", good_config(tmp_path), "--input", small_warc, "--output", out_dir,
                               "--scheduler", "sync", "--limit", "2")
    assert result.returncode == 0, result.stderr
    stats = json.loads((out_dir / "stats.json").read_text())
    assert stats["input"]["records"] == 2
    assert stats["funnel"][0]["docs_in"] == 2
    assert stats["output"]["documents"] == 2
