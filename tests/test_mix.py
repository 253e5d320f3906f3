"""Mix configs: curated sources, token shares, epochs, global shuffle, token shards, manifest, card."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from refinery import tokenizer as tk
from support import REPO, SHARED_DATA, run_cli_inprocess, run_cli_subprocess
from test_tokenizer import read_datatrove, read_megatron


def check_round_trip(out: Path) -> list[dict]:
    """Every output file, in both formats, holds exactly encode(text) + [end of text] of its Parquet rows."""
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    tokenizer = tk.load(out / manifest["tokenizer"]["path"]) if not Path(manifest["tokenizer"]["path"]).is_absolute() \
        else tk.load(manifest["tokenizer"]["path"])
    assert tk.file_hash(out / manifest["tokenizer"]["path"]) == manifest["tokenizer"]["sha256"]
    token_size = 2 if manifest["dtype"] == "uint16" else 4
    rows_all = []
    for entry in manifest["files"]:
        rows = pq.read_table(out / entry["parquet"]).to_pylist()
        expected = [tokenizer.encode(r["text"]).ids + [tk.eos_id(tokenizer)] for r in rows]
        assert read_megatron(out / entry["files"]["bin"].removesuffix(".bin")) == expected
        assert read_datatrove(out / entry["files"]["ds"], token_size) == expected
        assert entry["tokens"] == sum(map(len, expected)) and entry["documents"] == len(rows)
        rows_all += rows
    assert sum(e["tokens"] for e in manifest["files"]) == manifest["tokens"]
    return rows_all


def small_mix(tmp_path: Path, **mix) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    words = "the river carries stone and light through valleys where people build small houses".split()
    with open(data / "prose.jsonl", "w") as f:
        for n in range(60):
            text = f"Note {n}: " + " ".join(words[(n * k) % len(words)] for k in range(80))
            f.write(json.dumps({"id": f"p{n}", "text": text}) + "\n")
    pq.write_table(pa.table({"id": [f"c{n}" for n in range(20)],
                             "body": [f"def f{n}(x):\n\tif x:\n        return  x * {n}\n" * 5 for n in range(20)]}),
                   data / "code.parquet")
    with open(data / "chat.jsonl", "w") as f:
        for n in range(10):
            f.write(json.dumps({"id": f"t{n}", "messages": [
                {"role": "system", "content": "Be brief."}, {"role": "user", "content": f"What is {n} plus {n}?"},
                {"role": "assistant", "content": f"{n} plus {n} is {2 * n}."}]}) + "\n")
    config = {
        "name": "small-mix",
        "sources": [
            {"name": "prose", "paths": [str(data / "prose.jsonl")], "license": "cc0", "max_epochs": 1},
            {"name": "code", "paths": [str(data / "code.parquet")], "text_field": "body", "format": "code",
             "license": "mit", "max_epochs": 10},
            {"name": "chat", "paths": [str(data / "chat.jsonl")], "format": "chat", "license": "cc0", "max_epochs": 3},
        ],
        "mix": {"shares": {"prose": 0.6, "code": 0.3, "chat": 0.1}, "seed": 3, **mix},
        "tokenize": {"vocab_size": 400, "max_file_tokens": 2000},
    }
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_small_mix_hits_its_shares_and_round_trips(tmp_path):
    out = tmp_path / "out"
    result = run_cli_inprocess("run", small_mix(tmp_path), "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["short"] == []
    for name, source in stats["sources"].items():
        assert abs(source["share_error_points"]) <= 1.0, (name, source)
    assert stats["sources"]["prose"]["epochs"] == 1  # the scarcest source, used once, sets the budget
    assert stats["sources"]["code"]["epochs"] >= 1  # up-sampled: whole epochs, then a seeded remainder
    rows = check_round_trip(out)
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert stats["output"]["files"] == len(manifest["files"]) > 1
    assert all(f["tokens"] <= 2000 for f in manifest["files"])  # max_file_tokens
    assert {r["source"] for r in rows} == {"prose", "code", "chat"}
    assert manifest["tokenizer"]["eos_id"] == 11
    funnel = stats["curated_funnel"]["prose"][0]  # conversion counts like a pipeline's reader
    assert funnel["stage"] == "curated_reader" and funnel["docs_in"] == 60 == funnel["docs_out"]
    chat = next(r["text"] for r in rows if r["source"] == "chat")
    assert chat.startswith("System: Be brief.\nUser: What is ") and "\nFalcon: " in chat
    code = next(r["text"] for r in rows if r["source"] == "code")
    assert "\tif x:\n        return  x" in code  # code keeps its whitespace
    sources_in_order = [r["source"] for r in rows]
    assert sources_in_order != sorted(sources_in_order)  # shuffled, not grouped by source
    card = (out / "README.md").read_text()
    assert card.startswith("---\npretty_name: small-mix\n") and "| code | mit |" in card


def test_same_config_same_output(tmp_path):
    config = small_mix(tmp_path)
    outputs = []
    for name in ("a", "b"):
        assert run_cli_inprocess("run", config, "--output", tmp_path / name, "--scheduler", "sync").returncode == 0
        outputs.append([p.read_bytes() for p in sorted((tmp_path / name / "tokens").glob("part-*.bin"))])
    assert outputs[0] == outputs[1]


def test_ratios_that_cannot_be_met_exit_2_unless_short_is_allowed(tmp_path):
    out = tmp_path / "out"
    strict = small_mix(tmp_path, total_tokens=200_000)
    result = run_cli_inprocess("run", strict, "--output", out, "--scheduler", "sync")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(
        "refinery: config error: mix.total_tokens: 200,000 cannot be met: prose has 5,")
    assert not (out / "stats.json").exists() and not list(out.glob("*/part-*"))  # nothing looks finished
    config = yaml.safe_load(strict.read_text())
    config["mix"]["allow_short"] = True
    strict.write_text(yaml.safe_dump(config))
    result = run_cli_inprocess("run", strict, "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert any(line.startswith("prose has ") for line in stats["short"])
    assert "warning: source ran short: prose has" in result.stdout


def test_a_source_with_no_documents_cannot_get_its_share(tmp_path):
    config = yaml.safe_load(small_mix(tmp_path).read_text())
    Path(config["sources"][2]["paths"][0]).write_text("")  # chat: an empty file
    (tmp_path / "empty.yaml").write_text(yaml.safe_dump(config))
    result = run_cli_inprocess("run", tmp_path / "empty.yaml", "--output", tmp_path / "out", "--scheduler", "sync")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("refinery: config error: mix.shares: chat has no documents, so its "
                                              "10.0% share cannot be met (drop the source, or set mix.allow_short: true)")


def test_curated_sources_can_opt_into_dedup(tmp_path):
    config = yaml.safe_load(small_mix(tmp_path).read_text())
    prose = Path(config["sources"][0]["paths"][0])
    lines = prose.read_text().splitlines()
    prose.write_text("\n".join(lines + [line.replace('"id": "p', '"id": "copy-p') for line in lines[:10]]) + "\n")
    config["sources"][0]["dedup"] = [{"exact_dedup": {}}, {"url_dedup": {}}]  # curated: no URLs, none compared
    (tmp_path / "dedup.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    result = run_cli_inprocess("run", tmp_path / "dedup.yaml", "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr
    stats = json.loads((out / "stats.json").read_text())
    per_stage = stats["curated_dedup"]["prose"]["per_stage"]
    assert per_stage["exact_dedup"]["removed"] == 10 and per_stage["url_dedup"]["removed"] == 0
    prose_texts = [r["text"] for r in check_round_trip(out) if r["source"] == "prose"]
    assert len(prose_texts) == len(set(prose_texts))  # one of each pair is left (the lowest id)
    config["sources"][0]["dedup"] = [{"fuzzy": {}}]
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    bad = run_cli_inprocess("run", tmp_path / "bad.yaml", "--output", out)
    assert bad.returncode == 2 and bad.stderr.startswith("refinery: config error: sources[0] (prose).dedup[0]:")


def test_bad_mix_config_names_the_key(tmp_path):
    config = yaml.safe_load(small_mix(tmp_path).read_text())
    config["mix"]["shares"]["prose"] = 0.7  # no longer adds up to 1
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = run_cli_inprocess("run", tmp_path / "bad.yaml", "--output", tmp_path / "o")
    assert result.returncode == 2 and result.stderr.startswith("refinery: config error: mix.shares: must be positive")


@pytest.mark.shared
@pytest.mark.slow
def test_falcon180b_mix_on_the_shared_data(tmp_path):
    if not (SHARED_DATA / "curated").is_dir() or not (SHARED_DATA / "web").is_dir():
        pytest.skip("shared data not available")
    out = tmp_path / "mix"
    result = run_cli_subprocess("run", "configs/falcon180b_mix.yaml", "--output", out, "--workers", "2", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    for name, source in stats["sources"].items():
        assert abs(source["share_error_points"]) <= 1.0 or any(line.startswith(name) for line in stats["short"]), name
    rows = check_round_trip(out)
    assert {r["source"] for r in rows} == set(stats["sources"])
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert manifest["tokenizer"]["vocab_size"] == 65024 and manifest["dtype"] == "uint16"
    assert (out / "README.md").read_text().startswith("---\n")
    assert (REPO / "configs" / "falcon180b_mix.yaml").is_file()


def test_an_existing_tokenizer_can_be_used(tmp_path):
    first = tmp_path / "first"
    assert run_cli_inprocess("run", small_mix(tmp_path), "--output", first, "--scheduler", "sync").returncode == 0
    config = yaml.safe_load((tmp_path / "mix.yaml").read_text())
    config["tokenize"]["tokenizer"] = str(first / "tokenizer")  # e.g. Falcon's own tokenizer.json
    (tmp_path / "given.yaml").write_text(yaml.safe_dump(config))
    second = tmp_path / "second"
    assert run_cli_inprocess("run", tmp_path / "given.yaml", "--output", second, "--scheduler", "sync").returncode == 0
    manifest = json.loads((second / "tokens" / "manifest.json").read_text())
    assert manifest["tokenizer"]["sha256"] == tk.file_hash(first / "tokenizer")
    assert not (second / "tokenizer").exists()
    config["tokenize"]["tokenizer"] = str(tmp_path / "missing")
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(config))
    bad = run_cli_inprocess("run", tmp_path / "missing.yaml", "--output", tmp_path / "third", "--scheduler", "sync")
    assert bad.returncode == 2 and bad.stderr.startswith("refinery: config error: tokenize.tokenizer:")


def test_wikitext_records_become_article_text_and_hostile_markup_is_a_counted_drop(tmp_path, monkeypatch):
    from refinery.mix import SourceSpec
    from refinery.mix import sources
    from refinery.stats import StageStats

    article = ("{{Infobox river\n| name = Wye\n| length = 250 km\n}}\n'''The Wye''' is a [[river]] in "
               "[[Wales|Welsh]] country.<ref>{{cite web|url=http://a.example}}</ref>\n\n== Course ==\n"
               "* It rises on [[Plynlimon]].\n<!-- a comment -->\n[[File:Wye.jpg|thumb|The river]]\n")
    hostile = "[http://a " * 20000  # unclosed external links: mwparserfromhell backtracks (~40 s)
    path = tmp_path / "wiki.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate([article, hostile, "{{stub}}"])))
    monkeypatch.setattr(sources, "WIKITEXT_TIMEOUT_S", 2.0)
    stats = StageStats(sources.READER_STAGE)
    texts = list(sources.curated_texts(str(path), SourceSpec(name="wiki", paths=[str(path)], format="wikitext"), stats))
    assert texts == [("0", "The Wye is a river in Welsh country.\n\nCourse\nIt rises on Plynlimon."), ("2", "")]
    assert stats.docs_in == 3 and dict(stats.dropped) == {"wikitext_timeout": 1}
    plain = list(sources.curated_texts(str(path), SourceSpec(name="wiki", paths=[str(path)])))
    assert plain[0] == ("0", article.strip())  # the default format leaves markup alone
    many = tmp_path / "many.jsonl"  # more records than one batch to the sandbox: order and ids kept
    many.write_text("".join(json.dumps({"id": f"r{i}", "text": f"'''[[x{i}]]'''"}) + "\n" for i in range(40)))
    converted = list(sources.curated_texts(str(many), SourceSpec(name="wiki", paths=[str(many)], format="wikitext")))
    assert converted == [(f"r{i}", f"x{i}") for i in range(40)]
