"""Gopher repetition and quality filters, and the word splitting they share.

Unit tests use small constructed texts. The parity test (marked shared and slow) extracts
the four web shards of ../shared/data and compares verdicts with datatrove's filters.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from refinery.config import ConfigError, parse_config
from refinery.document import Document, Drop
from refinery.text import STOP_WORDS, cached_words, is_word, specials, split_words, stop_words
from refinery.stages import STAGES
from refinery.stages.gopher_quality import GopherQuality, GopherQualityConfig, quality_stats
from refinery.stages.gopher_repetition import (RULES, GopherRepetition, GopherRepetitionConfig, RepetitionThresholds,
                                      repetition_stats)

SENTENCE = "The quick brown fox jumps over the lazy dog and the dog sleeps with the fox."
ARTICLE = (  # ordinary prose: no rule of either filter applies
    "The river town held its market on Saturday, as it has done for two hundred years. Farmers brought "
    "apples, cheese and honey to the square, while children watched a juggler near the old fountain.\n\n"
    "By noon the stalls were crowded. A baker sold out of rye bread before eleven, and the mayor gave a short "
    "speech about repairing the bridge that links both banks. Most visitors stayed until the evening concert "
    "that closed the day."
)


def doc(text: str, language: str = "en") -> Document:
    return Document(id="d", url="https://example.org/d", text=text, language=language)


def verdict(stage, text: str, language: str = "en") -> str | None:
    """None when the stage keeps the document, else its drop reason (checked to be declared)."""
    out = stage.process_doc(doc(text, language))
    if isinstance(out, Drop):
        assert out.reason in stage.reasons
        return out.reason
    return None


def repetition(**config) -> GopherRepetition:
    stage = GopherRepetition(GopherRepetitionConfig(**config))
    stage.setup()
    return stage


def quality(**config) -> GopherQuality:
    stage = GopherQuality(GopherQualityConfig(**config))
    stage.setup()
    return stage


def only(rule: str) -> dict:
    """Repetition thresholds with every rule but `rule` switched off."""
    return {name: None for name in RepetitionThresholds.model_fields if name != rule}


# ---- word splitting ------------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("Hello, world!", ["Hello", ",", "world", "!"]),
    ("I don't know; it's fine.", ["I", "do", "n't", "know", ";", "it", "'s", "fine", "."]),
    ("Don’t stop", ["Do", "n’t", "stop"]),
    ("dont im cannot", ["do", "nt", "i", "m", "can", "not"]),
    ("its well were", ["its", "well", "were"]),  # look like contractions, are not split
    ("Mr. Smith, e.g. U.S. A. etc. end.", ["Mr.", "Smith", ",", "e.g.", "U.S.", "A.", "etc", ".", "end", "."]),
    ("(see http://x.com/a-b).", ["(", "see", "http://x.com/a-b", ")", "."]),
    ("www.foo.com/a-b hello.World", ["www.foo.com/a-b", "hello", ".", "World"]),
    ("8.8.8.8/dns 192.168.0.1/x", ["8.8.8.8/dns", "192.168.0.1", "/", "x"]),  # private IPs are not URLs
    ("10km 7pm 3-4 1,000 a,b a/b", ["10", "km", "7", "pm", "3", "-", "4", "1,000", "a", ",", "b", "a", "/", "b"]),
    ("e-mail x--y a...b ...", ["e", "-", "mail", "x", "--", "y", "a", "...", "b", "..."]),
    ("#hash ## R&D C++ :) “Hello,”", ["#", "hash", "#", "#", "R&D", "C++", ":)", "“", "Hello", ",", "”"]),
    ("z.B. so (siehe oben):", ["z.", "B.", "so", "(", "siehe", "oben", "):"]),  # spaCy re-merges "z." and "):"
    ("  spaced \n\n out\t ", ["spaced", "out"]),
])
def test_split_words_matches_spacy_english(text, words):
    assert split_words(text, "en") == words


def test_split_words_language_rules():
    assert split_words("Die E-Mail kam am 1. Mai im Büro an/aus", "de") == \
        ["Die", "E-Mail", "kam", "am", "1.", "Mai", "im", "Büro", "an", "/", "aus"]
    assert split_words("im", "en") == ["i", "m"]  # an English contraction, not in German
    assert split_words("l'homme d’État", "fr") == ["l'", "homme", "d’", "État"]
    assert split_words("l'homme", "en") == ["l'homme"]
    assert split_words("", "en") == []


def test_cached_words_is_split_words():
    text = "Once more, with feeling."
    assert cached_words(text, "en") == tuple(split_words(text, "en"))
    assert cached_words(text, "en") is cached_words(text, "en")


def test_is_word_follows_datatrove_punctuation():
    assert is_word("a") and is_word("n't") and is_word("1,000") and is_word("#1")
    assert not is_word("...") and not is_word("—") and not is_word("#") and not is_word("।")


def test_stop_words_per_language():
    assert stop_words("en") == {"the", "be", "to", "of", "and", "that", "have", "with"}
    assert set(STOP_WORDS) == {"en", "de", "es", "fr", "it", "pt", "pl", "nl", "ro", "cs", "sv"}
    for language, words in STOP_WORDS.items():
        assert 8 <= len(words) <= 11 and all(w == w.lower() for w in words), language
    assert stop_words("fi") is None


def test_split_words_agrees_with_spacy_on_tricky_strings():
    spacy = pytest.importorskip("spacy")
    samples = [
        "He said: \"I'll go—now!\" (really?) [sic] {x} <b>bold</b> 3.5% $20 US$5 £3 20€ 5°C. 4+4 2^3",
        "Email me: foo.bar@example.com, or see https://example.org/path?q=1&r=2#frag...",
        "They'd've known; y'all c'mon, let's go. 'Cause it's 5 o'clock... Ph.D. Prof. Smith & Co.",
        "Items: •first –second — third; “quoted” «guillemets» „German“ ‘single’ 『CJK』",
        "U.S.A. N.Y.C. abc.Def ABC. aBc. x.y.z 1.2.3 v1.0-beta foo_bar __init__ <3 :-) ^_^",
        "Rock'n'roll, ma'am. I'm sure you're right; he's here, she'd know and we've seen it.",
        "Preis: 9,99 € (inkl. MwSt.) – jetzt 20% günstiger!!! Mehr Infos unter www.beispiel.de.",
        "🙂 emoji🙂 ©2024 ®™ — ⟦x⟧ 〔y〕 ¿Qué? ¡Sí! 10km/h 100m² 5kg 3MB 12:30 a:b a=b a<b",
    ]
    nlp = spacy.blank("en")
    for sample in samples:
        assert split_words(sample, "en") == [t.text for t in nlp(sample) if t.text.strip()], sample


def test_split_words_agrees_with_spacy_on_random_strings():
    spacy = pytest.importorskip("spacy")
    pieces = (list("aAzZéÜßЖж中ーা০1900.,;:!?'\"’‘“”()[]{}-–—/\\#@&%$€£+*^=<>_~…|§°²µ")
              + ["n't", "'s", "http://", "www.", ".com", "Mr.", "e.g.", ":)", "...", "--", "im", "dont", "🙂", "©",
                 "km", "US$", "°C", "1.", "a.m.", "@example.org", "?q=1", ":80", "192.168.0.1", "10.5"])
    rng = random.Random(11)
    nlp = spacy.blank("en")
    for _ in range(3000):
        sample = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        assert split_words(sample, "en") == [t.text for t in nlp(sample) if t.text.strip()], sample


def test_english_special_cases_are_spacy_tokenizer_exceptions():
    spacy = pytest.importorskip("spacy")
    from spacy.symbols import ORTH

    rules = spacy.blank("en").tokenizer.rules
    theirs = {orth: tuple(t[ORTH] for t in tokens) for orth, tokens in rules.items() if orth.strip()}
    assert specials("en") == theirs


# ---- Gopher repetition ---------------------------------------------------------------------

def test_repetition_reasons_are_declared_and_named():
    assert STAGES["gopher_repetition"] is GopherRepetition
    assert GopherRepetition.reasons == (
        "empty_text", "dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
        "top_2_gram", "top_3_gram", "top_4_gram",
        "dup_5_gram", "dup_6_gram", "dup_7_gram", "dup_8_gram", "dup_9_gram", "dup_10_gram")
    defaults = GopherRepetitionConfig()
    assert [getattr(defaults, rule) for rule in RULES] == [
        0.30, 0.20, 0.30, 0.20, 0.20, 0.18, 0.16, 0.15, 0.14, 0.13, 0.12, 0.11, 0.10]


def test_duplicate_lines_and_paragraphs_are_measured_as_datatrove_does():
    text = "one two\none two\nthree"
    stats = repetition_stats(text, split_words(text))
    assert stats["dup_line_frac"] == pytest.approx(1 / 3)
    assert stats["dup_line_char_frac"] == pytest.approx(len("one two") / len(text))
    assert stats["dup_para_frac"] == 0.0  # one paragraph
    text = "\nAlpha beta.\n\nAlpha beta.\n\n\nGamma delta.\n"
    stats = repetition_stats(text, split_words(text))
    assert stats["dup_para_frac"] == pytest.approx(1 / 3)
    assert stats["dup_para_char_frac"] == pytest.approx(len("Alpha beta.") / len(text))  # whole text's length
    # lines: the text split on "\n+", not stripped, so the empty first and last lines are duplicates
    assert stats["dup_line_frac"] == pytest.approx(2 / 5)


@pytest.mark.parametrize("rule, text", [
    ("dup_para_frac", "A first paragraph.\n\nA first paragraph.\n\nA second, longer paragraph here."),
    ("dup_para_char_frac", "Same words again.\n\nSame words again.\n\nA\n\nB\n\nC\n\nD\n\nE\n\nF"),
    ("dup_line_frac", "Menu\nHome\nMenu\nHome\nAn ordinary sentence that is long enough to dominate."),
    ("dup_line_char_frac", "a line repeated here\na line repeated here\nb\nc\nd\ne\nf\ng\nh\ni"),
    ("top_2_gram", "buy now buy now buy now and then some other words follow here"),
    ("top_3_gram", "one two three one two three one two three and then a few more words come"),
    ("top_4_gram", "a b c d a b c d x a b c d y words that pad it out a little more here now"),
    ("dup_5_gram", " ".join(["alpha beta gamma delta epsilon"] * 2 + [f"w{i}" for i in range(10)])),
])
def test_each_repetition_rule_drops(rule, text):
    assert verdict(repetition(**only(rule)), text) == rule
    assert verdict(repetition(**only(rule), **{rule: 0.99}), text) is None


def test_repetition_rules_apply_in_datatrove_order():
    text = "Home page\n\nHome page\n\nHome page\n\nSomething else entirely"
    assert verdict(repetition(), text) == "dup_para_frac"  # lines and n-grams repeat too
    assert verdict(repetition(dup_para_frac=None), text) == "dup_para_char_frac"
    assert verdict(repetition(dup_para_frac=None, dup_para_char_frac=None), text) == "dup_line_frac"
    assert verdict(repetition(), "") == "empty_text"
    assert verdict(repetition(), ARTICLE) is None


def test_top_ngram_counts_spaces_and_takes_the_first_of_equally_frequent():
    text = "the cat the cat the cat sat"
    assert repetition_stats(text, split_words(text))["top_2_gram"] == pytest.approx(3 * len("the cat") / len(text))
    text = "xx y a bbbb"  # every bigram occurs once: datatrove takes the first, "xx y"
    assert repetition_stats(text, split_words(text))["top_2_gram"] == pytest.approx(len("xx y") / len(text))


def reference_dup_ngram_chars(words: list[str], n: int) -> int:
    """datatrove's find_all_duplicate, written out plainly (n-grams compared as word tuples)."""
    seen, repeated, i = set(), 0, 0
    while i < len(words) - n + 1:
        gram = tuple(words[i:i + n])
        if gram in seen:
            repeated += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


def test_duplicate_ngrams_skip_past_each_repeat_like_datatrove():
    rng = random.Random(7)
    for _ in range(300):
        vocab = [f"w{k}" for k in range(rng.choice([2, 3, 5, 20]))]
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 80))]
        text = " ".join(words) or "x"
        stats = repetition_stats(text, words)
        for n in range(5, 11):
            assert stats[f"dup_{n}_gram"] * len(text) == pytest.approx(reference_dup_ngram_chars(words, n)), (words, n)


def test_repetition_thresholds_per_language_and_yaml_config():
    text = "buy now buy now buy now and then some other words follow here"
    stage = repetition(per_language={"de": {"top_2_gram": None}})
    assert verdict(stage, text, "en") == "top_2_gram"
    assert verdict(stage, text, "de") == "top_3_gram"
    config = parse_config({"name": "t", "stages": [
        {"gopher_repetition": {"dup_line_frac": 0.5, "top_2_gram": None, "per_language": {"de": {"dup_5_gram": 0.2}}}},
        {"gopher_quality": {"min_words": 10, "stop_words": {"en": ["the"]}}},
    ]})
    assert config.stages[0].config.dup_line_frac == 0.5 and config.stages[0].config.top_2_gram is None
    assert config.stages[1].config.min_words == 10
    for bad in ({"dup_lines": 0.3}, {"dup_line_frac": 1.5}, {"per_language": {"de": {"top_5_gram": 0.2}}}):
        with pytest.raises(ConfigError, match="gopher_repetition"):
            parse_config({"name": "t", "stages": [{"gopher_repetition": bad}]})


# ---- Gopher quality ------------------------------------------------------------------------

def test_quality_reasons_are_declared_and_named():
    assert STAGES["gopher_quality"] is GopherQuality
    assert GopherQuality.reasons == (
        "too_few_words", "too_many_words", "mean_word_length_low", "mean_word_length_high", "too_many_hashes",
        "too_many_ellipses", "too_many_bullet_lines", "too_many_ellipsis_lines", "too_few_alpha_words",
        "too_few_stop_words")
    c = GopherQualityConfig()
    assert (c.min_words, c.max_words, c.min_mean_word_length, c.max_mean_word_length, c.max_hash_word_ratio,
            c.max_ellipsis_word_ratio, c.max_bullet_lines_ratio, c.max_ellipsis_lines_ratio,
            c.min_alpha_words_ratio, c.min_stop_words) == (50, 100_000, 3, 10, 0.1, 0.1, 0.9, 0.3, 0.8, 2)


PROSE = "\n".join([SENTENCE] * 4)  # 64 words, mean length 3.75, stop words the, and, with


@pytest.mark.parametrize("reason, text, config", [
    ("too_few_words", "Hello there, world.", {}),
    ("too_many_words", PROSE, {"max_words": 60}),
    ("mean_word_length_low", "ab " * 60, {}),
    ("mean_word_length_high", "abcdefghijk " * 60, {}),
    ("too_many_hashes", PROSE + " #tag" * 10, {}),
    ("too_many_ellipses", PROSE.replace("lazy", "lazy...") + " wait... " * 6 + "the end", {}),
    ("too_many_bullet_lines", "\n".join("- " + SENTENCE for _ in range(4)), {}),
    ("too_many_ellipsis_lines", "\n".join([SENTENCE] * 6 + ["The end of it…"] * 3), {}),
    ("too_few_alpha_words", PROSE + " 2024" * 20, {}),
    ("too_few_stop_words", "Quick brown foxes jump over lazy dogs near rivers. " * 8, {}),
])
def test_each_quality_rule_drops(reason, text, config):
    assert verdict(quality(**config), text) == reason


def test_quality_keeps_prose_and_rules_can_be_switched_off():
    assert verdict(quality(), PROSE) is None
    assert verdict(quality(), ARTICLE) is None
    assert verdict(quality(min_words=None), "Hello there world and the rest") is None
    assert verdict(quality(max_bullet_lines_ratio=None), "\n".join("- " + SENTENCE for _ in range(4))) is None


def test_quality_measures_words_as_datatrove_does():
    text = "Hello, world... #1 - 2024\n- Tom's list…"
    words = split_words(text)
    assert words == ["Hello", ",", "world", "...", "#", "1", "-", "2024", "-", "Tom", "'s", "list", "…"]
    stats = quality_stats(text, words, stop_words("en"))
    real = ["Hello", "world", "1", "2024", "Tom", "'s", "list"]  # tokens with a non-punctuation character
    assert stats["words"] == len(real)
    assert stats["mean_word_length"] == pytest.approx(sum(map(len, real)) / len(real))
    assert stats["hash_word_ratio"] == pytest.approx(1 / len(words))  # over all tokens
    assert stats["ellipsis_word_ratio"] == pytest.approx(2 / len(words))
    assert stats["bullet_lines_ratio"] == pytest.approx(1 / 2)
    assert stats["ellipsis_lines_ratio"] == pytest.approx(1 / 2)
    assert stats["alpha_words_ratio"] == pytest.approx(5 / len(words))
    assert stats["stop_words"] == 0


def test_stop_words_follow_the_document_language():
    german = ("Der Hund und die Katze spielen mit dem Ball, der im Garten liegt, und das Wetter ist schön. " * 4)
    assert verdict(quality(), german, "de") is None
    assert verdict(quality(), german, "en") == "too_few_stop_words"
    assert verdict(quality(language="de"), german, "en") is None
    assert verdict(quality(stop_words={"de": ["Hund"]}, min_stop_words=1), german, "de") is None
    assert verdict(quality(stop_words={"de": ["nichts"]}), german, "de") == "too_few_stop_words"
    assert verdict(quality(), german, "fi") is None  # no list for Finnish: the rule does not apply
    assert verdict(quality(per_language={"de": {"min_words": 100}}), german, "de") == "too_few_words"


# ---- parity with datatrove on real web pages -------------------------------------------------

DATATROVE_REASONS = {
    "gopher_short_doc": "too_few_words", "gopher_long_doc": "too_many_words",
    "gopher_below_avg_threshold": "mean_word_length_low", "gopher_above_avg_threshold": "mean_word_length_high",
    "gopher_too_many_hashes": "too_many_hashes", "gopher_too_many_ellipsis": "too_many_ellipses",
    "gopher_too_many_bullets": "too_many_bullet_lines", "gopher_too_many_end_ellipsis": "too_many_ellipsis_lines",
    "gopher_below_alpha_threshold": "too_few_alpha_words", "gopher_enough_stop_words": "too_few_stop_words",
    "empty": "empty_text", **{f"duplicated_{n}_n_grams": f"dup_{n}_gram" for n in range(5, 11)},
}


@pytest.fixture(scope="session")
def web_documents(shared_data, tmp_path_factory) -> list[tuple[str, str]]:
    """(id, text) of every document extracted from the four web shards, extraction only."""
    import pyarrow.parquet as pq

    from refinery.pipeline.run import execute
    from refinery.io import expand_inputs

    config = parse_config({"name": "gopher-parity", "input": {"paths": [str(shared_data / "web" / "*.warc.gz")]},
                           "run": {"dashboard": False}, "stages": [{"extract": {}}]})
    out = tmp_path_factory.mktemp("gopher-parity")
    execute(config, expand_inputs(config.spec.input.paths), str(out), scheduler="sync")
    rows = []
    for path in sorted(Path(out, "documents").glob("*.parquet")):
        rows += pq.read_table(path, columns=["id", "text"]).to_pylist()
    return [(row["id"], row["text"]) for row in rows]


@pytest.mark.shared
@pytest.mark.slow
def test_verdicts_agree_with_datatrove_on_web_pages(web_documents):
    pytest.importorskip("spacy")
    pytest.importorskip("datatrove")
    from datatrove.data import Document as DatatroveDocument
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
    from datatrove.utils.text import split_into_words

    assert len(web_documents) > 1500, "extraction of the four shards should give ~1,765 documents"
    theirs_filters = {"repetition": GopherRepetitionFilter(), "quality": GopherQualityFilter()}
    ours_stages = {"repetition": repetition(), "quality": quality()}
    theirs, ours = {}, {}
    split_into_words("warm up spaCy", "eng")

    started = time.perf_counter()
    for doc_id, text in web_documents:
        for name, f in theirs_filters.items():
            result = f.filter(DatatroveDocument(text=text, id=doc_id))
            theirs[name, doc_id] = None if result is True else DATATROVE_REASONS.get(result[1], result[1])
    their_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for doc_id, text in web_documents:
        for name, stage in ours_stages.items():
            ours[name, doc_id] = verdict(stage, text, "en")
    our_seconds = time.perf_counter() - started

    n = len(web_documents)
    report = [f"{n} documents; datatrove {1000 * their_seconds / n:.2f} ms/doc, "
              f"refinery {1000 * our_seconds / n:.2f} ms/doc (both filters)"]
    failed = []
    for name in ("repetition", "quality"):
        disagree = [(doc_id, text) for doc_id, text in web_documents
                    if (theirs[name, doc_id] is None) != (ours[name, doc_id] is None)]
        agreement = 1 - len(disagree) / n
        other_reason = sum(theirs[name, d] != ours[name, d] for d, _ in web_documents) - len(disagree)
        report.append(f"{name}: verdict agreement {agreement:.2%} ({len(disagree)} disagreements; "
                      f"{other_reason} dropped by both for different first rules)")
        for doc_id, text in disagree:
            words, their_words = split_words(text, "en"), split_into_words(text, "eng")
            if name == "repetition":
                stats, their_stats = repetition_stats(text, words), repetition_stats(text, their_words)
            else:
                stats = quality_stats(text, words, stop_words("en"))
                their_stats = quality_stats(text, their_words, stop_words("en"))
            changed = {k: (round(their_stats[k], 4), round(stats[k], 4)) for k in stats if stats[k] != their_stats[k]}
            report.append(f"  {doc_id}: datatrove {theirs[name, doc_id] or 'keep'}, refinery "
                          f"{ours[name, doc_id] or 'keep'}; stats (spaCy words, our words) {changed}")
        if agreement < 0.995:
            failed.append(name)
    print("\n".join(report))
    assert not failed, "\n".join(report)
    assert our_seconds < their_seconds / 2, "\n".join(report)
