"""The tiny Falcon trainer: trains on mix token shards, resumes, saves a model that reloads offline."""

from __future__ import annotations

import json

import numpy as np
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
    (tmp / "mix.yaml").write_text(yaml.safe_dump(config))
    assert run_cli_inprocess("run", tmp / "mix.yaml", "--output", out, "--scheduler", "sync").returncode == 0
    return out


def train_config(tmp_path, token_run, **train) -> str:
    config = {"name": "t", "data": str(token_run / "tokens"), "tokenizer": str(token_run / "tokenizer"),
              "model": {"layers": 1, "hidden_size": 32, "heads": 4, "seq_len": 32},
              "train": {"tokens": 4000, "batch_size": 4, "eval_every": 10, "eval_batches": 2,
                        "warmup_steps": 3, "heldout_fraction": 0.2, **train}}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_trains_evaluates_and_reloads(tmp_path, token_run):
    import torch
    from transformers import AutoModelForCausalLM

    import tokenizer as tk
    from refinery.train import TokenWindows, evaluate

    out = tmp_path / "run"
    result = run_cli_inprocess("train", train_config(tmp_path, token_run), "--output", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "train.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == summary["steps"] == 4000 // (4 * 32)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert "eval" in records[-1] and summary["heldout"]["bits_per_byte"] > 0

    model = AutoModelForCausalLM.from_pretrained(out / "model", local_files_only=True)
    assert model.config.multi_query and model.config.parallel_attn and not model.config.bias
    tokenizer = tk.load(out / "model")
    windows = TokenWindows(str(token_run / "tokens"), 32, 0.2).heldout_windows(2 * 4)
    again = evaluate(model, windows, tokenizer, torch.device("cpu"), torch.float32, 4)
    assert abs(again["loss"] - summary["heldout"]["loss"]) < 1e-4
    card = (out / "model" / "README.md").read_text()
    for section in ("## Model details", "## Uses", "Out-of-scope use", "## Bias, risks, and limitations",
                    "## How to get started with the model", "### Training data", "### Training procedure",
                    "### Speeds, sizes, times", "## Evaluation", "## Environmental impact",
                    "## Technical specifications", "## Citation"):
        assert section in card, section
    assert f"{summary['heldout']['bits_per_byte']:.4f}" in card and "n/a" not in card
    assert (out / "loss.png").stat().st_size > 1000
    generated = model.generate(torch.tensor([tokenizer.encode("the river").ids]), max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > 2


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, token_run, monkeypatch):
    import refinery.train as trainer
    from refinery.config import read_yaml

    spec = trainer.parse_train(read_yaml(train_config(tmp_path, token_run, checkpoint_every=10)))
    full = trainer.train(spec, str(tmp_path / "full"))

    real_loss, calls = trainer.window_loss, {"n": 0}

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 25:  # step 21 (the evals at steps 10 and 20 add 2 calls each): after the step-20 checkpoint
            raise KeyboardInterrupt
        return real_loss(*args)

    monkeypatch.setattr(trainer, "window_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(spec, str(tmp_path / "resumed"))
    monkeypatch.setattr(trainer, "window_loss", real_loss)
    assert (tmp_path / "resumed" / "checkpoint" / "state.pt").exists()
    resumed = trainer.train(spec, str(tmp_path / "resumed"))

    def losses(folder):
        return [json.loads(line)["train_loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]

    assert len(losses(tmp_path / "resumed")) == full["steps"]
    assert np.allclose(losses(tmp_path / "full"), losses(tmp_path / "resumed"), atol=1e-6)
    assert resumed["heldout"]["loss"] == pytest.approx(full["heldout"]["loss"], abs=1e-5)


def test_bad_train_config_names_the_key(tmp_path, token_run):
    path = train_config(tmp_path, token_run)
    config = yaml.safe_load(open(path))
    config["model"]["heads"] = 5
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = run_cli_inprocess("train", tmp_path / "bad.yaml", "--output", tmp_path / "x")
    assert result.returncode == 2 and result.stderr.startswith("refinery: config error: model.heads:")
