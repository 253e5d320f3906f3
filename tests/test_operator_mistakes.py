"""A config that validates can run: each operator mistake is one line naming the key, and exit 2,
found by `--dry-run` too, before any work."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from support import REPO, run_cli_inprocess, run_cli_subprocess
from test_cli import ERROR_PREFIX, GOOD, assert_config_error, write_config
from test_train import token_run, train_config  # noqa: F401 - token_run is a fixture

LID_MODEL = REPO / "refinery" / "models" / "lid.176.ftz"


def config_with(tmp_path: Path, change) -> Path:
    raw = json.loads(json.dumps(GOOD))
    change(raw)
    return write_config(tmp_path / "bad.yaml", raw)


def assert_run_and_dry_run_fail(config: Path, out_dir: Path, key: str) -> str:
    """The same one-line error from a dry run and from a run, which writes nothing."""
    dry = assert_config_error(run_cli_inprocess("run", config, "--output", out_dir, "--dry-run"), key)
    line = assert_config_error(run_cli_inprocess("run", config, "--output", out_dir, "--scheduler", "sync"), key)
    assert line == dry
    assert not out_dir.exists()
    return line


# --- 1. MinHash tables that cannot be allocated -------------------------------------------------

@pytest.mark.parametrize("params, key, bound", [
    ({"bands": 1_000_000_000}, "bands", "at most 100,000"),
    ({"bands": 1000, "rows": 1000}, "rows", "at most 100,000"),
    ({"bands": 450, "rows": 200, "batch_size": 4000}, "batch_size", "2 GiB"),
])
def test_minhash_permutations_are_bounded(tmp_path, out_dir, params, key, bound):
    config = config_with(tmp_path, lambda raw: raw.update(dedup=[{"minhash_dedup": params}]))
    line = assert_run_and_dry_run_fail(config, out_dir, f"dedup[0].minhash_dedup.{key}")
    assert bound in line


def test_minhash_bounds_leave_real_settings_alone():
    from refinery.stages.minhash_dedup import MinhashDedup

    for params in ({}, {"bands": 14, "rows": 8}, {"bands": 450, "rows": 20, "batch_size": 10_000},
                   {"bands": 1000, "rows": 100, "batch_size": 2000}):
        MinhashDedup.Config.model_validate(params)


# --- 2. an extraction timeout the sandbox cannot wait for ------------------------------------------

def test_extract_timeout_is_bounded(tmp_path, out_dir):
    config = config_with(tmp_path, lambda raw: raw["stages"][0]["extract"].update(timeout_s=3_000_000))
    line = assert_run_and_dry_run_fail(config, out_dir, "stages[0].extract.timeout_s")
    assert "3600" in line


# --- 3. a model file that is not a model ----------------------------------------------------------

@pytest.mark.parametrize("stage", ["language_id", "language_prefilter"])
def test_a_file_that_is_not_a_model(tmp_path, out_dir, stage):
    model = tmp_path / "model.ftz"
    model.write_bytes(b"this is not a fastText model\n" * 10)

    def change(raw):
        raw["stages"][1] = {stage: {"languages": ["en"], "model_path": str(model)}}

    line = assert_run_and_dry_run_fail(config_with(tmp_path, change), out_dir, f"stages[1].{stage}.model_path")
    assert "not a usable fastText model" in line


def test_a_truncated_model_is_refused_without_exhausting_memory(tmp_path, out_dir):
    """fastText loops at the end of a truncated model, growing a string; the check runs it in a child
    process with a memory limit."""
    model = tmp_path / "truncated.ftz"
    model.write_bytes(LID_MODEL.read_bytes()[:1000])
    config = config_with(tmp_path, lambda raw: raw["stages"][1]["language_id"].update(model_path=str(model)))
    started = time.monotonic()
    result = run_cli_subprocess("run", config, "--output", out_dir, "--dry-run", timeout=120)
    assert_config_error(result, "stages[1].language_id.model_path")
    assert time.monotonic() - started < 60


def test_the_shipped_model_passes_the_preflight(tmp_path, out_dir):
    result = run_cli_inprocess("run", write_config(tmp_path / "good.yaml", GOOD), "--output", out_dir, "--dry-run")
    assert result.returncode == 0, result.stderr


def test_a_mix_source_config_is_preflighted(tmp_path, out_dir):
    model = tmp_path / "model.ftz"
    model.write_bytes(b"not a model")
    pipeline = config_with(tmp_path, lambda raw: raw["stages"][1]["language_id"].update(model_path=str(model)))
    mix = write_config(tmp_path / "mix.yaml", {"name": "m", "sources": [{"name": "web", "config": str(pipeline)}],
                                               "mix": {"shares": {"web": 1.0}}})
    line = assert_config_error(run_cli_inprocess("run", mix, "--output", out_dir, "--dry-run"), "sources[0] (web).config")
    assert "stages[1].language_id.model_path" in line
    assert_config_error(run_cli_inprocess("run", mix, "--output", out_dir), "sources[0] (web).config")
    assert not out_dir.exists()


def test_an_ablation_base_is_preflighted(tmp_path, out_dir):
    model = tmp_path / "model.ftz"
    model.write_bytes(b"not a model")
    base = config_with(tmp_path, lambda raw: raw["stages"][1]["language_id"].update(model_path=str(model)))
    ablation = write_config(tmp_path / "ablation.yaml", {
        "name": "a", "base": str(base), "variants": [{"name": "raw"}], "eval": [{"name": "web", "variant": "raw"}]})
    line = assert_config_error(run_cli_inprocess("ablate", ablation, "--output", out_dir), "base")
    assert "stages[1].language_id.model_path" in line
    assert not out_dir.exists()


# --- 4. a "billion laughs" of nested aliases -------------------------------------------------------

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("key", ["name", "run"])
def test_billion_laughs_is_refused_quickly(tmp_path, out_dir, key):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS + f"{key}: *i\nstages: [{{extract: {{}}}}]\n", encoding="utf-8")
    for args in (["--dry-run"], []):
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", _LIMITED_CLI, "run", str(path), "--output", str(out_dir), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert time.monotonic() - started < 30
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert lines[0].startswith(ERROR_PREFIX + "(file): ") and "aliases" in lines[0]
    assert not out_dir.exists()


_LIMITED_CLI = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # an expansion would run out of this
from refinery.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_large_value_under_a_wrong_key_gives_a_short_message(tmp_path, out_dir):
    """Below the node budget, a wrong value is still shown bounded (reprlib), not expanded."""
    laughs = BILLION_LAUGHS.split("\n")[:4]  # 9**4 = 6,561 strings under d
    path = tmp_path / "wide.yaml"
    path.write_text("\n".join(laughs) + "\nrun: {batch_size: *d}\nname: x\nstages: [{extract: {}}]\n")
    line = assert_config_error(run_cli_inprocess("run", path, "--output", out_dir, "--dry-run"), "run.batch_size")
    assert len(line) < 400


def test_an_integer_too_long_to_convert_is_a_yaml_error(tmp_path, out_dir):
    path = tmp_path / "digits.yaml"
    path.write_text("name: x\nstages: [{extract: {}}]\nrun: {limit: " + "9" * 5000 + "}\n")
    assert_config_error(run_cli_inprocess("run", path, "--output", out_dir, "--dry-run"), "(file)")


def test_shown_values_are_bounded():
    from refinery.config import ConfigError, parse_config, shown

    nested: list = ["lol"] * 10
    for _ in range(8):
        nested = [nested] * 10  # 10**9 leaves, shared
    recursive: list = []
    recursive.append(recursive)
    for value in (nested, recursive, "x" * 10_000_000, 10 ** 5000):
        assert len(shown(value)) <= 200
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        parse_config({"name": "x", "stages": [{"extract": {}}], "run": {"limit": nested}})
    assert info.value.key == "run.limit" and len(str(info.value)) < 400
    assert time.monotonic() - started < 5


# --- 5. names that become paths -------------------------------------------------------------------

BAD_NAMES = ["..", ".", "../escape", "a/b", ".hidden", "-flag", "x" * 65, "", "name with space"]


# a pipeline's name may be longer: an ablation names its variants' pipelines ABLATION-VARIANT
@pytest.mark.parametrize("name", [n for n in BAD_NAMES if len(n) != 65] + ["x" * 201])
def test_a_pipeline_name_is_one_folder_name(tmp_path, out_dir, name):
    config = config_with(tmp_path, lambda raw: raw.update(name=name))
    assert_run_and_dry_run_fail(config, out_dir, "name")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_mix_source_name_is_one_folder_name(tmp_path, out_dir, name):
    data = tmp_path / "prose.jsonl"
    data.write_text(json.dumps({"id": "1", "text": "some prose"}) + "\n")
    mix = write_config(tmp_path / "mix.yaml", {"name": "m", "sources": [{"name": name, "paths": [str(data)]}],
                                               "mix": {"shares": {name: 1.0}}})
    for result in (run_cli_inprocess("run", mix, "--output", out_dir, "--dry-run"),
                   run_cli_inprocess("run", mix, "--output", out_dir)):
        line = result.stderr_lines[0] if result.stderr_lines else ""
        assert result.returncode == 2 and len(result.stderr_lines) == 1, result.stderr
        assert line.startswith("refinery: config error: sources[0]") and ".name: " in line, line
    assert not out_dir.exists()


@pytest.mark.parametrize("where, key", [("variant", "variants[0] (..).name"), ("eval", "eval[0] (..).name"),
                                        ("ablation", "name")])
def test_ablation_names_are_folder_names(tmp_path, out_dir, where, key):
    raw = {"name": "a", "base": str(REPO / "configs" / "english.yaml"), "variants": [{"name": "raw"}],
           "eval": [{"name": "web", "variant": "raw"}]}
    target = {"variant": raw["variants"][0], "eval": raw["eval"][0], "ablation": raw}[where]
    target["name"] = ".."
    path = write_config(tmp_path / "ablation.yaml", raw)
    assert_config_error(run_cli_inprocess("ablate", path, "--output", out_dir), key)
    assert not out_dir.exists()


@pytest.mark.parametrize("key", ["name", "eval[0].name"])
def test_train_names_are_folder_names(tmp_path, key):
    raw = {"name": "t", "data": str(tmp_path), "tokenizer": str(tmp_path), "eval": [{"name": "x", "data": "y"}]}
    (raw if key == "name" else raw["eval"][0])["name"] = "../../etc"
    path = write_config(tmp_path / "train.yaml", raw)
    assert_config_error(run_cli_inprocess("train", path, "--output", tmp_path / "out"), key)
    assert not (tmp_path / "out").exists()


def test_inside_refuses_paths_that_leave_their_folder(tmp_path):
    from refinery.paths import PathEscapeError, inside

    assert inside(tmp_path, "sources", "web") == (tmp_path / "sources" / "web").resolve()
    for parts in (["sources", "..", ".."], [".."], ["/etc"], ["sources", "../../x"]):
        with pytest.raises(PathEscapeError):
            inside(tmp_path, *parts)
    (tmp_path / "link").symlink_to("/")
    with pytest.raises(PathEscapeError):
        inside(tmp_path, "link", "etc")


# --- 6. a planted checkpoint ------------------------------------------------------------------------

class _Plant:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_checkpoint_never_runs(tmp_path, token_run):  # noqa: F811 - the fixture
    import torch

    from refinery.engine.output import claim_output

    out = tmp_path / "train-out"
    with claim_output(str(out), force=False):  # a refinery output, as an interrupted training leaves it
        pass
    (out / "checkpoint").mkdir()
    marker = tmp_path / "pwned"
    torch.save({"model": _Plant(marker), "step": 1}, out / "checkpoint" / "state.pt")
    (out / "metrics.jsonl").write_text("")
    result = run_cli_inprocess("train", train_config(tmp_path, token_run), "--output", out)
    line = assert_config_error(result, "output")
    assert "state.pt" in line and "--force" in line
    assert not marker.exists()


def test_a_checkpoint_refinery_wrote_loads_with_weights_only(tmp_path):
    import numpy as np
    import torch

    from refinery.train.spec import load_checkpoint

    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    rng = np.random.default_rng(7)
    rng.random(3)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 5,
                "rng": rng.bit_generator.state, "elapsed": 1.5}, tmp_path / "state.pt")
    state = load_checkpoint(tmp_path / "state.pt")
    again = np.random.default_rng(0)
    again.bit_generator.state = state["rng"]
    assert again.random() == rng.random() and state["step"] == 5 and state["elapsed"] == 1.5


# --- 8. a reason that is not one ------------------------------------------------------------------

def fake_output(out: Path, rows: list[dict], stage: str = "gopher_quality") -> Path:
    (out / "dropped" / stage).mkdir(parents=True)
    (out / "stats.json").write_text("{}")
    pq.write_table(pa.Table.from_pylist(rows), out / "dropped" / stage / "s-00000.parquet")
    return out


DROPPED = {"id": "d1", "url": "https://example.org/a", "source": "web", "stage": "gopher_quality",
           "reason": "too_few_alpha_words", "text": "Some dropped text."}


def test_an_unknown_reason_lists_the_valid_ones(tmp_path):
    from refinery.stages.gopher_quality import GopherQuality

    out = fake_output(tmp_path / "out", [DROPPED])
    for stage in (["--stage", "gopher_quality"], []):
        result = run_cli_inprocess("inspect", out, *stage, "--reason", "too_few_alpha_wrods")
        line = assert_config_error(result, "--reason")
        assert "too_few_alpha_words" in line and all(r in line for r in GopherQuality.reasons)
    result = run_cli_inprocess("inspect", out, "--stage", "kept", "--reason", "too_few_alpha_words")
    assert_config_error(result, "--reason")
    good = run_cli_inprocess("inspect", out, "--stage", "gopher_quality", "--reason", "too_few_alpha_words")
    assert good.returncode == 0 and "Some dropped text." in good.stdout


# --- 7. terminal escapes in inspected documents -----------------------------------------------------

def test_inspect_prints_no_terminal_control_characters(tmp_path):
    evil = {**DROPPED, "url": "https://example.org/\x1b[31mred\x07", "id": "d\x1b]0;title\x07",
            "text": "Hello \x1b[31mworld\x1b[0m\x07 and \x9b2Jmore\r\nsecond line\tend"}
    out = fake_output(tmp_path / "out", [evil])
    result = run_cli_subprocess("inspect", out, "--stage", "gopher_quality")
    assert result.returncode == 0, result.stderr
    for bad in ("\x1b", "\x07", "\x9b", "\r", "[31m", "]0;"):
        assert bad not in result.stdout, (bad, result.stdout)
    assert "https://example.org/red" in result.stdout and "Hello world and more" in result.stdout
    assert "second line\tend" in result.stdout or "second line" in result.stdout
