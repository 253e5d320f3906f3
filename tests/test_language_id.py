"""LanguageId (fastText lid.176) on real sentences from ../shared/data/multilingual."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError

from refinery.document import Document, Drop
from refinery.stages.language_id import LanguageId, LanguageIdConfig
from support import shared_path

SENTENCES_PER_DOC = 5


def sentences(lang: str) -> list[str]:
    path = shared_path("multilingual", f"sentences-{lang}.txt")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def documents(lang: str, limit: int | None = None) -> list[Document]:
    lines = sentences(lang)
    texts = [" ".join(lines[i:i + SENTENCES_PER_DOC]) for i in range(0, len(lines), SENTENCES_PER_DOC)]
    return [Document(id=f"{lang}-{n}", url=f"https://{lang}.example.org/{n}", text=t) for n, t in
            enumerate(texts[:limit])]


@pytest.fixture(scope="module")
def keep_all() -> LanguageId:
    stage = LanguageId(LanguageIdConfig(languages=["*"], threshold=0.0))
    stage.setup()
    return stage


def run(config: LanguageIdConfig, docs: list[Document]) -> tuple[list, LanguageId]:
    stage = LanguageId(config)
    stage.setup()
    out = []
    for start in range(0, len(docs), stage.batch_size):
        out.extend(stage.process_batch(docs[start:start + stage.batch_size]))
    stage.teardown()
    return out, stage


@pytest.mark.shared
@pytest.mark.parametrize("lang", ["en", "de", "fr", "es"])
def test_multi_sentence_documents_are_identified(keep_all, lang):
    docs = documents(lang)
    assert len(docs) >= 150
    out = keep_all.process_batch(docs)
    assert all(isinstance(o, Document) for o in out)
    correct = sum(o.language == lang for o in out)
    assert correct / len(out) >= 0.95, Counter(o.language for o in out).most_common(5)
    assert all(0.0 < o.language_score <= 1.0 for o in out)
    # most documents are confidently identified: RefinedWeb's threshold keeps them
    assert sum(o.language_score >= 0.65 for o in out if o.language == lang) / len(out) >= 0.95


@pytest.mark.shared
@pytest.mark.parametrize("lang", ["it", "pt", "nl", "pl", "ru", "zh", "ja", "ar"])
def test_other_languages_are_identified(keep_all, lang):
    out = keep_all.process_batch(documents(lang, limit=60))
    assert sum(o.language == lang for o in out) / len(out) >= 0.95


@pytest.mark.shared
def test_predict_folds_newlines(keep_all):
    text = "\n".join(sentences("de")[:5])
    assert "\n" in text
    (language, score), = keep_all.predict([text])
    assert language == "de" and score > 0.65


@pytest.mark.shared
def test_languages_and_threshold_decide_the_reason():
    en, de, fr = documents("en", 40), documents("de", 40), documents("fr", 40)
    out, stage = run(LanguageIdConfig(languages=["en", "fr"], threshold=0.65), en + de + fr)
    outcome = [o.reason if isinstance(o, Drop) else o.language for o in out]
    assert outcome[:40].count("en") >= 38
    assert outcome[40:80] == ["language_not_kept"] * 40
    assert outcome[80:].count("fr") >= 38
    # the drop carries the language it was identified as
    assert {o.doc.language for o in out[40:80]} == {"de"}
    for o in out:
        if isinstance(o, Document):
            assert o.language in ("en", "fr") and o.language_score >= 0.65
        else:
            assert o.reason in LanguageId.reasons


@pytest.mark.shared
def test_threshold_drops_kept_languages_below_it():
    en, de = documents("en", 50), documents("de", 50)
    # a threshold of 1.0 keeps nothing: English is below it, German is not kept at all
    # (language_not_kept is decided before the threshold)
    out, _ = run(LanguageIdConfig(languages=["en"], threshold=1.0), en + de)
    reasons = [o.reason for o in out]
    assert all(isinstance(o, Drop) for o in out)
    assert reasons[:50].count("below_threshold") >= 48
    assert reasons[50:] == ["language_not_kept"] * 50
    # a threshold of 0 keeps every English document
    out, _ = run(LanguageIdConfig(languages=["en"], threshold=0.0), en)
    assert sum(isinstance(o, Document) for o in out) >= 48
    # the score decides exactly at the threshold
    scores = [o.language_score for o in run(LanguageIdConfig(languages=["*"], threshold=0.0), en)[0]]
    cut = sorted(scores)[len(scores) // 2]
    out, _ = run(LanguageIdConfig(languages=["en"], threshold=cut), en)
    for o, score in zip(out, scores):
        if isinstance(o, Document):
            assert score >= cut
        else:
            assert o.reason == "language_not_kept" or score < cut


def test_short_or_empty_texts_are_below_threshold():
    docs = [Document(id=str(i), url="", text=t) for i, t in enumerate(["", "   ", "12345 67890", "ok"])]
    out, _ = run(LanguageIdConfig(languages=["*"], threshold=0.65), docs)
    assert [o.reason for o in out] == ["below_threshold"] * 4


@pytest.mark.shared
def test_extra_stats_count_seen_and_kept():
    en, de, es = documents("en", 30), documents("de", 20), documents("es", 10)
    out, stage = run(LanguageIdConfig(languages=["en", "es"], threshold=0.65, batch_size=7), en + de + es)
    stats = stage.extra_stats()
    seen, kept = stats["languages_seen"], stats["languages_kept"]
    assert sum(seen.values()) == 60
    assert sum(kept.values()) == sum(isinstance(o, Document) for o in out)
    assert seen == dict(Counter((o.language if isinstance(o, Document) else o.doc.language) for o in out))
    assert kept == dict(Counter(o.language for o in out if isinstance(o, Document)))
    assert seen.get("de", 0) >= 19 and "de" not in kept
    assert set(kept) <= {"en", "es"}
    assert kept["en"] >= 28 and kept["es"] >= 9


def test_batch_size_comes_from_the_config():
    assert LanguageId(LanguageIdConfig(batch_size=7)).batch_size == 7
    assert LanguageId().batch_size == 256


@pytest.mark.parametrize("params", [
    {"threshold": -1}, {"threshold": 1.5}, {"languages": []}, {"languages": ["EN"]},
    {"languages": ["english"]}, {"languages": ["e1"]}, {"batch_size": 0}, {"treshold": 0.5},
])
def test_config_validation(params):
    with pytest.raises(ValidationError):
        LanguageIdConfig(**params)


def test_config_accepts_wildcard_and_iso_codes():
    assert LanguageIdConfig(languages=["*"]).languages == ["*"]
    assert LanguageIdConfig(languages=["en", "de", "yue"]).languages == ["en", "de", "yue"]
