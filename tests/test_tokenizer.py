"""tokenizer/ (Falcon-style byte-level BPE) and refinery/tokens.py (Megatron and datatrove shards)."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from refinery import tokenizer as tk
from refinery.tokens import TokenShardWriter
from support import run_cli_inprocess, shared_path


def curated_texts(name: str, limit: int) -> list[str]:
    path = shared_path("curated", f"{name}.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line)["text"] for _, line in zip(range(limit), lines)]


def sentences(lang: str) -> list[str]:
    return shared_path("multilingual", f"sentences-{lang}.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    texts = curated_texts("technical", 150) + curated_texts("code", 60) + sentences("en") + sentences("de")
    tokenizer = tk.train(texts, vocab_size=4000)
    folder = tmp_path_factory.mktemp("tok")
    tk.save(tokenizer, folder)
    return tokenizer, folder


@pytest.mark.shared
def test_special_tokens_are_ids_0_to_11(trained):
    tokenizer, _ = trained
    assert [tokenizer.id_to_token(i) for i in range(12)] == tk.SPECIAL_TOKENS
    assert tokenizer.token_to_id("<|endoftext|>") == tk.eos_id(tokenizer) == 11
    assert tokenizer.get_vocab_size() == 4000


@pytest.mark.shared
@pytest.mark.parametrize("lang", ["ru", "zh", "ja", "ar", "cs"])
def test_round_trip_of_other_scripts(trained, lang):
    tokenizer, _ = trained
    for text in sentences(lang)[:50]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


@pytest.mark.shared
def test_round_trip_keeps_code_whitespace(trained):
    tokenizer, _ = trained
    for text in curated_texts("code", 80)[60:] + ["\tif x:\n\t\treturn  1   \r\n\n\n  # ok \u00a0\u2003end\n"]:
        assert tokenizer.decode(tokenizer.encode(text).ids) == text


@pytest.mark.shared
def test_loads_with_transformers(trained):
    from transformers import PreTrainedTokenizerFast

    tokenizer, folder = trained
    fast = PreTrainedTokenizerFast.from_pretrained(str(folder))
    text = curated_texts("technical", 151)[-1]
    assert fast(text)["input_ids"] == tokenizer.encode(text).ids
    assert fast.eos_token_id == 11 and fast.decode(fast(text)["input_ids"]) == text


def test_cli_trains_on_a_run(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = tmp_path / "run" / "documents"
    docs.mkdir(parents=True)
    pq.write_table(pa.table({"text": [f"document number {n} says hello to the tokenizer" for n in range(200)]}),
                   docs / "a.parquet")
    result = run_cli_inprocess("tokenizer", "train", tmp_path / "run", "--output", tmp_path / "tok",
                               "--vocab-size", "300")
    assert result.returncode == 0, result.stderr
    assert tk.load(tmp_path / "tok").token_to_id(">>TITLE<<") == 0
    bad = run_cli_inprocess("tokenizer", "train", tmp_path / "nowhere", "--output", tmp_path / "tok")
    assert bad.returncode == 2 and bad.stderr.startswith("refinery: config error: inputs:")


# --- token shards -------------------------------------------------------------------------------

def read_megatron(prefix: Path) -> list[list[int]]:
    """An independent reader, from the format's description (Megatron-LM indexed_dataset.py)."""
    codes = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32,
             8: np.uint16}
    idx = prefix.with_suffix(".idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    version, = struct.unpack_from("<Q", idx, 9)
    code, = struct.unpack_from("<B", idx, 17)
    sequences, documents = struct.unpack_from("<QQ", idx, 18)
    assert version == 1 and documents == sequences + 1
    offset = 34
    lengths = np.frombuffer(idx, dtype="<i4", count=sequences, offset=offset)
    offset += 4 * sequences
    pointers = np.frombuffer(idx, dtype="<i8", count=sequences, offset=offset)
    offset += 8 * sequences
    doc_index = np.frombuffer(idx, dtype="<i8", count=documents, offset=offset)
    assert offset + 8 * documents == len(idx)
    assert doc_index.tolist() == list(range(documents))
    data = prefix.with_suffix(".bin").read_bytes()
    dtype = np.dtype(codes[code]).newbyteorder("<")
    return [np.frombuffer(data, dtype=dtype, count=int(n), offset=int(p)).tolist() for n, p in zip(lengths, pointers)]


def read_datatrove(path: Path, token_size: int) -> list[list[int]]:
    """datatrove's own reader, DatatroveFolderDataset, with one window holding the whole file;
    documents are split where the position counter (from the .ds.index file) restarts at 0."""
    from datatrove.utils.dataset import DatatroveFolderDataset

    tokens = path.stat().st_size // token_size
    dataset = DatatroveFolderDataset(str(path.parent), seq_len=tokens - 1, filename_pattern=path.name,
                                     recursive=False, token_size=token_size, return_positions=True)
    assert len(dataset) == 1
    window = dataset[0]
    docs: list[list[int]] = []
    for token, position in zip(window["input_ids"].tolist(), window["positions"].tolist()):
        if position == 0:
            docs.append([])
        docs[-1].append(token)
    return docs


@pytest.mark.shared
@pytest.mark.parametrize("vocab_size, token_size", [(4000, 2), (100_000, 4)])
def test_shards_round_trip(trained, tmp_path, vocab_size, token_size):
    tokenizer, _ = trained
    texts = curated_texts("technical", 20) + sentences("ja")[:20] + ["", "x"]
    expected = [tokenizer.encode(t).ids + [tk.eos_id(tokenizer)] for t in texts]
    writer = TokenShardWriter(tmp_path, "part-00000", vocab_size=vocab_size, tokenizer_name="test")
    for ids in expected:
        writer.add(ids)
    files = writer.close()
    assert read_megatron(tmp_path / "part-00000") == expected
    assert read_datatrove(Path(files["ds"]), token_size) == expected
    metadata = Path(files["ds_metadata"]).read_text().splitlines()
    assert metadata[0] == f"test|{token_size}" and int(metadata[1]) == sum(map(len, expected))
    assert not list(tmp_path.glob("*refinery-tmp*"))


def test_token_ids_must_fit_the_dtype(tmp_path):
    writer = TokenShardWriter(tmp_path, "p", vocab_size=65024)
    with pytest.raises(ValueError):
        writer.add([70000])


def test_a_shard_that_fails_while_closing_leaves_nothing(tmp_path, monkeypatch):
    """A full disk while the index files are renamed into place: abort() removes the temporaries
    and any file already placed, so no index is left without its data."""
    import errno
    import os

    writer = TokenShardWriter(tmp_path, "part-00000", vocab_size=65024)
    writer.add([5, 6, 11])
    real_replace, calls = os.replace, []

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_fail)
    with pytest.raises(OSError):
        writer.close()
    monkeypatch.undo()
    writer.abort()
    assert len(calls) == 3 and not list(tmp_path.iterdir())
