"""URL filter: RefinedWeb's rules through datatrove's URLFilter, plus curated and allowed domains."""

from __future__ import annotations

import os

import pytest

from refinery.document import Document, Drop
from refinery.stages.url_filter import UrlFilter, UrlFilterConfig
from refinery.stages.warc_reader import WarcReader
from support import SHARED_DATA

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


def verdict(stage: UrlFilter, url: str) -> str:
    result = stage.process_doc(Document(id="x", url=url))
    return result.reason if isinstance(result, Drop) else "keep"


@pytest.fixture(scope="module")
def default_filter() -> UrlFilter:
    stage = UrlFilter()
    stage.setup()
    return stage


def test_curated_domains_and_their_subdomains_are_excluded(default_filter):
    assert verdict(default_filter, "https://en.wikipedia.org/wiki/Falcon") == "curated_domain"
    assert verdict(default_filter, "http://arxiv.org/abs/2306.01116") == "curated_domain"
    assert verdict(default_filter, "https://notwikipedia.org/x") == "keep"


def test_blocklist_and_word_rules(default_filter):
    assert verdict(default_filter, "https://www.pornhub.com/view") == "blocked_domain"
    assert verdict(default_filter, "https://www.bbc.co.uk/news/science") == "keep"
    assert verdict(default_filter, "") == "no_url"


def test_the_hashed_blocklists_hold_what_datatrove_reads(default_filter):
    """UT1's domains and URLs are memory-mapped hashes (refinery/hashed_list.py), not sets: every
    entry datatrove reads is in them, with the same count, and nothing else among the probes."""
    from pathlib import Path

    from datatrove.pipeline.filters.url_filter import cached_assets_path, get_list

    folder = Path(cached_assets_path(library_name="datatrove", namespace="filters", subfolder="url_filter"))
    for name, ours in (("domains", default_filter._filter.block_listed_domains),
                       ("urls", default_filter._filter.block_listed_url)):
        theirs = get_list(str(folder), name, set(), do_normalize=False)
        assert len(ours) == len(theirs) and not ours.extra
        with open(folder / name) as lines:
            sample = [line.strip() for n, line in enumerate(lines) if n % 997 == 0 and not line.startswith("#")]
        assert sample and all(entry in ours for entry in sample)
        assert not any(entry + ".not-listed.example" in ours for entry in sample)


def test_extra_words_and_allowlist():
    stage = UrlFilter(UrlFilterConfig(use_ut1_blocklist=False, extra_banned_words=["casino"],
                                      extra_soft_banned_words=["poker", "bet"], allow_domains=["trusted.example"]))
    stage.setup()
    assert verdict(stage, "https://a.example/casino/home") == "banned_word"
    assert verdict(stage, "https://a.example/poker-bet") == "soft_banned_words"
    assert verdict(stage, "https://a.example/poker") == "keep"
    assert verdict(stage, "https://www.trusted.example/casino") == "keep"


@pytest.mark.shared
def test_parity_with_datatrove_on_the_web_shards(default_filter):
    """Same verdicts as datatrove's URLFilter on every URL of the shared shards (curated rule off)."""
    from datatrove.data import Document as DatatroveDocument
    from datatrove.pipeline.filters import URLFilter

    shards = sorted((SHARED_DATA / "web").glob("*.warc.gz"))
    if not shards:
        pytest.skip("shared data not available")
    urls = [doc.url for shard in shards for doc in WarcReader().read(str(shard)) if not isinstance(doc, Drop)]
    assert len(urls) == 1778
    ours = UrlFilter(UrlFilterConfig(curated_domains=[]))
    ours.setup()
    theirs = URLFilter()
    disagreements = []
    for url in urls:
        mine = verdict(ours, url) == "keep"
        peer = theirs.filter(DatatroveDocument(text="", id="x", metadata={"url": url})) is True
        if mine != peer:
            disagreements.append((url, mine, peer))
    assert not disagreements, disagreements[:20]
    assert sum(verdict(ours, u) != "keep" for u in urls) > 0
