"""LanguagePrefilter: skips extraction only for pages confidently in another language."""

from __future__ import annotations

import pytest

from refinery.document import Document, Drop
from refinery.stages.language_prefilter import LanguagePrefilter, LanguagePrefilterConfig
from support import article_html, shared_path


def page(lang: str, n: int, sentences_per_paragraph: int = 4, paragraphs: int = 3) -> Document:
    path = shared_path("multilingual", f"sentences-{lang}.txt")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    start = n * sentences_per_paragraph * paragraphs
    body = [" ".join(lines[start + p * sentences_per_paragraph:start + (p + 1) * sentences_per_paragraph])
            for p in range(paragraphs)]
    return Document(id=f"{lang}-{n}", url=f"https://{lang}.example.org/{n}", html=article_html(f"{lang} {n}", body))


def run(docs: list[Document], **config) -> list[Document | Drop]:
    stage = LanguagePrefilter(LanguagePrefilterConfig(**config))
    stage.setup()
    return stage.process_batch(docs)


@pytest.mark.shared
def test_other_languages_are_skipped_and_english_goes_on():
    docs = [page(lang, n) for lang in ("en", "de", "fr", "ja") for n in range(5)]
    out = run(docs, languages=["en"])
    kept = [d.id for d in out if not isinstance(d, Drop)]
    assert kept == [f"en-{n}" for n in range(5)]
    dropped = [d for d in out if isinstance(d, Drop)]
    assert all(d.reason == "other_language" and d.doc.language == d.doc.id[:2] for d in dropped)
    assert all(d.html for d in out if not isinstance(d, Drop))  # the HTML is left for the extractor


@pytest.mark.shared
def test_only_confident_long_guesses_skip_a_page():
    german = [page("de", n, sentences_per_paragraph=1, paragraphs=1) for n in range(10)]
    assert all(not isinstance(d, Drop) for d in run(german, languages=["en"], min_chars=2000))
    assert all(not isinstance(d, Drop) for d in run(german[:3], languages=["en"], threshold=1.0))
    assert all(not isinstance(d, Drop) for d in run(german, languages=["*"]))
    assert all(not isinstance(d, Drop) for d in run(german, languages=["de", "en"]))


def test_pages_without_text_go_on():
    docs = [Document(id="a", url="https://e.org/a", html=""), Document(id="b", url="https://e.org/b", html="<p>Hi</p>")]
    assert run(docs) == docs
