"""Config loading and validation: every problem is one ConfigError naming its key path."""

from __future__ import annotations

import copy

import pytest
import yaml

from refinery.config import ConfigError, load_config, parse_config, with_overrides
from support import ENGLISH_CONFIG

MINIMAL = {
    "name": "test",
    "stages": [
        {"extract": {"extractor": "trafilatura", "isolation": "inline"}},
        {"language_id": {"languages": ["en"], "threshold": 0.65}},
    ],
}


def minimal(**changes) -> dict:
    raw = copy.deepcopy(MINIMAL)
    raw.update(changes)
    return raw


def english_raw() -> dict:
    return yaml.safe_load(ENGLISH_CONFIG.read_text(encoding="utf-8"))


def stage_index(raw: dict, name: str) -> int:
    return next(i for i, entry in enumerate(raw["stages"]) if name in entry)


def config_error(raw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value


def test_english_config_loads():
    config = load_config(ENGLISH_CONFIG)
    names = [s.name for s in config.stages]
    assert "extract" in names and "language_id" in names
    assert names.index("extract") < names.index("language_id")
    assert config.name == "refinedweb-english"
    assert config.spec.input.paths == ["sample://english"]
    lid = config.stages[names.index("language_id")].config
    assert lid.languages == ["en"] and lid.threshold == 0.65
    # every stage is built from its config
    for spec in config.stages:
        assert spec.build().name == spec.name


def test_minimal_config_defaults():
    config = parse_config(minimal())
    assert config.spec.input.paths == ["sample://english"]
    assert config.spec.input.max_record_bytes == 10_000_000
    assert config.spec.input.keep_status == [200]
    assert config.spec.run.workers is None
    assert [s.name for s in config.stages] == ["extract", "language_id"]


def test_stage_with_no_parameters_uses_defaults():
    config = parse_config(minimal(stages=[{"extract": None}, {"language_id": {}}]))
    assert config.stages[0].config.extractor == "trafilatura"
    assert config.stages[1].config.threshold == 0.65


def test_fingerprint_tracks_what_changes_outputs():
    base = parse_config(minimal())
    assert base.fingerprint() == parse_config(minimal()).fingerprint()
    changed_stage = minimal()
    changed_stage["stages"][1]["language_id"]["threshold"] = 0.5
    assert parse_config(changed_stage).fingerprint() != base.fingerprint()
    assert parse_config(minimal(run={"limit": 10})).fingerprint() != base.fingerprint()
    # where outputs go and how many workers compute them do not change them
    assert parse_config(minimal(output="elsewhere", run={"workers": 3})).fingerprint() == base.fingerprint()
    assert with_overrides(base, inputs=["a.warc.gz"], output="x", workers=2).fingerprint() == base.fingerprint()
    # nor does how a big file is cut into tasks (a range's own bytes are in its map task's fingerprint);
    # which field holds the text does
    paths = (MINIMAL.get("input") or {}).get("paths", ["sample://english"])
    split = minimal(input={"paths": paths, "split_bytes": 1 << 20, "split_remote": True})
    assert parse_config(split).fingerprint() == base.fingerprint()
    assert parse_config(minimal(input={"paths": paths, "text_field": "body"})).fingerprint() != base.fingerprint()


def test_with_overrides_applies_and_validates():
    base = parse_config(minimal())
    config = with_overrides(base, inputs=["x.warc.gz", "y.warc.gz"], output="out", workers=2, limit=5)
    assert config.spec.input.paths == ["x.warc.gz", "y.warc.gz"]
    assert config.spec.output == "out"
    assert config.spec.run.workers == 2 and config.spec.run.limit == 5
    assert with_overrides(base, workers=None).spec.run.workers is None
    with pytest.raises(ConfigError) as info:
        with_overrides(base, workers=0)
    assert info.value.key == "run.workers"


INVALID = [
    (lambda r: r.update(treshold=0.5), "treshold"),
    (lambda r: r["stages"][1]["language_id"].update(treshold=0.5), "stages[1].language_id.treshold"),
    (lambda r: r["stages"][1]["language_id"].update(threshold=-1), "stages[1].language_id.threshold"),
    (lambda r: r["stages"][1]["language_id"].update(threshold=1.01), "stages[1].language_id.threshold"),
    (lambda r: r["stages"][1]["language_id"].update(threshold="high"), "stages[1].language_id.threshold"),
    (lambda r: r["stages"][1]["language_id"].update(languages="en"), "stages[1].language_id.languages"),
    (lambda r: r["stages"][1]["language_id"].update(languages=["English"]), "stages[1].language_id.languages"),
    (lambda r: r["stages"][0]["extract"].update(extractor="bs4"), "stages[0].extract.extractor"),
    (lambda r: r["stages"][0]["extract"].update(timeout_s="slow"), "stages[0].extract.timeout_s"),
    (lambda r: r["stages"][0]["extract"].update(timeout_s=0), "stages[0].extract.timeout_s"),
    (lambda r: r.update(run={"batch_size": "many"}), "run.batch_size"),
    (lambda r: r.update(run={"workers": 0}), "run.workers"),
    (lambda r: r.update(run={"unknown": 1}), "run.unknown"),
    (lambda r: r.update(run=5), "run"),
    (lambda r: r.update(input={"format": "zip"}), "input.format"),
    (lambda r: r.update(input={"max_record_bytes": 0}), "input.max_record_bytes"),
    (lambda r: r.update(input={"paths": []}), "input.paths"),
    (lambda r: r.pop("name"), "name"),
    (lambda r: r.update(name=""), "name"),
    (lambda r: r.update(stages=[]), "stages"),
    (lambda r: r.pop("stages"), "stages"),
]


@pytest.mark.parametrize("change,key", INVALID, ids=[key for _, key in INVALID])
def test_invalid_values_name_their_key(change, key):
    raw = minimal()
    change(raw)
    err = config_error(raw)
    assert err.key == key
    assert str(err).startswith(f"{key}: ")
    assert "\n" not in str(err)


def test_unknown_stage_name():
    err = config_error(minimal(stages=[*MINIMAL["stages"], {"dedupe": {}}]))
    assert err.key == "stages[2]"
    assert "unknown stage 'dedupe'" in err.message
    assert "language_id" in err.message  # lists the known ones


def test_stage_entry_shape():
    assert config_error(minimal(stages=[{"extract": {}, "language_id": {}}])).key == "stages[0]"
    assert config_error(minimal(stages=[{}])).key == "stages[0]"
    assert config_error(minimal(stages=[{"extract": 5}])).key == "stages[0].extract"
    assert config_error(minimal(stages=[{"extract": ["a"]}])).key == "stages[0].extract"


def test_stage_listed_twice():
    err = config_error(minimal(stages=[{"extract": {}}, {"extract": {}}]))
    assert err.key == "stages" and "extract" in err.message


@pytest.mark.parametrize("raw", [None, [], ["a", "b"], "just a string", 42])
def test_root_must_be_a_mapping(raw):
    assert config_error(raw).key == "(root)"


def test_error_message_shows_the_bad_value():
    raw = minimal()
    raw["stages"][1]["language_id"]["threshold"] = -1
    assert str(config_error(raw)) == \
        "stages[1].language_id.threshold: Input should be greater than or equal to 0 (got -1)"


def test_english_config_variants_name_their_key():
    raw = english_raw()
    lid = stage_index(raw, "language_id")
    raw["stages"][lid]["language_id"]["treshold"] = 0.5
    assert config_error(raw).key == f"stages[{lid}].language_id.treshold"
    raw = english_raw()
    raw["stages"][lid]["language_id"]["threshold"] = -1
    assert config_error(raw).key == f"stages[{lid}].language_id.threshold"


def test_load_config_file_problems(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert info.value.key == "(file)" and "missing.yaml" in info.value.message
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)  # a directory
    assert info.value.key == "(file)"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\nstages:\n  - extract: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.key == "(file)" and "invalid YAML" in info.value.message and "line" in info.value.message
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(empty)
    assert info.value.key == "(root)"


def test_config_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\nstages:\n  - extract: {}\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "(file)"


@pytest.mark.parametrize("change,key", [
    (lambda r: r.update(stages=["extract"]), "stages[0]"),
    (lambda r: r.update(input={"paths": ["ok.warc.gz", 5]}), "input.paths[1]"),
], ids=["stages[0]", "input.paths[1]"])
def test_list_positions_use_brackets(change, key):
    raw = minimal()
    change(raw)
    assert config_error(raw).key == key
