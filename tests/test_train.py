"""The tiny Falcon trainer: trains on mix token shards, resumes, saves a model that reloads offline."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from support import run_cli_inprocess
from test_mix import small_mix


@pytest.fixture(scope="module")
def token_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mix")
    out = tmp / "out"
    config = yaml.safe_load(small_mix(tmp).read_text())
    config["tokenize"]["max_file_tokens"] = 100_000
    config["sources"][0]["heldout_fraction"] = 0.2  # prose records kept out: the eval set `prose`
    (tmp / "mix.yaml").write_text(yaml.safe_dump(config))
    assert run_cli_inprocess("run", tmp / "mix.yaml", "--output", out, "--scheduler", "sync").returncode == 0
    return out


def train_config(tmp_path, token_run, file="train.yaml", model=(), prose=(), **train) -> str:
    """A 31-step run (4000 tokens, 4 x 32 per step) of a 1-layer Falcon; ``model``, ``prose`` (the
    eval set's entry) and ``train`` override settings."""
    config = {"name": "t", "data": str(token_run / "tokens"), "tokenizer": str(token_run / "tokenizer"),
              "model": {"layers": 1, "hidden_size": 32, "heads": 4, "seq_len": 32, **dict(model)},
              "train": {"tokens": 4000, "batch_size": 4, "eval_every": 10, "eval_batches": 2,
                        "warmup_steps": 3, "heldout_fraction": 0.2, **train},
              "eval": [{"name": "prose", "data": str(token_run / "heldout" / "prose"), **dict(prose)}]}
    path = tmp_path / file
    path.write_text(yaml.safe_dump(config))
    return str(path)


def interrupt_at_step_21(monkeypatch, *cli_args):
    """`refinery train ...` stopped (Ctrl-C) in step 21, after the step-20 checkpoint (checkpoint_every 10)."""
    import refinery.train.loop as loop  # where train_step looks up train_loss

    real_loss, calls = loop.train_loss, {"n": 0}

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 21:
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(loop, "train_loss", interrupted)
    result = run_cli_inprocess("train", *cli_args)
    monkeypatch.setattr(loop, "train_loss", real_loss)
    assert result.returncode == 130, result.stderr


def file_times(folder) -> dict:
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


def steps_of(folder) -> list[int]:
    return [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_trains_evaluates_and_reloads(tmp_path, token_run):
    import torch
    from transformers import AutoModelForCausalLM

    from refinery import tokenizer as tk
    from refinery.train import TokenWindows, evaluate

    out = tmp_path / "run"
    result = run_cli_inprocess("train", train_config(tmp_path, token_run), "--output", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "train.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == summary["steps"] == 4000 // (4 * 32)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert set(records[-1]["eval"]) == {"heldout", "prose"}
    assert summary["eval"]["heldout"]["bits_per_byte"] > 0 and summary["eval"]["prose"]["bits_per_byte"] > 0
    stats = json.loads((token_run / "stats.json").read_text())
    assert stats["heldout"]["prose"]["documents"] > 0
    held = set(pq.read_table(token_run / "sources" / "prose" / "heldout").column("id").to_pylist())
    trained = set(pq.read_table(token_run / "documents").column("id").to_pylist())
    assert held and not held & trained  # held-out records never reach the mix

    model = AutoModelForCausalLM.from_pretrained(out / "model", local_files_only=True)
    assert model.config.multi_query and model.config.parallel_attn and not model.config.bias
    tokenizer = tk.load(out / "model")
    windows = TokenWindows(str(token_run / "tokens"), 32, 0.2).heldout_windows(2 * 4)
    again = evaluate(model, windows, tokenizer, torch.device("cpu"), torch.float32, 4)
    assert abs(again["loss"] - summary["eval"]["heldout"]["loss"]) < 1e-4
    x = torch.as_tensor(windows)  # and with a plain cross-entropy on the reloaded model's logits
    with torch.no_grad():
        logits = model(input_ids=x[:, :-1]).logits
    direct = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    assert abs(direct.item() - summary["eval"]["heldout"]["loss"]) < 1e-4
    card = (out / "model" / "README.md").read_text()
    for section in ("## Model details", "## Uses", "Out-of-scope use", "## Bias, risks, and limitations",
                    "## How to get started with the model", "### Training data", "### Training procedure",
                    "### Speeds, sizes, times", "## Evaluation", "## Environmental impact",
                    "## Technical specifications", "## Citation"):
        assert section in card, section
    assert f"{summary['eval']['heldout']['bits_per_byte']:.4f}" in card and "n/a" not in card
    assert f"{summary['eval']['prose']['bits_per_byte']:.4f}" in card
    assert (out / "loss.png").stat().st_size > 1000
    generated = model.generate(torch.tensor([tokenizer.encode("the river").ids]), max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > 2


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, token_run, monkeypatch):
    import refinery.train as trainer
    from refinery.config import read_yaml

    config = train_config(tmp_path, token_run, checkpoint_every=10)
    full = trainer.train(trainer.parse_train(read_yaml(config)), str(tmp_path / "full"))
    interrupt_at_step_21(monkeypatch, config, "--output", tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoint" / "state.pt").exists()
    lines = []
    resumed = trainer.train(trainer.parse_train(read_yaml(config)), str(tmp_path / "resumed"), log=lines.append)
    assert "resumed at step 20" in lines[0]

    def losses(folder):
        return [json.loads(line)["train_loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]

    assert len(losses(tmp_path / "resumed")) == full["steps"]
    assert np.allclose(losses(tmp_path / "full"), losses(tmp_path / "resumed"), atol=1e-6)
    for name in ("heldout", "prose"):
        assert resumed["eval"][name]["loss"] == pytest.approx(full["eval"][name]["loss"], abs=1e-5)


def test_force_trains_again_from_step_zero(tmp_path, token_run, monkeypatch):
    config, out = train_config(tmp_path, token_run, checkpoint_every=10), tmp_path / "run"
    interrupt_at_step_21(monkeypatch, config, "--output", out)
    assert (out / "checkpoint" / "state.pt").exists()
    result = run_cli_inprocess("train", config, "--output", out, "--force")
    assert result.returncode == 0, result.stderr
    assert "resumed" not in result.stderr and result.stderr.startswith("train: t: ")
    assert steps_of(out) == list(range(1, 32)) and not (out / "checkpoint").exists()


@pytest.mark.parametrize("change, key", [
    ({"lr": 0.001}, "train.lr"),
    ({"model": {"layers": 1, "hidden_size": 64}}, "model.hidden_size"),  # was a state_dict size-mismatch traceback
])
def test_a_resume_with_other_training_settings_is_refused(tmp_path, token_run, monkeypatch, change, key):
    out = tmp_path / "run"
    interrupt_at_step_21(monkeypatch, train_config(tmp_path, token_run, checkpoint_every=10), "--output", out)
    before = file_times(out)
    result = run_cli_inprocess("train", train_config(tmp_path, token_run, "changed.yaml", checkpoint_every=10,
                                                     **change), "--output", out)
    assert result.returncode == 2
    assert result.stderr.startswith(f"refinery: config error: {key.split('.')[0]}: ") and key in result.stderr
    assert result.stderr.count("\n") == 1 and "--force" in result.stderr
    assert file_times(out) == before  # the checkpoint and metrics are kept as they were


def test_a_checkpoint_without_its_settings_is_refused(tmp_path, token_run):
    import torch

    from refinery.config import ConfigError, read_yaml
    from refinery.train import parse_train, train

    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    torch.save({"model": {}, "step": 20}, tmp_path / "run" / "checkpoint" / "state.pt")  # an older refinery's
    with pytest.raises(ConfigError, match="records no settings.*--force") as err:
        train(parse_train(read_yaml(train_config(tmp_path, token_run))), str(tmp_path / "run"))
    assert err.value.key == "output"


def test_a_resume_with_other_evaluation_settings_continues(tmp_path, token_run, monkeypatch):
    out = tmp_path / "run"
    interrupt_at_step_21(monkeypatch, train_config(tmp_path, token_run, checkpoint_every=10), "--output", out)
    result = run_cli_inprocess("train", train_config(tmp_path, token_run, "changed.yaml", checkpoint_every=7,
                                                     eval_every=5, eval_batches=1, prose={"every": 3}),
                               "--output", out)
    assert result.returncode == 0, result.stderr
    assert "resumed at step 20" in result.stderr.splitlines()[0]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 32))
    assert [r["step"] for r in records if "eval" in r] == [10, 20, 21, 24, 25, 27, 30, 31]


def test_the_evaluation_schedule():
    from refinery.train import EvalSet, TrainSettings, TrainSpec, eval_plan, sets_due

    spec = TrainSpec(name="t", data="d", tokenizer="k", train=TrainSettings(eval_every=10, eval_batches=4),
                     eval=[EvalSet(name="books", data="b", every=25, batches=1), EvalSet(name="code", data="c")])
    plan = eval_plan(spec)
    assert plan == {"heldout": (10, 4), "books": (25, 1), "code": (10, 4)}
    due = {step: sets_due(plan, step, 62) for step in range(1, 63) if sets_due(plan, step, 62)}
    assert due == {10: ["heldout", "code"], 20: ["heldout", "code"], 25: ["books"], 30: ["heldout", "code"],
                   40: ["heldout", "code"], 50: ["heldout", "books", "code"], 60: ["heldout", "code"],
                   62: ["heldout", "books", "code"]}  # the last step: every set
    no_tail = spec.model_copy(update={"train": TrainSettings(heldout_fraction=0)})
    assert list(eval_plan(no_tail)) == ["books", "code"]


def test_per_set_evaluation_its_time_and_progress_lines(tmp_path, token_run, monkeypatch):
    import refinery.train.loop as loop

    monkeypatch.setattr(loop, "PROGRESS_EVERY", 0.0)  # stderr is no terminal here: plain lines, one per step
    out = tmp_path / "run"
    result = run_cli_inprocess("train", train_config(tmp_path, token_run, prose={"every": 25, "batches": 1}),
                               "--output", out)
    assert result.returncode == 0, result.stderr
    start, *rest = result.stderr.splitlines()
    assert start.startswith("train: t: ") and " parameters, 31 steps x 128 tokens = 3,968 tokens, on cpu" in start
    progress = [line for line in rest if "steps/s" in line]
    assert len(progress) >= 20 and all("tokens/s ETA " in line for line in progress)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"]: sorted(r["eval"]) for r in records if "eval" in r} == {
        10: ["heldout"], 20: ["heldout"], 25: ["prose"], 30: ["heldout"], 31: ["heldout", "prose"]}
    summary = json.loads((out / "train.json").read_text())
    assert {name: s["windows"] for name, s in summary["eval_sets"].items()} == {"heldout": 8, "prose": 4}
    assert summary["eval"] == records[-1]["eval"]  # the final evaluation is the last step's, not a second one
    assert summary["eval_seconds"] > 0 and summary["train_seconds"] > 0
    assert summary["eval_share"] == pytest.approx(
        summary["eval_seconds"] / (summary["eval_seconds"] + summary["train_seconds"]), abs=1e-3)
    assert f"evaluation: {summary['eval_seconds']:.1f} s, {summary['eval_share']:.1%}" in result.stdout


def test_bad_train_config_names_the_key(tmp_path, token_run):
    path = train_config(tmp_path, token_run)
    config = yaml.safe_load(open(path))
    config["model"]["heads"] = 5
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = run_cli_inprocess("train", tmp_path / "bad.yaml", "--output", tmp_path / "x")
    assert result.returncode == 2 and result.stderr.startswith("refinery: config error: model.heads:")


@pytest.mark.parametrize("chunk_elements", [1 << 23, 64 * 50])  # one chunk; several (64 rows each)
def test_fused_output_layer_loss_matches_plain_cross_entropy(monkeypatch, chunk_elements):
    import torch

    import refinery.train.loss as trainer

    monkeypatch.setattr(trainer, "LOGIT_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    hidden = torch.randn(300, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (300,))
    fused = trainer.linear_cross_entropy(hidden, weight, targets)
    (fused * 0.5).backward()
    fused_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    plain = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    (plain * 0.5).backward()
    assert torch.allclose(fused.double(), plain, rtol=1e-6)
    assert torch.allclose(fused_grads[0], hidden.grad, atol=1e-10)
    assert torch.allclose(fused_grads[1], weight.grad, atol=1e-10)


def test_training_loss_equals_the_model_forward(token_run):
    import torch

    from refinery import tokenizer as tk
    from refinery.train import ModelSettings, build_model, train_loss, window_loss

    torch.manual_seed(0)
    model = build_model(ModelSettings(layers=1, hidden_size=32, heads=4, seq_len=32),
                        tk.load(token_run / "tokenizer"))
    batch = np.random.default_rng(0).integers(0, 300, size=(4, 33))
    fused, _ = train_loss(model, batch, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        plain, _ = window_loss(model, batch, torch.device("cpu"), torch.float32)
    assert fused.item() == pytest.approx(plain.item(), rel=1e-5)


def test_a_finished_training_is_not_run_again(tmp_path, token_run):
    import time

    config, out = train_config(tmp_path, token_run), tmp_path / "run"
    first = run_cli_inprocess("train", config, "--output", out)
    assert first.returncode == 0, first.stderr
    assert (out / "_markers" / "train.done").exists()
    before = file_times(out)
    started = time.perf_counter()
    again = run_cli_inprocess("train", config, "--output", out)
    assert time.perf_counter() - started < 5
    assert again.returncode == 0 and again.stdout == first.stdout
    assert file_times(out) == before  # no file written, touched, added or removed
    assert again.stderr.splitlines()[0].startswith(f"train: {out} is finished already")
