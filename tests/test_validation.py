"""Fail before work: a mix or an ablation checks every source, path, glob and nested config before
any engine starts (in a dry run too), naming the source; relative paths in a config are from its
folder; `--input` takes several words; only config problems are labelled `config error`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from refinery.config import (PIPELINE_PATH_KEYS, TRAIN_PATH_KEYS, ConfigError, UsageError, load_config,
                             relative_to_config, resolve_paths)
from support import ENGLISH_CONFIG, REPO, SHARED_DATA, http_response, run_cli_inprocess, run_cli_subprocess, write_warc

PIPELINE = {"name": "web", "input": {"paths": ["../data/*.warc.gz"]},  # relative: from configs/
            "stages": [{"extract": {"extractor": "trafilatura", "isolation": "inline"}},
                       {"language_id": {"languages": ["en"]}}]}


def write_yaml(path: Path, raw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def project(tmp_path: Path) -> Path:
    """tmp/data (two WARCs, two curated files), tmp/configs/web.yaml (relative inputs) and
    tmp/configs/mix.yaml: two web sources and two curated ones, every path relative."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for n in range(2):
        write_warc(data / f"crawl-{n}.warc.gz", [http_response(f"https://x.example.org/{n}", b"<html>x</html>")])
    for name in ("prose", "chat"):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"id": f"{name}{n}", "text": f"{name} {n}"}) + "\n"
                                                   for n in range(5)))
    write_yaml(tmp_path / "configs" / "web.yaml", PIPELINE)
    write_yaml(tmp_path / "configs" / "mix.yaml", {
        "name": "mix", "output": "../runs/mix",
        "sources": [{"name": "web-a", "config": "web.yaml"},
                    {"name": "web-b", "config": "web.yaml", "input": ["../data/crawl-1.warc.gz"]},
                    {"name": "prose", "paths": ["../data/prose.jsonl"]},
                    {"name": "chat", "paths": ["../data/chat.jsonl"], "format": "chat"}],
        "mix": {"shares": {"web-a": 0.4, "web-b": 0.2, "prose": 0.2, "chat": 0.2}}})
    return tmp_path / "configs" / "mix.yaml"


def change(path: Path, edit) -> Path:
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    return write_yaml(path, raw)


def assert_fails_before_work(config: Path, out: Path, expected: str, *extra) -> None:
    """The run and its dry run fail alike: exit 2, one line naming the source, in under 5 s, no output."""
    for dry in (["--dry-run"], []):
        began = time.perf_counter()
        result = run_cli_inprocess("run", config, "--output", out, *extra, *dry)
        seconds = time.perf_counter() - began
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr_lines == [f"refinery: config error: {expected}"], (dry, result.stderr[-2000:])
        assert seconds < 5, seconds
        assert not out.exists()  # no engine started, nothing written


# --- 1. a mix checks everything before any work ----------------------------------------------------

def test_the_good_mix_passes_its_dry_run(tmp_path):
    result = run_cli_inprocess("run", project(tmp_path), "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"mix {tmp_path / 'configs' / 'mix.yaml'} -> {tmp_path / 'runs' / 'mix'}"
    assert lines[1].endswith("(2 input shards)") and lines[2].endswith("(1 input shard)")
    assert lines[3] == f"  prose: 20.0% from {[str(tmp_path / 'data' / 'prose.jsonl')]} (1 file)"


def test_a_typo_in_the_last_curated_path_fails_before_any_pipeline(tmp_path):
    config = change(project(tmp_path), lambda r: r["sources"][3].update(paths=["../data/chatz.jsonl"]))
    assert_fails_before_work(config, tmp_path / "out",
                             f"sources[3] (chat).paths: no file matches {[str(tmp_path / 'data' / 'chatz.jsonl')]}")


def test_every_curated_pattern_must_match(tmp_path):
    config = change(project(tmp_path), lambda r: r["sources"][2]["paths"].append("../data/prosez*.jsonl"))
    assert_fails_before_work(config, tmp_path / "out",
                             f"sources[2] (prose).paths: no file matches {[str(tmp_path / 'data' / 'prosez*.jsonl')]}")


def test_a_typo_in_the_second_web_input_fails_before_the_first_pipeline(tmp_path):
    config = change(project(tmp_path), lambda r: r["sources"][1].update(input=["../data/crawl-9.warc.gz"]))
    missing = str(tmp_path / "data" / "crawl-9.warc.gz")
    assert_fails_before_work(config, tmp_path / "out", f"sources[1] (web-b).input[0]: no input file matches {missing!r}")


def test_a_bad_nested_config_names_the_source_and_the_key(tmp_path):
    config = project(tmp_path)
    write_yaml(tmp_path / "configs" / "other.yaml", {**PIPELINE, "stages": [{"extract": {"treshold": 1}}]})
    change(config, lambda r: r["sources"][1].update(config="other.yaml"))
    nested = tmp_path / "configs" / "other.yaml"
    assert_fails_before_work(config, tmp_path / "out",
                             f"sources[1] (web-b).config: {nested}: stages[0].extract.treshold: "
                             "Extra inputs are not permitted")


def test_a_nested_config_without_its_own_inputs_names_the_source(tmp_path):
    config = project(tmp_path)
    write_yaml(tmp_path / "configs" / "other.yaml", {**PIPELINE, "input": {"paths": ["../nowhere/*.warc.gz"]}})
    change(config, lambda r: r["sources"][0].update(config="other.yaml"))
    nested = tmp_path / "configs" / "other.yaml"
    assert_fails_before_work(config, tmp_path / "out",
                             f"sources[0] (web-a).config: {nested}: input.paths[0]: no input file matches "
                             f"{str(tmp_path / 'nowhere' / '*.warc.gz')!r}")


def test_a_nested_model_is_preflighted_from_the_nested_folder(tmp_path):
    """`language_id.model_path` resolves from the nested config's folder and is loaded before any work."""
    config = project(tmp_path)
    (tmp_path / "configs" / "models").mkdir()
    (tmp_path / "configs" / "models" / "lid.ftz").write_bytes(b"not a fastText model")
    write_yaml(tmp_path / "configs" / "other.yaml",
               {**PIPELINE, "stages": [{"language_id": {"model_path": "models/lid.ftz"}}]})
    change(config, lambda r: r["sources"][1].update(config="other.yaml"))
    result = run_cli_inprocess("run", config, "--dry-run")
    assert result.returncode == 2
    prefix = (f"refinery: config error: sources[1] (web-b).config: {tmp_path / 'configs' / 'other.yaml'}: "
              f"stages[0].language_id.model_path: {str(tmp_path / 'configs' / 'models' / 'lid.ftz')!r} is not a usable")
    assert result.stderr_lines[0].startswith(prefix), result.stderr


def test_parse_errors_name_the_source(tmp_path):
    config = change(project(tmp_path), lambda r: r["sources"][3].update(format="poetry"))
    result = run_cli_inprocess("run", config, "--dry-run")
    assert result.returncode == 2 and result.stderr.startswith("refinery: config error: sources[3] (chat).format:")
    config = change(config, lambda r: r["sources"][3].update(format="chat", input=["x"]))
    result = run_cli_inprocess("run", config, "--dry-run")
    assert result.stderr.startswith("refinery: config error: sources[3] (chat).input: only pipeline sources")


# --- 1. an ablation too ----------------------------------------------------------------------------

def ablation(tmp_path: Path, **changes) -> Path:
    reference = tmp_path / "data" / "reference.jsonl"
    reference.parent.mkdir(parents=True, exist_ok=True)
    reference.write_text("".join(json.dumps({"id": f"r{n}", "text": f"text {n}"}) + "\n" for n in range(5)))
    return write_yaml(tmp_path / "configs" / "ablation.yaml", {
        "name": "small-ablation", "base": os.path.relpath(ENGLISH_CONFIG, tmp_path / "configs"),
        "variants": [{"name": "raw", "stages": ["url_filter", "extract"], "dedup": []}, {"name": "refined"}],
        "eval": [{"name": "web", "variant": "refined"}, {"name": "reference", "paths": ["../data/reference.jsonl"]}],
        **changes})


def test_an_ablation_checks_eval_paths_and_inputs_before_any_variant(tmp_path):
    out = tmp_path / "out"
    config = ablation(tmp_path, eval=[{"name": "web", "variant": "refined"},
                                      {"name": "reference", "paths": ["../data/referenze.jsonl"]}])
    began = time.perf_counter()
    result = run_cli_inprocess("ablate", config, "--output", out)
    assert time.perf_counter() - began < 5
    assert result.stderr_lines == [f"refinery: config error: eval[1] (reference).paths: no file matches "
                                   f"{[str(tmp_path / 'data' / 'referenze.jsonl')]}"], result.stderr[-2000:]
    assert result.returncode == 2 and not out.exists()
    result = run_cli_inprocess("ablate", ablation(tmp_path), "--output", out, "--input", tmp_path / "no-*.warc.gz")
    assert result.stderr_lines == [f"refinery: config error: input[0]: no input file matches "
                                   f"{str(tmp_path / 'no-*.warc.gz')!r}"], result.stderr[-2000:]
    assert not out.exists()
    bad_variant = ablation(tmp_path, variants=[{"name": "refined"}, {"name": "odd", "stages": ["nope"]}])
    result = run_cli_inprocess("ablate", bad_variant, "--output", out)
    assert result.stderr.startswith("refinery: config error: variants[1] (odd).stages: ['nope'] not in ")


def test_ablation_paths_are_from_its_folder(tmp_path):
    from refinery.ablate.spec import check_ablation, parse_ablation
    from refinery.config import read_yaml

    config = ablation(tmp_path, output="../runs/a", input=["../data/*.warc.gz"])
    write_warc(tmp_path / "data" / "one.warc.gz", [http_response("https://x.example.org/", b"<html>x</html>")])
    spec = parse_ablation(read_yaml(config), str(config))
    assert spec.base == str(ENGLISH_CONFIG) and spec.output == str(tmp_path / "runs" / "a")
    assert spec.input == [str(tmp_path / "data" / "*.warc.gz")]
    assert spec.eval[1].paths == [str(tmp_path / "data" / "reference.jsonl")]
    checked = check_ablation(spec, preflight_stages=False)
    assert [s.path for s in checked.shards] == [str(tmp_path / "data" / "one.warc.gz")]
    assert checked.eval_files == {"reference": [str(tmp_path / "data" / "reference.jsonl")]}


# --- 2. relative paths are from the config's folder --------------------------------------------------

def test_pipeline_paths_are_from_the_config_folder(tmp_path, monkeypatch):
    project(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = change(tmp_path / "configs" / "web.yaml", lambda r: r.update(output="../runs/web"))
    result = run_cli_inprocess("run", config, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].endswith(f"-> {tmp_path / 'runs' / 'web'}")
    assert [line.split()[1] for line in result.stdout.splitlines()[2:]] == \
        [str(tmp_path / "data" / f"crawl-{n}.warc.gz") for n in range(2)]
    # --input on the command line: from the current directory
    result = run_cli_inprocess("run", config, "--dry-run", "--input", "../data/crawl-1.warc.gz")
    assert result.returncode == 0, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()[2:]] == [str(tmp_path / "data" / "crawl-1.warc.gz")]
    result = run_cli_inprocess("run", config, "--dry-run", "--input", "data/crawl-1.warc.gz")
    assert result.returncode == 2 and "input.paths[0]: no input file matches 'data/crawl-1.warc.gz'" in result.stderr


def test_relative_config_paths_stay_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project(tmp_path)
    config = load_config("configs/web.yaml")
    assert config.spec.input.paths == [os.path.join("data", "*.warc.gz")]


def test_what_is_resolved_and_what_is_not():
    assert relative_to_config("data/x.gz", "/a/b/c.yaml") == "/a/b/data/x.gz"
    assert relative_to_config("../x", "/a/b/c.yaml") == "/a/x"
    assert relative_to_config("../x", "configs/c.yaml") == "x"
    for kept in ("/abs/x", "sample://english", "s3://bucket/x", "https://host/x", "file:///x", "train", ""):
        assert relative_to_config(kept, "/a/b/c.yaml") == kept
    assert relative_to_config("data/x.gz", "") == "data/x.gz"  # no file: from the current directory
    raw = {"name": "n", "input": {"paths": ["w/*.gz", "sample://english"]}, "output": "out",
           "stages": [{"language_id": {"model_path": "m.ftz", "threshold": 0.5}}, {"extract": None}],
           "dedup": [{"exact_dedup": {}}]}
    resolved = resolve_paths(raw, PIPELINE_PATH_KEYS, "/cfg/p.yaml")
    assert resolved["input"]["paths"] == ["/cfg/w/*.gz", "sample://english"] and resolved["output"] == "/cfg/out"
    assert resolved["stages"][0] == {"language_id": {"model_path": "/cfg/m.ftz", "threshold": 0.5}}
    assert raw["output"] == "out"  # a copy
    assert resolve_paths({"output": 3, "input": "x"}, PIPELINE_PATH_KEYS, "/cfg/p.yaml") == {"output": 3, "input": "x"}
    train = resolve_paths({"data": "t", "tokenizer": "k", "output": "o", "eval": [{"name": "e", "data": "h"}]},
                          TRAIN_PATH_KEYS, "/cfg/train/t.yaml")
    assert train == {"data": "/cfg/train/t", "tokenizer": "/cfg/train/k", "output": "/cfg/train/o",
                     "eval": [{"name": "e", "data": "/cfg/train/h"}]}


def test_mix_paths_are_from_the_mix_folder(tmp_path):
    from refinery.config import read_yaml
    from refinery.mix.spec import check_mix, parse_mix

    config = project(tmp_path)
    change(config, lambda r: r.update(tokenize={"tokenizer": "../tok"}))
    (tmp_path / "tok").mkdir()
    spec = parse_mix(read_yaml(config), str(config))
    assert spec.output == str(tmp_path / "runs" / "mix") and spec.tokenize.tokenizer == str(tmp_path / "tok")
    assert spec.sources[0].config == str(tmp_path / "configs" / "web.yaml")
    assert spec.sources[1].input == [str(tmp_path / "data" / "crawl-1.warc.gz")]
    assert spec.sources[2].paths == [str(tmp_path / "data" / "prose.jsonl")]
    checked = check_mix(spec, preflight_stages=False)
    assert [len(checked.pipelines[name][1]) for name in ("web-a", "web-b")] == [2, 1]
    assert parse_mix(read_yaml(change(config, lambda r: r.update(tokenize={"tokenizer": "train"}))),
                     str(config)).tokenize.tokenizer == "train"


@pytest.mark.skipif(not (SHARED_DATA / "curated").is_dir(), reason="shared data not available")
def test_the_shipped_mix_validates_from_any_directory(tmp_path):
    mix = REPO / "configs" / "falcon180b_mix.yaml"
    away = run_cli_subprocess("run", mix, "--dry-run", cwd=tmp_path)
    assert away.returncode == 0, away.stderr
    assert away.stdout.splitlines()[0] == f"mix {mix} -> {REPO / 'runs' / 'falcon180b-mix'}"
    home = run_cli_subprocess("run", "configs/falcon180b_mix.yaml", "--dry-run")
    assert home.returncode == 0, home.stderr
    assert home.stdout.splitlines()[0] == "mix configs/falcon180b_mix.yaml -> runs/falcon180b-mix"
    assert "books: 6.0% from ['../shared/data/curated/books.jsonl.gz'] (1 file)" in home.stdout


def test_the_shipped_configs_write_where_they_did_from_the_repository_root():
    english = run_cli_subprocess("run", "configs/english.yaml", "--dry-run")
    assert english.returncode == 0, english.stderr
    assert english.stdout.splitlines()[0].endswith("-> runs/english")
    from refinery.ablate.spec import parse_ablation
    from refinery.config import read_yaml

    spec = parse_ablation(read_yaml(REPO / "configs" / "ablation.yaml"), str(REPO / "configs" / "ablation.yaml"))
    assert spec.base == str(ENGLISH_CONFIG) and spec.output == str(REPO / "runs" / "ablation")
    assert spec.eval[2].paths == [str(SHARED_DATA / "curated" / "books.jsonl.gz")]
    train = resolve_paths(read_yaml(REPO / "configs" / "train" / "tiny-falcon.yaml"), TRAIN_PATH_KEYS,
                          "configs/train/tiny-falcon.yaml")
    assert train["data"] == "runs/falcon180b-mix/tokens" and train["output"] == "runs/train/tiny-falcon"
    assert train["eval"][0]["data"] == "runs/falcon180b-mix/heldout/books"


# --- 3. --input takes several words (an unquoted glob the shell expanded) ---------------------------

def test_input_takes_several_values_and_repeats(tmp_path):
    project(tmp_path)
    files = [tmp_path / "data" / f"crawl-{n}.warc.gz" for n in range(2)]
    write_warc(tmp_path / "data" / "more.warc.gz", [http_response("https://x.example.org/", b"<html>x</html>")])
    config = tmp_path / "configs" / "web.yaml"
    result = run_cli_inprocess("run", config, "--input", *files, "--input", tmp_path / "data" / "more.warc.gz",
                               "--dry-run")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()[2:]) == 3
    result = run_cli_inprocess("run", config, "--input", *files, "--output", tmp_path / "o", "--dry-run")
    assert result.returncode == 0 and len(result.stdout.splitlines()[2:]) == 2


# --- 4. labels: config errors only for config problems ------------------------------------------------

def test_report_on_a_folder_that_is_no_run_output_is_not_a_config_error(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "metrics.jsonl").write_text("{}\n")
    result = run_cli_inprocess("report", tmp_path / "train")
    assert result.returncode == 2
    assert result.stderr_lines == [f"refinery: error: OUTPUT: no stats.json in {str(tmp_path / 'train')!r}: "
                                   "not a finished `refinery run` output"]
    assert issubclass(UsageError, ConfigError) and UsageError("k", "m").label == "error"


def test_mix_flags_that_do_not_apply_are_usage_errors(tmp_path):
    result = run_cli_inprocess("run", project(tmp_path), "--limit", "3", "--dry-run")
    assert result.returncode == 2 and result.stderr_lines == [
        "refinery: error: --limit: not used by a mix config; set each source's input"]
