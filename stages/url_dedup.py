"""URL dedup: one document per normalised URL across all shards, the newest crawl by default.

Two captures of one page (the same crawl twice, http and https, a tracking parameter) are one
document on the web. The normalised URL ignores what does not change the page: the scheme, a
leading "www.", the default port, the fragment, a trailing "/", tracking parameters and the
order of query parameters.
"""

from __future__ import annotations

import hashlib
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import Field

from refinery.document import Document
from refinery.stage import ExactKeyStage, StageConfig

TRACKING_PREFIXES = ("utm_",)
TRACKING_PARAMS = frozenset({"fbclid", "gclid", "mc_cid", "mc_eid", "yclid", "_ga"})


def normalize_url(url: str) -> str:
    """``"HTTPS://www.Example.com:443/a/?b=2&utm_source=x&a=1#top"`` -> ``"example.com/a?a=1&b=2"``."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".")
        port = parts.port
    except ValueError:  # a malformed port or bracketed host: compare the raw string
        return url.strip()
    host = host.removeprefix("www.")
    if port is not None and port not in (80, 443):
        host = f"{host}:{port}"
    path = parts.path.rstrip("/")
    query = sorted(
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in TRACKING_PARAMS and not k.startswith(TRACKING_PREFIXES)
    )
    return host + path + (f"?{urlencode(query)}" if query else "")


class UrlDedup(ExactKeyStage):
    name = "url_dedup"
    reason = "url_duplicate"

    class Config(StageConfig):
        keep: Literal["newest", "oldest", "lowest_id"] = Field(
            default="newest", description="which capture of a URL survives: by WARC-Date, ties by lowest id")

    def exact_key(self, doc: Document) -> bytes | None:
        if not doc.url:  # e.g. curated documents: nothing to compare
            return None
        return hashlib.blake2b(normalize_url(doc.url).encode("utf-8", "surrogatepass"), digest_size=16).digest()
