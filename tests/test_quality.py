"""Model-based quality: the classifier trainer, the quality_classifier stage (fastText and Hugging
Face models from elsewhere), and the corpus-wide quality_select cut-off."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from refinery.document import Document, Drop
from refinery.quality import select as rs
from refinery.quality.text import dclm_line
from support import REPO, read_documents, run_cli_subprocess, shared_path

GOOD = ["the committee published its annual report on the river basin and its long history",
        "a careful study of the chapter shows how the author builds the argument step by step",
        "the museum holds letters written by the scientist during the expedition of the century"]
BAD = ["click here buy now cheap deals free shipping best price subscribe today",
       "cookie policy accept all cookies login register cart checkout menu",
       "hot offer limited time only sign up now win prizes click the banner"]


def _labelled_lines(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        good = i % 2 == 0
        words = (rng.choice(GOOD) if good else rng.choice(BAD)).split()
        rng.shuffle(words)
        lines.append(("__label__hq " if good else "__label__cc ") + " ".join(words))
    return lines


@pytest.fixture(scope="module")
def fasttext_model(tmp_path_factory) -> Path:
    """A fastText model trained with the fasttext API directly, outside refinery, in a fresh
    interpreter: in a long pytest process its training has met NaN (state left by earlier tests),
    never in a new one."""
    import subprocess
    import sys

    folder = tmp_path_factory.mktemp("ft")
    (folder / "train.txt").write_text("\n".join(_labelled_lines(400)) + "\n")
    script = ("import sys, fasttext; fasttext.train_supervised(input=sys.argv[1], wordNgrams=2, epoch=25, lr=0.5, "
              "dim=16, bucket=50_000, thread=1, seed=3, verbose=0).save_model(sys.argv[2])")
    subprocess.run([sys.executable, "-c", script, str(folder / "train.txt"), str(folder / "model.bin")], check=True,
                   timeout=300)
    return folder / "model.bin"


def test_dclm_normalisation_lowercases_spaces_punctuation_and_folds_newlines():
    assert dclm_line("Hello, World!\nIt's  (really)\tfine.") == "hello , world ! it ' s ( really ) fine ."


def test_bigram_rows_are_the_rows_fasttext_averages(fasttext_model):
    from refinery.quality.features import sentence_rows
    from refinery.fasttext_model import load_fasttext

    model = load_fasttext(fasttext_model)
    for text in ["the committee published its report", "cookie policy é ü ß 中文 click", "unknownword another"]:
        rows = sentence_rows(model, text)
        assert np.allclose(model.get_input_matrix()[rows].mean(axis=0), model.get_sentence_vector(text), atol=1e-6)


def test_a_fasttext_model_trained_elsewhere_scores_identically_through_the_stage(fasttext_model):
    from refinery.fasttext_model import load_fasttext
    from refinery.stages.quality_classifier import QualityClassifier

    stage = QualityClassifier(QualityClassifier.Config(models=[{"name": "ft", "path": str(fasttext_model)}]))
    QualityClassifier.preflight(stage.config)
    stage.setup()
    texts = [*GOOD, *BAD, "Mixed: Click HERE for the committee's report!\n\nNew line."]
    docs = [Document(id=str(i), url="", text=t) for i, t in enumerate(texts)]
    out = stage.process_batch(docs)
    model = load_fasttext(fasttext_model)
    for doc in out:
        labels, probs = model.predict(dclm_line(doc.text), k=-1, threshold=0.0)
        assert doc.scores["quality_ft"] == float(probs[list(labels).index("__label__hq")])
    assert all(d.scores["quality_ft"] > 0.5 for d in out[:3]) and all(d.scores["quality_ft"] < 0.5 for d in out[3:6])

    # a threshold makes it a filter with its own reason
    stage = QualityClassifier(QualityClassifier.Config(models=[{"name": "ft", "path": str(fasttext_model),
                                                                "threshold": 0.5}]))
    stage.setup()
    out = stage.process_batch([Document(id=str(i), url="", text=t) for i, t in enumerate([*GOOD, *BAD])])
    assert [o.reason if isinstance(o, Drop) else "kept" for o in out] == ["kept"] * 3 + ["low_quality_ft"] * 3
    assert stage.reasons == ("low_quality_ft",)


def _tiny_hf_classifier(folder: Path, num_labels: int) -> Path:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(GOOD + BAD, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
                        id2label={i: name for i, name in enumerate(["low", "high"][:num_labels] if num_labels == 2
                                                                   else ["score"])},
                        label2id={name: i for i, name in enumerate(["low", "high"][:num_labels] if num_labels == 2
                                                                   else ["score"])})
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("num_labels", [2, 1])
def test_a_hugging_face_classifier_scores_as_transformers_does(tmp_path, num_labels):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from refinery.stages.quality_classifier import QualityClassifier

    folder = _tiny_hf_classifier(tmp_path / "hf", num_labels)
    config = QualityClassifier.Config(models=[{"name": "edu", "path": str(folder), "batch_size": 2, "max_length": 64,
                                               **({"positive_label": "high"} if num_labels == 2 else {})}])
    QualityClassifier.preflight(config)
    stage = QualityClassifier(config)
    stage.setup()
    texts = [*GOOD, *BAD, "short", " ".join(GOOD * 20)]  # one longer than max_length
    out = stage.process_batch([Document(id=str(i), url="", text=t) for i, t in enumerate(texts)])
    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    with torch.no_grad():
        for doc, text in zip(out, texts):
            logits = model(**tokenizer(text, truncation=True, max_length=64, return_tensors="pt")).logits[0]
            expected = float(logits[0]) if num_labels == 1 else float(torch.softmax(logits, -1)[1])
            assert abs(doc.scores["quality_edu"] - expected) < 1e-5


# --- bad input: one line naming the key, exit 2, before any work -------------------------------------

def _chain_config(tmp_path: Path, model: dict, select: dict | None = None, name: str = "q") -> Path:
    config = {"name": "q", "input": {"paths": [str(tmp_path / "docs.jsonl")], "format": "jsonl"},
              "stages": [{"quality_classifier": {"models": [model]}}],
              "dedup": [{"quality_select": select}] if select else []}
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n"
                                                 for i, t in enumerate(GOOD + BAD)))
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(config))
    return path


def test_bad_models_and_sources_are_one_line_and_exit_2(tmp_path, fasttext_model):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00not a model" * 1000)
    cases = [
        (_chain_config(tmp_path, {"name": "a", "path": str(garbage)}), "stages[0].quality_classifier.models[0].path"),
        (_chain_config(tmp_path, {"name": "a", "path": str(fasttext_model), "positive_label": "__label__good"}, name="b"),
         "stages[0].quality_classifier.models[0].positive_label"),
        (_chain_config(tmp_path, {"name": "a", "path": str(tmp_path / "missing.bin")}, name="c"),
         "stages[0].quality_classifier.models[0].path"),
        (_chain_config(tmp_path, {"name": "a", "path": str(fasttext_model)}, {"scores": ["b"], "keep_percent": 10},
                       name="d"),
         "dedup[0].quality_select.scores"),
    ]
    for config, key in cases:
        result = run_cli_subprocess("run", config, "--output", tmp_path / "out", "--dry-run")
        assert result.returncode == 2 and len(result.stderr_lines) == 1, result.stderr
        assert result.stderr_lines[0].startswith(f"refinery: config error: {key}:"), result.stderr
    assert not (tmp_path / "out").exists()

    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": "1", "text": "  "}) + "\n")
    (tmp_path / "c.yaml").write_text(json.dumps({
        "name": "c", "positives": [{"name": "ref", "paths": [str(empty)]}],
        "negatives": [{"name": "web", "paths": [str(tmp_path / "docs.jsonl")]}]}))
    result = run_cli_subprocess("classifier", "train", tmp_path / "c.yaml", "--output", tmp_path / "cout")
    assert result.returncode == 2 and len(result.stderr_lines) == 1, result.stderr
    assert result.stderr_lines[0].startswith("refinery: config error: positives[0] (ref).paths:")
    assert not (tmp_path / "cout").exists()


# --- the corpus-wide cut-off -------------------------------------------------------------------------

def test_radix_select_finds_the_exact_cutoff_with_ties_and_weights():
    rng = np.random.default_rng(5)
    n = 5000
    values = np.round(rng.random(n), 2)  # many ties
    hi = rs.order_bits(values)
    lo = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    for weights in (np.ones(n, dtype=np.int64), rng.integers(1, 500, n)):
        total = int(weights.sum())
        for percent in (0.01, 10, 33.3, 50, 99.99, 100):
            target = rs.target_weight(total, percent)
            shards = np.array_split(np.arange(n), 7)
            prefix, above = [], 0
            for _ in range(rs.ROUNDS):
                counts = sum(rs.histogram(hi[s], lo[s], weights[s], prefix) for s in shards)
                chosen, above = rs.choose_bin(counts, above, target)
                prefix.append(chosen)
            cut = rs.Cutoff(*rs.key_from_bins(prefix), target, total)
            kept = cut.keeps(hi, lo)
            order = sorted(range(n), key=lambda i: (int(hi[i]), int(lo[i])), reverse=True)
            cumulative = np.cumsum(weights[order])
            last = int(np.searchsorted(cumulative, target))  # the document that reaches the target
            assert set(np.flatnonzero(kept)) == set(order[:last + 1])
            assert kept.sum() == last + 1 and weights[kept].sum() - weights[order[last]] < target <= weights[kept].sum()


def test_order_bits_keep_the_order_of_floats():
    values = np.array([-np.inf, -2.5, -1e-300, -0.0, 0.0, 1e-300, 0.5, 0.5000001, 3.0, np.inf])
    bits = rs.order_bits(values)
    assert all(bits[i] <= bits[i + 1] for i in range(len(bits) - 1)) and bits[3] == bits[4]
    assert rs.order_bits(np.array([np.nan]))[0] == rs.order_bits(np.array([-np.inf]))[0]


def test_several_scores_rank_by_the_mean_of_their_corpus_wide_percentiles():
    rng = np.random.default_rng(2)
    scores = np.column_stack([rng.random(1000), rng.normal(size=1000) * 50])  # unlike scales
    counts = np.stack([np.bincount(rs.score_bins(scores[:, j]), minlength=rs.BINS) for j in range(2)])
    table = rs.percentile_table(counts)
    combined = rs.combined_values(scores, table)
    for j in range(2):  # each score's percentile is its rank share, to the width of its bin
        exact = (np.argsort(np.argsort(scores[:, j])) + 0.5) / 1000
        assert np.abs(table[j][rs.score_bins(scores[:, j])] - exact).max() < 0.01
    exact_mean = np.mean([(np.argsort(np.argsort(scores[:, j])) + 0.5) / 1000 for j in range(2)], axis=0)
    assert np.abs(combined - exact_mean).max() < 0.01
    assert np.array_equal(rs.combined_values(scores[:, :1], None), scores[:, 0])


def _corpus(folder: Path, shards: int, n: int = 400) -> list[str]:
    rng = random.Random(11)
    docs = []
    for i in range(n):
        good = rng.random() < 0.5
        words = [w for _ in range(rng.randint(2, 8)) for w in (rng.choice(GOOD) if good else rng.choice(BAD)).split()]
        rng.shuffle(words)
        docs.append({"id": f"doc-{i:04d}", "text": " ".join(words) + f" {i}"})
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with gzip.open(folder / f"part-{s:02d}.jsonl.gz", "wt") as handle:
            for doc in docs[s::shards]:
                handle.write(json.dumps(doc) + "\n")
    return [str(p) for p in sorted(folder.glob("*.jsonl.gz"))]


@pytest.mark.slow
def test_the_cutoff_is_global_and_the_same_for_1_or_16_shards_and_1_or_2_workers(tmp_path, fasttext_model):
    from refinery import tokenizer as tk

    texts = [json.loads(line)["text"] for p in _corpus(tmp_path / "c1", 1) for line in gzip.open(p, "rt")]
    tokenizer_dir = tk.save(tk.train(texts, vocab_size=400), tmp_path / "tok").parent
    results = {}
    for by in ("documents", "tokens"):
        config = tmp_path / f"{by}.yaml"
        config.write_text(json.dumps({
            "name": "sel", "input": {"format": "jsonl"},
            "stages": [{"quality_classifier": {"models": [{"name": "ft", "path": str(fasttext_model)}]}}],
            "dedup": [{"exact_dedup": {}},
                      {"quality_select": {"scores": ["ft"], "keep_percent": 30, "by": by,
                                          **({"tokenizer_path": str(tokenizer_dir / "tokenizer.json")}
                                             if by == "tokens" else {})}}]}))
        for shards, workers in ((1, 1), (16, 2), (16, 1)):
            inputs = _corpus(tmp_path / f"c{shards}", shards)
            out = tmp_path / f"{by}-{shards}-{workers}"
            result = run_cli_subprocess("run", config, "--input", *inputs, "--output", out, "--workers", workers)
            assert result.returncode == 0, result.stderr[-3000:]
            table = read_documents(out)
            rows = sorted(zip(table["id"].to_pylist(), table["text"].to_pylist(), table["quality_ft"].to_pylist()))
            stats = json.loads((out / "stats.json").read_text())
            results[(by, shards, workers)] = (rows, stats["dedup"]["selection"])
        first = results[(by, 1, 1)]
        assert all(results[(by, s, w)][0] == first[0] for s, w in ((16, 2), (16, 1)))
        selection = first[1]
        assert selection["cutoff"] == results[(by, 16, 2)][1]["cutoff"]
        kept_scores = [r[2] for r in first[0]]
        assert min(kept_scores) >= selection["cutoff"]["value"]
        if by == "documents":
            assert selection["documents_kept"] == round(selection["documents_in"] * 0.3) == len(first[0])
            report = (tmp_path / "documents-16-2" / "report.html").read_text()
            assert "quality_select kept the top 30% of the documents by quality_ft" in report
        else:
            tokenizer = tk.load(tokenizer_dir / "tokenizer.json")
            weights = [len(tokenizer.encode(text, add_special_tokens=False).ids) for _, text, _ in first[0]]
            target = round(selection["weight_in"] * 0.3)
            # the document that reached the target ranks lowest of those kept: by score, then the tie hash
            docs = [Document(id=doc_id, url="", text=text) for doc_id, text, _ in first[0]]
            keys = list(zip(rs.order_bits(np.array([r[2] for r in first[0]])).tolist(), rs.tie_bits(docs).tolist()))
            last = min(range(len(weights)), key=lambda i: keys[i])
            assert sum(weights) == selection["weight_kept"] and sum(weights) - weights[last] < target <= sum(weights)


@pytest.mark.slow
def test_a_classifier_trained_on_the_shared_sources_reaches_auc_0_9(tmp_path):
    shared_path("web", "dev-00000.warc.gz"), shared_path("curated", "wikipedia.jsonl.gz")
    out = tmp_path / "classifier"
    result = run_cli_subprocess("classifier", "train", REPO / "configs" / "classifier.yaml", "--output", out,
                                "--workers", "2", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["heldout"]["auc"] >= 0.9
    assert metrics["documents"]["heldout"]["__label__hq"] > 100 and metrics["documents"]["heldout"]["__label__cc"] > 50
    features = json.loads((out / "features.json").read_text())
    assert len(features["positive"]) == len(features["negative"]) == 10
    card = (out / "MODEL_CARD.md").read_text()
    assert f"AUC: **{metrics['heldout']['auc']}**" in card and "seed 1" in card
    # the same config again: the model is not trained again
    before = (out / "model.bin").stat().st_mtime_ns
    result = run_cli_subprocess("classifier", "train", REPO / "configs" / "classifier.yaml", "--output", out,
                                "--workers", "2", timeout=900)
    assert result.returncode == 0 and (out / "model.bin").stat().st_mtime_ns == before
    assert pq.read_metadata(next((out / "sources" / "rw-raw" / "documents").glob("*.parquet"))).num_rows > 0
