"""`refinery ablate`: variants cut from one pipeline, one tokenizer, the same model and budget,
the same held-out sets, and nothing held out ever trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from support import REPO, run_cli_inprocess

FILTERS = ["url_filter", "language_prefilter", "extract", "language_id"]


def ablation_config(tmp_path: Path, **overrides) -> Path:
    reference = tmp_path / "reference.jsonl"
    words = "a quiet harbour town keeps its boats painted blue and its nets mended by hand".split()
    with open(reference, "w") as f:
        for n in range(40):
            f.write(json.dumps({"id": f"r{n}", "text": " ".join(words[(n * k) % len(words)] for k in range(60))}) + "\n")
    config = {
        "name": "small-ablation", "base": str(REPO / "configs" / "english.yaml"),
        "variants": [
            {"name": "raw", "stages": FILTERS, "dedup": []},
            {"name": "filtered", "stages": FILTERS + ["gopher_repetition", "gopher_quality", "line_filter"],
             "dedup": []},
            {"name": "refined"},
        ],
        "heldout_fraction": 0.2,
        "eval": [{"name": "web", "variant": "refined"}, {"name": "reference", "paths": [str(reference)]}],
        "tokenize": {"vocab_size": 600},
        "model": {"layers": 1, "hidden_size": 32, "heads": 4, "seq_len": 32},
        "train": {"tokens": 12000, "batch_size": 4, "eval_every": 20, "eval_batches": 2, "warmup_steps": 3},
        "seeds": [1, 2],
        **overrides,
    }
    path = tmp_path / "ablation.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablation")
    out = tmp / "out"
    result = run_cli_inprocess("ablate", ablation_config(tmp), "--output", out, "--scheduler", "sync")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, out, result


def test_every_variant_trains_the_same_model_on_the_same_budget(ablation):
    _, out, result = ablation
    report = json.loads((out / "ablation.json").read_text())
    variants = report["variants"]
    assert list(variants) == ["raw", "filtered", "refined", "degraded"]  # the positive control last
    assert len({(v["steps"], v["tokens_trained"]) for v in variants.values()}) == 1
    assert report["budget_tokens"] == variants["raw"]["tokens_trained"] == (12000 // (4 * 32)) * 4 * 32
    # each variant keeps less than the one before it, and the refined one ran the dedup stages
    assert variants["raw"]["train_tokens"] > variants["filtered"]["train_tokens"] > variants["refined"]["train_tokens"]
    assert variants["refined"]["dedup"] == ["exact_dedup", "minhash_dedup", "url_dedup", "substring_dedup"]
    assert variants["raw"]["stages"] == FILTERS and variants["raw"]["dedup"] == []
    control = report["control"]
    assert control["of"] == "refined" and control["removed_from"] == "raw" and control["target_share"] == 0.3
    assert abs(control["achieved_share"] - 0.3) < 0.1 and set(control["told_apart"]) == {"web", "reference"}
    for variant in variants.values():
        assert variant["epochs"] == pytest.approx(variant["tokens_trained"] / variant["train_tokens"], rel=1e-3)
        for name in ("web", "reference"):
            entry = variant["eval"][name]
            assert len(entry["per_seed"]) == 2 and entry["seed_std"] is not None and entry["bits_per_byte"] > 0
            assert entry["bits_per_byte"] == pytest.approx(np.mean(entry["per_seed"]))
    # the same eval windows for every variant and seed
    windows = {json.loads((Path(d).parent / "train.json").read_text())["eval"]["web"]["tokens"]
               for v in variants.values() for d in v["model_dirs"]}
    assert len(windows) == 1
    assert set(report["ordering"]) == {"web", "reference"}

    table = (out / "ablation.md").read_text()
    for name in variants:
        assert f"| **{name}** |" in table
    assert "web bpb" in table and "reference bpb" in table and "mean over seeds" in table
    assert (out / "ablation.png").stat().st_size > 5000
    # every model card is filled from the run, its training data described by the variant's card
    for name, variant in variants.items():
        card = (Path(variant["model_dirs"][0]) / "README.md").read_text()
        assert "n/a" not in card and f"variants/{name}/README.md" in card and f"| {name} |" in card
        assert (out / "variants" / name / "README.md").read_text().startswith("---\n")
    assert "table:" in result.stdout and "refined:" in result.stdout


def test_every_pair_is_compared_document_by_document(ablation):
    from refinery.ablate.documents import document_tokens

    _, out, _ = ablation
    report = json.loads((out / "ablation.json").read_text())
    names = list(report["variants"])
    for set_name, comparisons in report["paired"].items():
        documents = len(document_tokens(out / "eval" / set_name))
        assert list(comparisons) == [f"{a} vs {b}" for i, a in enumerate(names) for b in names[i + 1:]]
        for c in comparisons.values():
            assert c["documents"] == documents and c["ci_low"] <= c["mean_difference"] <= c["ci_high"]
            assert len(c["seed_means"]) == 2 and c["mde"] > 0 and 0 < c["sign_p"] <= 1
            assert c["verdict"] in ("A better", "B better", "no difference detected at this budget")
            assert (c["verdict"] == "no difference detected at this budget") == (c["ci_low"] <= 0 <= c["ci_high"])
        # the per-document scores are the model's: its mean over documents tracks the windows' figure
        scores = json.loads((out / "variants" / "refined" / "train" / "seed-1" / "documents" / f"{set_name}.json").read_text())
        assert len(scores["bits"]) == documents and all(b > 0 for b in scores["bytes"])
    table = (out / "ablation.md").read_text()
    assert "## Paired comparisons, document by document" in table
    assert ("Positive control: told apart" in table) != ("The budget is too small to judge the filters" in table)
    repeated = max(v["epochs"] for v in report["variants"].values()) > 4
    assert ("**Repeated data.**" in table) == repeated


def test_held_out_documents_are_never_trained_on(ablation):
    from refinery import tokenizer as tk
    from refinery.minhash import normalize
    from refinery.mix import held_out_by_record_id
    from refinery.train import open_megatron

    tmp, out, _ = ablation
    tokenizer = tk.load(out / "tokenizer")

    def documents(folder: Path) -> list[str]:
        texts = []
        for idx in sorted(folder.glob("*.idx")):
            tokens = np.asarray(open_megatron(Path(str(idx)[:-4])))
            ends = np.flatnonzero(tokens == tk.eos_id(tokenizer))
            starts = np.concatenate(([0], ends[:-1] + 1))
            texts += [tokenizer.decode(tokens[s:e].tolist()) for s, e in zip(starts, ends)]
        return texts

    held = {normalize(t) for t in documents(out / "eval" / "web")}
    assert held
    for variant in ("raw", "filtered", "refined"):
        trained = {normalize(t) for t in documents(out / "variants" / variant / "tokens")}
        assert trained and not trained & held, variant
    # the reference set is exactly the records whose id hashes into the held-out part
    expected = [json.loads(line)["text"] for line in (tmp / "reference.jsonl").read_text().splitlines()
                if held_out_by_record_id(json.loads(line)["id"], 0.2)]
    assert documents(out / "eval" / "reference") == expected


def test_records_all_makes_every_curated_record_an_eval_document(ablation, tmp_path):
    from refinery.ablate.spec import ReferenceSet
    from refinery.ablate.tokenize import tokenize_reference

    tmp, out, _ = ablation
    path = str(tmp / "reference.jsonl")
    records = [json.loads(line) for line in (tmp / "reference.jsonl").read_text().splitlines()]
    every = tokenize_reference("every", path, ReferenceSet(name="every", paths=[path], records="all"), 0.2,
                               str(out / "tokenizer"), str(tmp_path))
    part = tokenize_reference("part", path, ReferenceSet(name="part", paths=[path]), 0.2,
                              str(out / "tokenizer"), str(tmp_path))
    assert every.records == every.documents == len([r for r in records if r["text"]]) > part.documents > 0


def test_a_second_run_reuses_finished_work(ablation):
    tmp, out, _ = ablation
    before = json.loads((out / "ablation.json").read_text())
    again = run_cli_inprocess("ablate", tmp / "ablation.yaml", "--output", out, "--scheduler", "sync")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("done before, reused") == 8
    after = json.loads((out / "ablation.json").read_text())
    for name, variant in before["variants"].items():
        assert after["variants"][name]["eval"] == variant["eval"]
        assert after["variants"][name]["train_tokens"] == variant["train_tokens"]
    assert after["paired"] == before["paired"] and after["control"] == before["control"]  # the same table
    assert (out / "ablation.md").read_text().count("| refined vs degraded |") == 2


def test_a_killed_tokenization_resumes_without_redoing_finished_shards(ablation):
    """As if `refinery ablate` was killed while one shard was being tokenized: its marker and token
    files are gone. The rerun tokenizes that shard again, to the same bytes, and no other."""
    tmp, out, _ = ablation
    markers = sorted((out / "_markers" / "ablate" / "tokenize").glob("*.done"))
    assert len(markers) >= 2
    victim = markers[0].name.removesuffix(".done")
    token_files = [p for p in [*out.glob("variants/*/tokens/*"), *out.glob("eval/*/*")] if p.suffix in (".bin", ".idx")]
    others = {p: p.stat().st_mtime_ns for p in token_files if p.stem != victim}
    redone = {p: p.read_bytes() for p in token_files if p.stem == victim}
    assert others and redone
    markers[0].unlink()
    for path in redone:
        path.unlink()
    again = run_cli_inprocess("ablate", tmp / "ablation.yaml", "--output", out, "--scheduler", "sync")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in others} == others  # finished shards were not redone
    assert {p: p.read_bytes() for p in redone} == redone and markers[0].exists()
    assert "tokenizer: training" not in again.stderr and again.stderr.count("done before, reused") == 8


@pytest.mark.parametrize("overrides, key", [
    ({"variants": [{"name": "raw", "stages": ["extract", "no_such_stage"]}, {"name": "refined"}]},
     "variants[0] (raw).stages"),
    ({"eval": [{"name": "web", "variant": "nope"}]}, "eval[0] (web).variant"),
    ({"eval": [{"name": "web", "variant": "refined", "records": "all"}]}, "eval[0] (web)"),
    ({"train": {"seed": 3}}, "train.seed"),
    ({"seeds": []}, "seeds"),
    ({"model": {"hidden_size": 30, "heads": 4}}, "model.heads"),
    ({"control": {"of": "nope"}}, "control.of"),
    ({"control": {"name": "raw"}}, "control.name"),
    ({"preset": "tpu"}, "preset"),
])
def test_bad_ablation_config_names_the_key(tmp_path, overrides, key):
    result = run_cli_inprocess("ablate", ablation_config(tmp_path, **overrides), "--output", tmp_path / "out")
    assert result.returncode == 2
    assert result.stderr.startswith(f"refinery: config error: {key}:"), result.stderr


def test_the_shipped_ablation_config_is_valid():
    from refinery.ablate import parse_ablation
    from refinery.config import read_yaml

    path = REPO / "configs" / "ablation.yaml"
    spec = parse_ablation(read_yaml(path), str(path))  # its paths are from configs/
    assert [v.name for v in spec.variants] == ["raw", "filtered", "refined"]
    assert spec.model.model_dump() == read_yaml(REPO / "configs" / "train" / "tiny-falcon.yaml")["model"]
    assert spec.control.enabled and spec.control.share == 0.3


def test_presets_set_the_model_and_the_budget(tmp_path):
    from refinery.ablate import parse_ablation
    from refinery.ablate.spec import PRESETS, apply_preset
    from refinery.config import read_yaml

    raw = read_yaml(ablation_config(tmp_path))
    for name, values in PRESETS.items():
        spec = parse_ablation(apply_preset(raw, name), str(tmp_path / "ablation.yaml"))
        assert spec.preset == name and spec.model.layers == values["model"]["layers"]
        assert spec.train.tokens == values["train"]["tokens"]
    small, large = (parse_ablation(apply_preset(raw, p), "") for p in ("cpu-small", "cpu-large"))
    assert large.train.tokens == 4 * small.train.tokens and large.model.layers == small.model.layers + 2
    # a config's own `preset:` key: its own settings win over the preset's
    own = {key: value for key, value in raw.items() if key != "model"}
    spec = parse_ablation({**own, "preset": "cpu-large", "train": {**raw["train"], "tokens": 5000}}, "")
    assert spec.model.layers == 4 and spec.train.tokens == 5000


def test_the_gpu_preset_trains_on_the_cpu_at_a_tiny_size(tmp_path):
    """No GPU here: the gpu preset's settings, its size cut down, run end to end on the CPU."""
    from refinery.ablate.spec import PRESETS
    from refinery.config import read_yaml

    raw = read_yaml(ablation_config(tmp_path))
    gpu = PRESETS["gpu"]
    raw["train"] = {**raw["train"], **{k: v for k, v in gpu["train"].items() if k not in ("tokens", "batch_size",
                                                                                          "eval_every", "checkpoint_every")},
                    "eval_every": 10, "checkpoint_every": 10}
    raw["model"] = {"layers": 2, "hidden_size": 36, "heads": 9, "seq_len": 32}  # the preset's head width shape, tiny
    raw["variants"] = raw["variants"][::2]
    raw["seeds"] = [1]
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = run_cli_inprocess("ablate", path, "--output", tmp_path / "out", "--scheduler", "sync")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert report["device"] == "cpu" and set(report["variants"]) == {"raw", "refined", "degraded"}

