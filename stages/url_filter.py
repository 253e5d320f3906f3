"""RefinedWeb URL filtering, before extraction: UT1 blocklist plus a URL word score.

The rules are RefinedWeb's as datatrove's URLFilter applies them (blocked domains, subdomains and
URLs from UT1; hard-banned words, two or more soft-banned words, banned subwords), with the lists
datatrove ships. refinery applies them itself (tests/test_url_filter.py checks every verdict and
reason against datatrove's URLFilter): importing datatrove's filter and its dependency checks cost
each worker 1.2 s of CPU, several times its whole share of the URL filtering. UT1's 4.56 M domains and
its URLs are memory-mapped hashes (refinery/hashed_list.py), built from the archive once per
machine: 36 MB shared by every worker instead of about 770 MB of Python set in each. refinery adds
curated-domain exclusion and an allowlist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit
from typing import ClassVar

from pydantic import Field

from refinery.document import Document, Drop
from refinery.stage import Stage, StageConfig

UT1_ARCHIVE = "url_filterblacklistsv0_3_0.tar.gz"  # datatrove/assets: UT1's "domains" and "urls"
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")  # datatrove's url_filter.normalizer

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


def _word(text: str) -> str:
    return _NON_ALNUM.sub("", text).lower()


def _word_list(entries) -> set[str]:
    """datatrove's ``parse_list``: entries not starting with "#", normalised to lower-case letters
    and digits."""
    return {_word(entry) for entry in entries if entry[0] != "#"}


def _configured(entries: list[str], words: bool = False) -> set[str]:
    """A config's extra entries, read as datatrove reads them; empty ones are left out."""
    entries = [entry for entry in entries if entry.strip()]
    return _word_list(entries) if words else {entry.strip() for entry in entries if entry[0] != "#"}


def datatrove_assets() -> Path:
    """The folder of lists datatrove ships, found without importing datatrove."""
    import importlib.util

    spec = importlib.util.find_spec("datatrove")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("url_filter's UT1 blocklist and word lists come with datatrove: pip install datatrove")
    return Path(list(spec.submodule_search_locations)[0]) / "assets"


class RefinedWebUrlRules:
    """RefinedWeb's URL rules in datatrove's order; :meth:`verdict` gives the first rule a URL
    breaks (datatrove's reason name), or None."""

    def __init__(self, config: UrlFilterConfig):
        import ahocorasick
        from tldextract import TLDExtract

        from refinery.hashed_list import HashedList

        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        self.soft_word_threshold = config.soft_word_threshold
        self.tld = TLDExtract(suffix_list_urls=(), cache_dir=None)  # the bundled public-suffix snapshot
        domains, urls = _configured(config.extra_blocked_domains), _configured(config.extra_blocked_urls)
        banned, subwords, soft = (_configured(config.extra_banned_words, words=True),
                                  _configured(config.extra_banned_subwords, words=True),
                                  _configured(config.extra_soft_banned_words, words=True))
        self.domains: set[str] | HashedList = domains
        self.urls: set[str] | HashedList = urls
        if config.use_ut1_blocklist:
            assets = datatrove_assets()
            self.domains = HashedList.load(assets / UT1_ARCHIVE, extra=domains, member="domains")
            self.urls = HashedList.load(assets / UT1_ARCHIVE, extra=urls, member="urls")
            for words, name in ((banned, "banned_words.txt"), (subwords, "banned_subwords.txt"),
                                (soft, "soft_banned_words.txt")):
                with open(assets / name, encoding="utf-8") as lines:  # ASCII lists; not the locale's codec
                    words |= _word_list(lines)
        self.banned_words, self.soft_banned_words = banned, soft
        self.subwords = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for word in subwords:
            self.subwords.add_word(word, len(self.subwords))
        self.subwords.make_automaton()
        self.has_subwords = bool(subwords)

    def verdict(self, url: str) -> str | None:
        parts = self.tld(url)
        if parts.registered_domain in self.domains:
            return "domain"
        if parts.fqdn in self.domains:
            return "subdomain"
        if url in self.urls:
            return "url"
        url_words = set(_NON_ALNUM.split(url))
        if any(word in url_words for word in self.banned_words):
            return "hard_blacklisted"
        if sum(word in url_words for word in self.soft_banned_words) >= self.soft_word_threshold:
            return "soft_blacklisted"
        if self.has_subwords and next(self.subwords.iter(_word(url)), False):
            return "blacklisted_subword"
        return None


_RULES_CACHE: dict = {}  # one set of rules per worker process and config


def _rules(config: UrlFilterConfig) -> RefinedWebUrlRules:
    key = config.model_dump_json()
    if key not in _RULES_CACHE:
        _RULES_CACHE[key] = RefinedWebUrlRules(config)
    return _RULES_CACHE[key]


def _matches(host: str, domains: frozenset[str]) -> bool:
    """True when host is one of `domains` or a subdomain of one."""
    parts = host.lower().rstrip(".").split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts)))


class UrlFilter(Stage):
    name: ClassVar[str] = "url_filter"
    reasons: ClassVar[tuple[str, ...]] = (*_REASONS.values(), "curated_domain", "no_url")
    Config = UrlFilterConfig

    def setup(self) -> None:
        self._rules = _rules(self.config)
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
        broken = self._rules.verdict(doc.url)
        return doc if broken is None else Drop(doc, _REASONS[broken])
