"""What datatrove 0.10.1 needs to run offline here, shared by the benchmarks that time it."""

from __future__ import annotations


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
