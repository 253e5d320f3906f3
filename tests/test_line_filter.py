"""line_filter: RefinedWeb's line-wise corrections, on real lines from ../shared and on small cases."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from refinery.config import ConfigError, parse_config
from refinery.document import Document, Drop
from refinery.stages import STAGES
from refinery.stages.line_filter import (EMPTY_AFTER_CORRECTIONS, RULES, TOO_MANY_LINES_REMOVED, LineFilter,
                                LineFilterConfig, count_words)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
WEB = SHARED / "web"

# trafilatura as the pipeline's extract stage runs it (configs/english.yaml) ...
PIPELINE = dict(favor_precision=True, include_comments=False, include_tables=True)
# ... and in its default recall mode with comments, where English comment counters survive.
RECALL = dict(favor_precision=False, include_comments=True, include_tables=True)

# (rule or None for "kept", extraction, shard, document language, exact line, url)
REAL_LINES = [
    ("uppercase", "pipeline", "dev-00001", "en", "OAF GALLERY BAR, SYDNEY",
     "https://tonedeaf.thebrag.com/record-of-the-week-luboku-pale-blue-dot-lift-off/"),
    ("uppercase", "pipeline", "dev-00002", "en", "DISAPPOINTING NIGHT FOR ‘IRISHMAN’",
     "https://www.reuters.com/article/us-awards-sag/parasite-scores-upset-at-sag-awards-boosting-oscar-chances-idUSKBN1ZI0EH"),
    ("uppercase", "pipeline", "dev-00000", "en", "RECIPE NOTES",
     "https://www.foxyfolksy.com/chocolate-buttercream-frosting-without-powdered-sugar-ermine-icing/"),
    ("numeric", "pipeline", "dev-00003", "de", "| 9 | 10 | 11 | 12 | 13 | 14 | 15 |",
     "http://www.villacc.de/ferienvilla/119/Villa-Galaxy"),
    ("numeric", "pipeline", "dev-00000", "en", "- 4%",
     "https://www.bettycrocker.com/recipes/easy-pineapple-upside-down-cake/c4d3321d-fad9-41cb-8f29-8d91a4279b07"),
    ("numeric", "pipeline", "dev-00000", "en", "(773) 942-6384",
     "https://chicagoreader.com/food-drink/18th-street-distillery-new-spirits/"),
    ("counter", "recall", "dev-00002", "en", "0 comments",
     "https://www.standard.co.uk/news/uk/turkey-poland-caribbean-islands-added-to-uk-quarantine-list-a4561256.html"),
    ("counter", "recall", "dev-00000", "en", "1 Comment",
     "https://www.voice-online.co.uk/news/features-news/2023/11/03/code-of-the-elites/"),
    ("counter", "recall", "dev-00001", "en", "9 Comments",
     "https://businessjargons.com/leadership-styles.html"),
    ("counter", "pipeline", "dev-00001", "de", "3 Kommentare",
     "https://www.holzwerken.net/blog/dominik-ricker/perfekte-schnitte-nach-riss-an-der-kreissaege"),
    ("counter", "recall", "dev-00000", "de", "Kommentare (0)",
     "https://apolut.net/interview-mit-schriftstellerin-sonja-silberhorn/"),
    ("single_word", "pipeline", "dev-00000", "en", "Summary",
     "https://www.healthline.com/nutrition/ways-to-measure-body-fat"),
    ("single_word", "pipeline", "dev-00002", "en", "Pros:",
     "https://www.pluralsight.com/tech-blog/managing-python-environments/"),
    ("single_word", "pipeline", "dev-00000", "en", "Ingredients",
     "https://elavegan.com/peanut-butter-truffles/"),
    ("nav", "pipeline", "dev-00002", "en", "Read more: Offensive signs erected in South Belfast condemned",
     "https://www.belfastlive.co.uk/news/belfast-news/dup-councillor-says-offensive-signs-28035373"),
    ("nav", "pipeline", "dev-00000", "en", "Read More on The Sun",
     "https://www.thesun.co.uk/tvandshowbiz/24604410/linda-nolan-heartbreaking-update-cancer-battle-memory-loss/"),
    ("nav", "pipeline", "dev-00001", "en", "Sign up for the CorkBeo newsletter",
     "https://www.corkbeo.ie/news/local-news/level-3-live-cork-ireland-19056312"),
    ("nav", "pipeline", "dev-00001", "en", "Newsletter Signup",
     "https://www.boston.com/news/crime/2023/11/08/feds-alleged-sex-ring-drew-politicians-business-execs-to-brothels-in-mass/?p1=hp_primary"),
    ("nav", "pipeline", "dev-00002", "en", "Skip to content",
     "https://people.com/mina-starsiak-hawk-posts-sweet-birthday-tribute-to-her-husband-8386194"),
    ("nav", "pipeline", "dev-00000", "en", "View More ▸",
     "https://theweek.com/us/1023253/julie-chavez-rodriguez-the-woman-behind-bidens-big-bid-in-2024"),
    ("nav", "pipeline", "dev-00000", "de", "Mehr zum Thema auf UEPO.de",
     "https://uepo.de/2020/04/26/digitales-woerterbuch-der-deutschen-sprache-redaktion-erstellt-glossar-zur-corona-pandemie/"),
    # Kept: a headline that names a login, a headline with "share", a title-case heading.
    (None, "pipeline", "dev-00003", "en", "Meta Outage Causes Login and Loading Problems",
     "http://8a06ea0fb82c.example.org/kulu-media.com.meta-outage.html"),
    (None, "pipeline", "dev-00001", "en", "Cork County Council share update on services",
     "https://www.corkbeo.ie/news/local-news/level-3-live-cork-ireland-19056312"),
    (None, "pipeline", "dev-00000", "en", "Decreasing array allocations",
     "https://www.schneems.com/2018/10/09/pair-with-me-rubocop-cop-that-detects-duplicate-array-allocations/"),
]


def _shard(name: str) -> Path:
    path = WEB / f"{name}.warc.gz"
    if not path.is_file():
        pytest.skip(f"shared data not available: {path}")
    return path


@lru_cache(maxsize=None)
def _payloads(shard: str) -> dict[str, bytes]:
    """First payload for each URL of REAL_LINES in one shard (one pass over the file)."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    wanted = {url for _, _, s, _, _, url in REAL_LINES if s == shard}
    found: dict[str, bytes] = {}
    with open(_shard(shard), "rb") as handle:
        for record in ArchiveIterator(handle, record_types=WarcRecordType.response):
            url = record.headers.get("WARC-Target-URI")
            if url in wanted and url not in found:
                found[url] = record.reader.read()
                if len(found) == len(wanted):
                    break
    return found


@lru_cache(maxsize=None)
def real_text(shard: str, url: str, mode: str) -> str:
    import trafilatura

    payload = _payloads(shard).get(url)
    assert payload is not None, f"{url} not in {shard}"
    settings = PIPELINE if mode == "pipeline" else RECALL
    text = trafilatura.extract(payload.decode("utf-8", "replace"), url=url, deduplicate=False, **settings)
    return (text or "").strip()


def stage(**params) -> LineFilter:
    s = LineFilter(LineFilterConfig(**params))
    s.setup()
    return s


def doc(text: str, language: str = "en") -> Document:
    return Document(id="d", url="https://example.org/", text=text, language=language)


PROSE = [
    "The council met on Tuesday evening to discuss the new budget for the coming year.",
    "Members agreed that the library would keep its opening hours through the winter months.",
    "A final vote on the remaining items is expected at the next meeting in early March.",
]


# --- real lines from ../shared/data/web ---------------------------------------------------

@pytest.mark.shared
@pytest.mark.parametrize("rule, mode, shard, language, line, url", REAL_LINES,
                         ids=[f"{c[0] or 'kept'}:{c[4][:30]}" for c in REAL_LINES])
def test_real_line(rule, mode, shard, language, line, url):
    text = real_text(shard, url, mode)
    assert line in [raw.strip() for raw in text.split("\n")], "the line is no longer in the extracted page"
    assert stage().corrector.rule(line, language) == rule


@pytest.mark.shared
def test_real_document_loses_nav_line_and_keeps_headline():
    url = "https://www.corkbeo.ie/news/local-news/level-3-live-cork-ireland-19056312"
    s = stage()
    out = s.process_doc(doc(real_text("dev-00001", url, "pipeline")))
    assert isinstance(out, Document)
    lines = out.text.split("\n")
    assert "Sign up for the CorkBeo newsletter" not in lines
    assert "Cork County Council share update on services" in lines
    assert s.extra_stats()["lines_removed"]["nav"] >= 1


@pytest.mark.shared
def test_real_document_over_budget_is_dropped():
    # A holiday-home page whose availability calendar is rows of day numbers: 70%+ of its words.
    s = stage()
    original = real_text("dev-00003", "http://www.villacc.de/ferienvilla/119/Villa-Galaxy", "pipeline")
    out = s.process_doc(doc(original, "de"))
    assert isinstance(out, Drop) and out.reason == TOO_MANY_LINES_REMOVED
    assert out.doc.text == original  # dropped documents keep their text for inspection


# --- one rule at a time ------------------------------------------------------------------

@pytest.mark.parametrize("line", ["RECIPE NOTES", "WASHINGTON — THE SENATE VOTED", "2024 - USA",
                                  "WELCOME OFFER: 80,000 Points"])
def test_uppercase_removed(line):
    assert stage().corrector.rule(line) == "uppercase"


@pytest.mark.parametrize("line", ["The Best Way To Do It", "NASA's Artemis II crew named today",
                                  "Top 10 Women Talking Sports", "2 A"])
def test_uppercase_kept(line):
    assert stage().corrector.rule(line) is None


def test_uppercase_threshold_is_configurable():
    assert stage(uppercase_max_fraction=0.9).corrector.rule("WELCOME OFFER: 80,000 Points") is None
    assert stage(uppercase_min_letters=5).corrector.rule("2024 - USA") is None


@pytest.mark.parametrize("line", ["1,203", "- 4%", "| 2 | 3 | 4 |", "$1,600", "12.03.2024 - 18:30", "(773) 942-6384"])
def test_numeric_removed(line):
    assert stage().corrector.rule(line) == "numeric"


@pytest.mark.parametrize("line", ["1/4 cup butter", "Chapter 12 of 20", "Top 10"])
def test_numeric_kept(line):
    assert stage().corrector.rule(line) is None


@pytest.mark.parametrize("line", ["12 likes", "3.4K shares", "1,203 views", "5 comments", "Followers: 12k",
                                  "- 5 Kommentare", "Comments (14)", "♥ 27 Likes", "42 commentaires", "5 min read"])
def test_counter_removed(line):
    assert stage().corrector.rule(line) == "counter"


@pytest.mark.parametrize("line", ["I got 12 likes on my first post and was thrilled",
                                  "The post drew 5 comments from readers in Cork"])
def test_counter_kept_inside_a_sentence(line):
    assert stage().corrector.rule(line) is None


@pytest.mark.parametrize("line", ["Ingredients", "Pros:", "I.", "* * *", "|---|---|", "},"])
def test_single_word_removed(line):
    assert stage().corrector.rule(line) == "single_word"


def test_two_words_kept_and_bullets_are_not_words():
    assert stage().corrector.rule("Chapter one") is None
    assert count_words("- home page") == 2
    assert count_words("* * *") == 0


@pytest.mark.parametrize("line", ["Read more…", "Read more...", "Sign in", "Log in", "3 items in cart",
                                  "Share on Facebook", "Skip to content", "Back to top", "Cookie settings",
                                  "- Follow us on Twitter", "Great recipe, thanks. Read more »", "© Cover Media"])
def test_nav_short_lines_removed(line):
    assert stage().corrector.rule(line) == "nav"


def test_nav_only_in_short_lines():
    long_line = "If you want to read more about the history of the bridge, the town archive has maps"
    assert count_words(long_line) >= 10
    assert stage().corrector.rule(long_line) is None
    assert stage().corrector.rule("Read more about the bridge") == "nav"
    assert stage(short_line_words=3).corrector.rule("Read more about the bridge") is None


def test_nav_patterns_per_language():
    s = stage()
    assert s.corrector.rule("Mehr zum Thema auf UEPO.de", "de") == "nav"
    assert s.corrector.rule("Mehr zum Thema auf UEPO.de", "en") is None
    assert s.corrector.rule("Lire la suite de l'article", "fr") == "nav"
    assert s.corrector.rule("Leer más noticias de hoy", "es") == "nav"
    assert s.corrector.rule("Read more stories here", "de") == "nav"  # English applies everywhere


def test_nav_phrase_mode_strips_only_the_phrase():
    s = stage(nav_action="phrase")
    text = "\n".join([*PROSE, "Great pizza in town. Read more…", "Sign in"])
    fix = s.corrector.correct(text)
    assert fix.text.split("\n")[-1] == "Great pizza in town."
    assert fix.lines_removed == {"nav": 1} and fix.lines_modified == 1
    assert fix.words_removed == 2 + 2


def test_rules_can_be_switched_off():
    s = stage(rules=["numeric"])
    assert s.corrector.rule("RECIPE NOTES") is None
    assert s.corrector.rule("1,203") == "numeric"


# --- documents -----------------------------------------------------------------------------

def test_document_corrected_under_budget():
    s = stage()
    text = "\n".join([PROSE[0], "12 likes", *PROSE[1:] * 3])
    out = s.process_doc(doc(text))
    assert isinstance(out, Document)
    assert "12 likes" not in out.text and out.text.startswith(PROSE[0])
    stats = s.extra_stats()
    assert stats["lines_removed"] == {rule: (1 if rule == "counter" else 0) for rule in RULES}
    assert stats["words_removed"] == 2 and stats["docs_corrected"] == 1


def test_document_over_budget_dropped():
    s = stage()
    text = "\n".join([PROSE[0], "SHARE THIS STORY NOW", "1,203 views", "Sign in"])
    out = s.process_doc(doc(text))
    assert isinstance(out, Drop) and out.reason == TOO_MANY_LINES_REMOVED
    assert out.doc.text == text
    assert stage(max_removed_word_fraction=1.0).process_doc(doc(text)).text == PROSE[0]


def test_document_with_nothing_left_is_empty():
    out = stage(max_removed_word_fraction=1.0).process_doc(doc("Menu\n12 likes\n\nRead more…"))
    assert isinstance(out, Drop) and out.reason == EMPTY_AFTER_CORRECTIONS


def test_untouched_document_keeps_its_exact_text():
    text = PROSE[0] + "\n\n\n" + PROSE[1] + "  "
    assert stage().process_doc(doc(text)).text == text


def test_blank_lines_do_not_pile_up_where_lines_went():
    fix = stage().corrector.correct("\n".join([PROSE[0], "", "12 likes", "", PROSE[1]]))
    assert fix.text == PROSE[0] + "\n\n" + PROSE[1]


def test_stats_are_ints_that_add_up():
    a, b = stage(), stage()
    a.process_doc(doc("\n".join([*PROSE * 10, "12 likes"])))
    b.process_doc(doc("\n".join([*PROSE * 10, "RECIPE NOTES"])))
    sa, sb = a.extra_stats(), b.extra_stats()
    assert set(sa) == set(sb) and set(sa["lines_removed"]) == set(RULES)
    assert all(isinstance(v, int) for v in sa["lines_removed"].values())
    assert all(isinstance(v, int) for k, v in sa.items() if k != "lines_removed")


def test_every_drop_uses_a_declared_reason():
    s = stage()
    texts = ["Menu", "\n".join(PROSE), "\n".join([PROSE[0], "1\n2\n3\n4\n5\n6"]), ""]
    for out in (s.process_doc(doc(t)) for t in texts):
        if isinstance(out, Drop):
            assert out.reason in LineFilter.reasons


# --- config --------------------------------------------------------------------------------

def test_registered_and_configurable_from_yaml():
    assert STAGES["line_filter"] is LineFilter
    config = parse_config({"name": "t", "stages": [{"line_filter": {
        "max_removed_word_fraction": 0.1, "nav_patterns": {"en": [r"^more stories\b"]}}}]})
    built = config.stages[0].build()
    built.setup()
    assert built.corrector.rule("More stories from Cork") == "nav"
    assert built.corrector.rule("Read more…") is None  # the list replaces the default


@pytest.mark.parametrize("params, key", [
    ({"nav_patterns": {"en": ["(unclosed"]}}, "nav_patterns"),
    ({"counter_words": ["likes("]}, "counter_words"),
    ({"nav_patterns": {"English": []}}, "nav_patterns"),
    ({"max_removed_word_fraction": 1.5}, "max_removed_word_fraction"),
    ({"rules": ["shouting"]}, "rules"),
    ({"uppercase_ratio": 0.5}, "uppercase_ratio"),
])
def test_bad_config_is_an_error(params, key):
    with pytest.raises(ConfigError) as err:
        parse_config({"name": "t", "stages": [{"line_filter": params}]})
    assert key in str(err.value)
