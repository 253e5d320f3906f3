"""Falcon-style byte-level BPE: training (`refinery tokenizer train`) and loading.

Falcon's tokenizer is a byte-level BPE of 65,024 tokens whose first ids are special tokens:
`>>TITLE<<` ... `>>MIDDLE<<` at 0-10 and `<|endoftext|>` at 11. Byte-level BPE has no unknown
token and no normaliser, so any text (code whitespace, any script) decodes back exactly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

SPECIAL_TOKENS = [
    ">>TITLE<<", ">>ABSTRACT<<", ">>INTRODUCTION<<", ">>SUMMARY<<", ">>COMMENT<<", ">>ANSWER<<",
    ">>QUESTION<<", ">>DOMAIN<<", ">>PREFIX<<", ">>SUFFIX<<", ">>MIDDLE<<", "<|endoftext|>",
]
EOS_TOKEN = "<|endoftext|>"
FALCON_VOCAB_SIZE = 65024


def build_trainer_model(vocab_size: int = FALCON_VOCAB_SIZE):
    """An untrained tokenizer with Falcon's pipeline, and its BPE trainer.

    Pre-tokenisation splits runs of digits into groups of at most three, then applies the GPT-2
    byte-level regex without adding a prefix space, so `decode(encode(text)) == text`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d{1,3}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,  # first, so they get ids 0-11 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    return tokenizer, trainer


def train(texts: Iterable[str], vocab_size: int = FALCON_VOCAB_SIZE):
    """Trains the BPE on ``texts`` and returns a `tokenizers.Tokenizer`."""
    tokenizer, trainer = build_trainer_model(vocab_size)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    check_special_tokens(tokenizer)
    return tokenizer


def check_special_tokens(tokenizer) -> None:
    ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise ValueError(f"special tokens are not at ids 0-11: {dict(zip(SPECIAL_TOKENS, ids))}")


def load(path: str | Path):
    """A `tokenizers.Tokenizer` from a local tokenizer.json (ours or, e.g., Falcon's own)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    return Tokenizer.from_file(str(path))


def eos_id(tokenizer) -> int:
    """The id of ``<|endoftext|>`` in a loaded tokenizer: what ends every document's tokens."""
    token_id = tokenizer.token_to_id(EOS_TOKEN)
    if token_id is None:
        raise ValueError(f"the tokenizer has no {EOS_TOKEN} token")
    return token_id


def file_hash(path: str | Path) -> str:
    """sha256 of a tokenizer.json, recorded in manifests so shards name their tokenizer."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save(tokenizer, out_dir: str | Path) -> Path:
    """Writes tokenizer.json plus the config files PreTrainedTokenizerFast reads."""
    import json

    from refinery.io import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "tokenizer.json": tokenizer.to_str(pretty=True),
        "tokenizer_config.json": json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": EOS_TOKEN,
            "bos_token": EOS_TOKEN,
            "model_max_length": 2048,
            "additional_special_tokens": SPECIAL_TOKENS[:-1],
            "clean_up_tokenization_spaces": False,
        }, indent=2),
        "special_tokens_map.json": json.dumps({
            "eos_token": EOS_TOKEN, "bos_token": EOS_TOKEN, "additional_special_tokens": SPECIAL_TOKENS[:-1],
        }, indent=2),
    }
    for name, text in files.items():  # each file appears whole or not at all
        write_text_atomic(out / name, text)
    return out / "tokenizer.json"


def sample_texts(paths: Iterable[str], max_bytes: int, column: str = "text",
                 keep: Callable[[str], bool] | None = None, interleave: bool = False) -> Iterator[str]:
    """Texts from Parquet files (those ``keep`` accepts) until ``max_bytes`` of text were given:
    file after file, or with ``interleave`` one batch of 256 from each file in turn, so that every
    file is sampled when the budget is smaller than the files."""
    import pyarrow.parquet as pq

    def batches(path):
        for batch in pq.ParquetFile(path).iter_batches(columns=[column], batch_size=256):
            yield batch.column(0).to_pylist()

    readers = [batches(p) for p in paths]
    given = 0
    while readers:
        for reader in list(readers) if interleave else readers[:1]:
            texts = next(reader, None)
            if texts is None:
                readers.remove(reader)
                continue
            for text in texts:
                if given >= max_bytes:
                    return
                if keep is not None and not keep(text):
                    continue
                given += len(text.encode("utf-8", "surrogatepass"))
                yield text
