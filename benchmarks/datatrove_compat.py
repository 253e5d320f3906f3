"""What datatrove 0.10.1 needs to run offline here, shared by the benchmarks that time it."""

from __future__ import annotations

import importlib.util
import sys
import types


def stub_tokenizers() -> None:
    """datatrove.pipeline.dedup imports `tokenizers` (for its exact-substring step), which is not
    installed here; an empty stand-in lets the MinHash stages import."""
    if "tokenizers" in sys.modules or importlib.util.find_spec("tokenizers") is not None:
        return
    stub = types.ModuleType("tokenizers")
    stub.Tokenizer = object
    proc = types.ModuleType("tokenizers.processors")
    proc.TemplateProcessing = object
    stub.processors = proc
    sys.modules["tokenizers"], sys.modules["tokenizers.processors"] = stub, proc


def split_tokenizer():
    """Whitespace words: datatrove's English word tokenizer needs nltk/spacy, absent here. Built
    lazily so that processes which never time datatrove never import it (dill pickles it by value)."""
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str):
            raise NotImplementedError

    return SplitTokenizer()
