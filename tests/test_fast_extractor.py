"""refinery's fast extractor (stages/fast_extractor.py): each rule on a page built for it, and its
quality on real pages of trafilatura's evaluation set against plain resiliparse."""

from __future__ import annotations

import importlib.util
import json

import pytest

from refinery.stages.fast_extractor import extract_fast
from refinery.stages.html_extract import extract_text
from support import REPO, shared_path

ARTICLE = [
    "The harbour committee published its long awaited report on the northern ferry on Tuesday evening, "
    "and it explains how the winter timetable will change for everyone who travels to the islands.",
    "Residents who attended the public meeting asked many questions about the cost of the new vessel, "
    "and the chair explained that most of the money comes from a regional fund for island transport.",
    "A second meeting is planned for the spring, when the committee will present detailed drawings of "
    "the new landing stage and answer the letters that residents send to the town office before March.",
]


def page(article: str, around: str = "", wrapper_class: str = "") -> str:
    return (f'<html><body><div class="{wrapper_class}"><header><a href="/">Harbour Town</a></header>'
            f"{around}<article>{article}</article>{around}</div></body></html>")


def paragraphs(texts=ARTICLE) -> str:
    return "".join(f"<p>{text}</p>" for text in texts)


def test_the_article_is_kept_and_what_surrounds_it_is_not():
    around = "<div class='teaser'><p>" + "Another story about the town council and its plans for the park. " * 3 + "</p></div>"
    text = extract_fast(page("<h1>Ferry timetable</h1>" + paragraphs(), around))
    assert text.splitlines() == ["Ferry timetable"] + ARTICLE
    assert "council" not in text


def test_boilerplate_class_names_inside_the_article_are_skipped():
    inside = (paragraphs(ARTICLE[:2]) + "<div class='related-posts'><p>" + "Read our story about the old lighthouse keeper. " * 3
              + "</p></div><div id='comments'><p>" + "Great article, thanks for writing it so clearly for us. " * 2
              + "</p></div>" + paragraphs(ARTICLE[2:]))
    text = extract_fast(page(inside))
    assert text.splitlines() == ARTICLE


def test_a_wrapper_class_that_names_boilerplate_does_not_cost_the_article():
    # "has-sidebar" on the page wrapper matches the "sidebar" rule; the container and its ancestors are safe
    assert extract_fast(page(paragraphs(), wrapper_class="layout has-sidebar")).splitlines() == ARTICLE
    # without a container the rule would remove everything, so the page is kept without the name rules
    no_container = f"<html><body><div class='has-sidebar'>{paragraphs()}</div></body></html>"
    assert extract_fast(no_container).splitlines() == ARTICLE


def test_link_lists_credits_and_lone_headings_are_dropped():
    article = (paragraphs(ARTICLE[:2]) + "<p>© Harbour Photo Agency</p>"
               + "<p><a href='/a'>Ferry news</a> | <a href='/b'>Island news</a> | <a href='/c'>Weather</a></p>"
               + paragraphs(ARTICLE[2:]) + "<h2>More from the harbour</h2><p><a href='/d'>Pier repairs begin next spring</a></p>")
    assert extract_fast(page(article)).splitlines() == ARTICLE


def test_short_lines_stay_between_good_ones_and_list_items_next_to_one():
    article = (paragraphs(ARTICLE[:1]) + "<p>Island prices</p><p>Return fare £12</p>" + paragraphs(ARTICLE[1:2])
               + "<ol><li>Two onions</li><li>A cup of rice</li></ol>" + paragraphs(ARTICLE[2:]) + "<p>Share this</p>")
    lines = extract_fast(page(article)).splitlines()
    assert "Island prices" in lines and "Return fare £12" in lines
    assert any("Two onions" in line for line in lines) and any("A cup of rice" in line for line in lines)
    assert "Share this" not in lines  # short, with no good line after it


def test_text_without_spaces_is_measured_in_characters():
    chinese = ["河北省文化厅组织的大型话剧在全省各市巡演活动自五月下旬开始先后在石家庄邢台邯郸等地演出引起强烈反响。",
               "这部话剧讲述了一个约定信守十五年的感人故事观众们在演出结束后久久不愿离去纷纷表示深受感动和鼓舞。"]
    assert extract_fast(page(paragraphs(chinese))).splitlines() == chinese


@pytest.mark.parametrize("html", ["", "no markup at all", "<html><head><title>t</title></head></html>", "<p>",
                                  "<html><body>" + "<div>" * 5000 + "deep" + "</div>" * 5000 + "</body></html>",
                                  "\x00\ufffd<b\x01ody>\udcff"])
def test_odd_pages_give_text_or_nothing_and_never_raise(html):
    assert isinstance(extract_fast(html), str)


def test_same_page_same_text():
    html = page("<h1>Ferry timetable</h1>" + paragraphs())
    assert extract_fast(html) == extract_fast(html) == extract_text(html, "", "fast", True, True, False)


def load_harness():
    """benchmarks/extraction_quality.py, whose page reading and snippet scoring the test shares."""
    spec = importlib.util.spec_from_file_location("extraction_quality", REPO / "benchmarks" / "extraction_quality.py")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    return harness


@pytest.mark.slow
def test_on_real_pages_it_keeps_the_main_text_and_much_less_boilerplate_than_resiliparse():
    """On 150 pages of trafilatura's evaluation set (the full comparison with trafilatura is
    benchmarks/extraction_quality.py), the fast extractor finds nearly as many main-text snippets as
    resiliparse's main-content mode and keeps far fewer boilerplate snippets."""
    harness = load_harness()
    evaldata = json.loads(shared_path("extraction/trafilatura-evaldata.json").read_text())
    pages = harness.evaluation_pages(shared_path("web"), evaldata, limit=150)
    assert len(pages) >= 100
    entries = [entry for _, _, entry in pages]

    def scores(extractor: str) -> tuple[float, float]:
        result = harness.snippet_scores([extract_text(h, u, extractor, True, True, False) for u, h, _ in pages], entries)
        return result["with"], result["without"]

    fast, plain = scores("fast"), scores("resiliparse")
    assert fast[0] >= 0.85 and fast[0] >= plain[0] - 0.08, (fast, plain)
    assert fast[1] >= 0.88 and fast[1] >= plain[1] + 0.10, (fast, plain)
