"""PII redaction, as FineWeb does it (datatrove's ``PIIFormatter``): email addresses and public IP
addresses are replaced with placeholders; private, loopback, link-local, documentation and other
reserved addresses are left alone (``ipaddress``'s ``is_global``). A modifier: nothing is dropped;
the funnel's ``extra`` counts what was replaced.

The email and IPv4 patterns are datatrove's. IPv6 is refinery's addition: a candidate is replaced
only when ``ipaddress`` parses it, it has three groups or more, and it is a global unicast
address, so times (``12:30:45``) and code (``std::max``, ``a::b``) stay. The
placeholders are used in turn within each document by default (``rotate: document``); datatrove turns
them over across all the documents a task sees (``rotate: task``), so its choice depends on how the
corpus is cut into tasks."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import ClassVar, Literal

from pydantic import Field

from refinery.document import Document, Drop
from refinery.stage import Stage, StageConfig

TOO_MANY_AT_SIGNS = "too_many_at_signs"
LOCAL_MAX, DOMAIN_MAX = 64, 255  # RFC 5321's longest local part and domain: the email search window

EMAIL = re.compile(
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])")
IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)")
IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def _replace_emails(text: str, replace) -> str:
    """EMAIL.sub, searched only around each "@": datatrove's pattern backtracks quadratically over
    long runs like "a!a!a!…", so each search is held to LOCAL_MAX characters before its "@" and
    DOMAIN_MAX after (addresses longer than RFC 5321 allows are not emails anyway)."""
    pieces, last, at = [], 0, text.find("@")
    while at != -1:
        window = EMAIL.finditer(text, max(last, at - LOCAL_MAX - 1), min(len(text), at + DOMAIN_MAX + 1))
        match = next((m for m in window if m.start() <= at < m.end()), None)
        if match is not None:
            pieces += [text[last:match.start()], replace(match)]
            last = match.end()
        at = text.find("@", max(at + 1, last))
    return "".join(pieces) + text[last:] if pieces else text


def is_public(address: str, version: int) -> bool:
    try:
        parsed = ipaddress.IPv4Address(address) if version == 4 else ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return parsed.is_global


def is_ipv6(candidate: str, public_only: bool) -> bool:
    """A real IPv6 address, not code (``a::b``) or a time: it parses, has at least three groups,
    and, when public, is global unicast (2000::/3) and global."""
    if sum(1 for group in candidate.split(":") if group) < 3:
        return False
    try:
        parsed = ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return not public_only or (parsed in GLOBAL_UNICAST and parsed.is_global)


class PiiConfig(StageConfig):
    emails: bool = True
    ipv4: bool = True
    ipv6: bool = True
    public_only: bool = True  # false: private and reserved addresses too
    # example.com and example.org are reserved for examples; the IPv4 addresses are datatrove's
    # (random, unanswering when it chose them); 2001:db8::/32 is the IPv6 documentation prefix
    email_replacement: list[str] = Field(default=["email@example.com", "firstname.lastname@example.org"], min_length=1)
    ipv4_replacement: list[str] = Field(default=["22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206",
                                                 "220.127.116.11", "18.104.22.168"], min_length=1)
    ipv6_replacement: list[str] = Field(default=["2001:db8::1", "2001:db8::2"], min_length=1)
    # document: the placeholders are used in turn within each document, so a document's text does not
    # depend on how the corpus is cut into tasks; task: in turn across the documents of a task, as
    # datatrove does (its exact text, but a split input file changes which placeholder a document gets)
    rotate: Literal["document", "task"] = "document"
    # each "@" costs at most a search over ~320 characters; a document with more is dropped
    max_at_signs: int = Field(default=2000, ge=1)


class Pii(Stage):
    name: ClassVar[str] = "pii"
    reasons: ClassVar[tuple[str, ...]] = (TOO_MANY_AT_SIGNS,)  # the bound on its cost; otherwise it only rewrites
    Config = PiiConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._counts: Counter = Counter()
        self._turns: Counter = Counter()  # rotate: task: the next placeholder of each kind

    def process_doc(self, doc: Document) -> Document | Drop:
        if self.config.emails and doc.text.count("@") > self.config.max_at_signs:
            return Drop(doc, TOO_MANY_AT_SIGNS)
        turns = self._turns if self.config.rotate == "task" else Counter()
        text, found = redact(doc.text, self.config, turns)
        if found:
            doc.text = text
            self._counts.update(found)
            self._counts["documents_touched"] += 1
        return doc

    def extra_stats(self) -> dict:
        return dict(self._counts)


def redact(text: str, config: PiiConfig, turns: Counter | None = None) -> tuple[str, Counter]:
    """``text`` with its addresses replaced, and how many of each kind; ``turns`` holds the next
    placeholder of each kind (a fresh one: from the first)."""
    found: Counter = Counter()
    turns = Counter() if turns is None else turns

    def replacer(kind: str, replacements: list[str], check=None):
        def replace(match: re.Match) -> str:
            value = match.group(0)
            if check is not None and not check(value):
                return value
            found[kind] += 1
            turns[kind] = (turns[kind] + 1) % len(replacements)
            return replacements[(turns[kind] - 1) % len(replacements)]
        return replace

    if config.emails and "@" in text:
        text = _replace_emails(text, replacer("emails", config.email_replacement))
    public = config.public_only
    if config.ipv4 and "." in text:
        text = IPV4.sub(replacer("ipv4", config.ipv4_replacement, lambda v: not public or is_public(v, 4)), text)
    if config.ipv6 and text.count(":") >= 2:
        text = IPV6.sub(replacer("ipv6", config.ipv6_replacement, lambda v: is_ipv6(v, public)), text)
    return text, found
