"""URL filter: RefinedWeb's rules with datatrove's lists, checked against datatrove's URLFilter, plus
curated and allowed domains."""

from __future__ import annotations

import os

import pytest

from refinery.document import Document, Drop
from refinery.stages import url_filter as url_filter_module
from refinery.stages.url_filter import UT1_ARCHIVE, UrlFilter, UrlFilterConfig, datatrove_assets
from refinery.stages.warc_reader import WarcReader
from support import SHARED_DATA

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


def verdict(stage: UrlFilter, url: str) -> str:
    result = stage.process_doc(Document(id="x", url=url))
    return result.reason if isinstance(result, Drop) else "keep"


def as_datatrove_verdict(stage: UrlFilter, url: str) -> bool | tuple[bool, str]:
    """Our verdict in datatrove's filter() terms: True, or (False, datatrove's reason name)."""
    mine = verdict(stage, url)
    return True if mine == "keep" else (False, DATATROVE_REASON[mine])


DATATROVE_REASON = {ours: theirs for theirs, ours in url_filter_module._REASONS.items()}


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
    """UT1's domains and URLs are memory-mapped hashes of the archive's lists (refinery/hashed_list.py),
    not sets: every entry datatrove reads is in them, with the same count, and nothing else among
    the probes."""
    import tarfile
    from pathlib import Path

    from datatrove.pipeline.filters.url_filter import URLFilter, cached_assets_path, get_list

    URLFilter().download_data()  # datatrove's own extraction of the archive, into its cache
    folder = Path(cached_assets_path(library_name="datatrove", namespace="filters", subfolder="url_filter"))
    for name, ours in (("domains", default_filter._rules.domains), ("urls", default_filter._rules.urls)):
        theirs = get_list(str(folder), name, set(), do_normalize=False)
        assert len(ours) == len(theirs) and not ours.extra
        with open(folder / name) as lines:
            sample = [line.strip() for n, line in enumerate(lines) if n % 997 == 0 and not line.startswith("#")]
        assert sample and all(entry in ours for entry in sample)
        assert not any(entry + ".not-listed.example" in ours for entry in sample)
    with tarfile.open(datatrove_assets() / UT1_ARCHIVE) as archive:
        assert sorted(archive.getnames()) == ["domains", "urls"]


def test_every_rule_and_its_reason_match_datatrove():
    """Each rule, with extra entries of every kind and the shipped lists: the same first broken rule
    as datatrove's URLFilter (its reason names map one to one onto refinery's)."""
    from datatrove.data import Document as DatatroveDocument
    from datatrove.pipeline.filters.url_filter import URLFilter

    extra = dict(extra_blocked_domains=["blocked.co.uk", "news.okay.com", "# a comment"], extra_blocked_urls=["https://ok.example/one"],
                 extra_banned_words=["Casino"], extra_soft_banned_words=["poker", "bet"], extra_banned_subwords=["xyzzy"])
    ours = UrlFilter(UrlFilterConfig(curated_domains=[], **extra))
    ours.setup()
    theirs = URLFilter(extra_domains=extra["extra_blocked_domains"], extra_urls=extra["extra_blocked_urls"],
                       banned_words=extra["extra_banned_words"], soft_banned_words=extra["extra_soft_banned_words"],
                       banned_subwords=extra["extra_banned_subwords"])
    urls = ["https://blocked.co.uk/a", "https://www.blocked.co.uk/a", "https://news.okay.com/", "https://okay.com/",
            "https://ok.example/one", "https://ok.example/one/", "https://ok.example/casino/x", "https://ok.example/CASINO",
            "https://ok.example/poker-bet", "https://ok.example/poker", "https://ok.example/fooxyzzybar",
            "https://www.pornhub.com/view", "http://ok.example/sex-shop", "https://ok.example/", "https://www.bbc.co.uk/news",
            "http://192.168.0.1/x", "https://a.b.c.d.co.uk/path?q=1#f", "ftp://ok.example", "https://xn--bcher-kva.example/"]
    for url in urls:
        assert as_datatrove_verdict(ours, url) == theirs.filter(DatatroveDocument(text="", id="x", metadata={"url": url})), url
    assert {verdict(ours, url) for url in urls} >= {"keep", "blocked_domain", "blocked_subdomain", "blocked_url",
                                                    "banned_word", "soft_banned_words", "banned_subword"}


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
    """Same verdicts and reasons as datatrove's URLFilter on every URL of the shared shards (curated rule off)."""
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
        mine = as_datatrove_verdict(ours, url)
        peer = theirs.filter(DatatroveDocument(text="", id="x", metadata={"url": url}))
        if mine != peer:
            disagreements.append((url, mine, peer))
    assert not disagreements, disagreements[:20]
    assert sum(verdict(ours, u) != "keep" for u in urls) > 0
