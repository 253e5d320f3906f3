"""RefinedWeb URL filtering, before extraction: UT1 blocklist plus a URL word score.

datatrove's URLFilter implements exactly RefinedWeb's rules (blocked domains, subdomains and
URLs from UT1; hard-banned words, two or more soft-banned words, banned subwords) and ships
the lists, so it is reused here. refinery adds curated-domain exclusion and an allowlist, and
keeps UT1's 4.56 M domains and its URLs as memory-mapped hashes (refinery/hashed_list.py) instead
of Python sets: 36 MB shared by every worker instead of about 770 MB each, and milliseconds to
load instead of 3.5 s.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit
from typing import ClassVar

from pydantic import Field

from refinery.document import Document, Drop
from refinery.stage import Stage, StageConfig

# datatrove's reason -> refinery's declared reason
_REASONS = {
    "domain": "blocked_domain",
    "subdomain": "blocked_subdomain",
    "url": "blocked_url",
    "hard_blacklisted": "banned_word",
    "soft_blacklisted": "soft_banned_words",
    "blacklisted_subword": "banned_subword",
}


class UrlFilterConfig(StageConfig):
    use_ut1_blocklist: bool = True  # the UT1 lists and word lists datatrove ships
    soft_word_threshold: int = Field(default=2, ge=1)
    extra_blocked_domains: list[str] = []
    extra_blocked_urls: list[str] = []
    extra_banned_words: list[str] = []
    extra_soft_banned_words: list[str] = []
    extra_banned_subwords: list[str] = []
    # Sources curated elsewhere (added to the mix as their own sources); RefinedWeb removed
    # them from the web set so they are not counted twice.
    curated_domains: list[str] = ["wikipedia.org", "arxiv.org"]
    # Domains never dropped by the blocklist or word score (false positives you vouch for).
    allow_domains: list[str] = []


_FILTER_CACHE: dict = {}  # one loaded blocklist per worker process: loading UT1 takes seconds


def _datatrove_filter(config: UrlFilterConfig):
    key = config.model_dump_json()
    if key not in _FILTER_CACHE:
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        from datatrove.pipeline.filters import URLFilter
        from tldextract import TLDExtract

        # PipelineStep.__new__ checks URLFilter's dependencies by reading the metadata of every
        # installed distribution, 0.4 s in each worker; pyproject.toml pins them, so it is skipped.
        url_filter = object.__new__(URLFilter)
        url_filter.__init__(
            soft_word_threshold=config.soft_word_threshold,
            extra_domains=config.extra_blocked_domains or None,
            extra_urls=config.extra_blocked_urls or None,
            banned_words=config.extra_banned_words or None,
            banned_subwords=config.extra_banned_subwords or None,
            soft_banned_words=config.extra_soft_banned_words or None,
            use_integrated_lists=config.use_ut1_blocklist,
        )
        # The bundled public-suffix snapshot; never fetch the list from the network.
        url_filter.tldextractor = TLDExtract(suffix_list_urls=(), cache_dir=None)
        if config.use_ut1_blocklist:
            _load_integrated_lists(url_filter)
        _FILTER_CACHE[key] = url_filter
    return _FILTER_CACHE[key]


def _load_integrated_lists(url_filter) -> None:
    """datatrove's ``URLFilter.download_data``, with the two big lists hashed instead of held as
    sets (the filter only asks ``x in list``); tests/test_url_filter.py checks the verdicts against
    datatrove's own."""
    import tarfile

    from datatrove.io import safely_create_file
    from datatrove.pipeline.filters import url_filter as module

    from refinery.hashed_list import HashedList

    download_dir = module.cached_assets_path(library_name="datatrove", namespace="filters", subfolder="url_filter")
    archive = "url_filterblacklistsv0_3_0.tar.gz"

    def extract() -> None:
        with tarfile.open(os.path.join(module.ASSETS_PATH, archive), "r:gz") as tar:
            tar.extractall(download_dir, filter="data")

    safely_create_file(os.path.join(download_dir, archive), extract)
    folder = Path(download_dir)
    url_filter.block_listed_domains = HashedList.load(folder / "domains", extra=url_filter.block_listed_domains)
    url_filter.block_listed_url = HashedList.load(folder / "urls", extra=url_filter.block_listed_url)
    url_filter.banned_words = module.get_list(module.ASSETS_PATH, "banned_words.txt", url_filter.banned_words)
    url_filter.banned_subwords = module.get_list(module.ASSETS_PATH, "banned_subwords.txt", url_filter.banned_subwords)
    url_filter.soft_banned_words = module.get_list(module.ASSETS_PATH, "soft_banned_words.txt",
                                                   url_filter.soft_banned_words)
    for word in url_filter.banned_subwords:
        url_filter.banned_subwords_automaton.add_word(word, len(url_filter.banned_subwords_automaton))
    url_filter.banned_subwords_automaton.make_automaton()
    url_filter._downloaded = True


def _matches(host: str, domains: frozenset[str]) -> bool:
    """True when host is one of `domains` or a subdomain of one."""
    parts = host.lower().rstrip(".").split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts)))


class UrlFilter(Stage):
    name: ClassVar[str] = "url_filter"
    reasons: ClassVar[tuple[str, ...]] = (*_REASONS.values(), "curated_domain", "no_url")
    Config = UrlFilterConfig

    def setup(self) -> None:
        from datatrove.data import Document as DatatroveDocument

        self._filter = _datatrove_filter(self.config)
        self._wrap = DatatroveDocument
        self._curated = frozenset(d.lower() for d in self.config.curated_domains)
        self._allowed = frozenset(d.lower() for d in self.config.allow_domains)

    def process_doc(self, doc: Document) -> Document | Drop:
        if not doc.url:
            return Drop(doc, "no_url")
        try:
            host = urlsplit(doc.url).hostname or ""
        except ValueError:
            host = ""
        if self._curated and _matches(host, self._curated):
            return Drop(doc, "curated_domain")
        if self._allowed and _matches(host, self._allowed):
            return doc
        verdict = self._filter.filter(self._wrap(text="", id=doc.id, metadata={"url": doc.url}))
        if verdict is True:
            return doc
        return Drop(doc, _REASONS[verdict[1]])
