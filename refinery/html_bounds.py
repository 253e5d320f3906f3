"""A cheap bound on what an HTML page costs a parser: its tag nesting depth, from one regex scan.

resiliparse's text extraction costs time quadratic in the tree's depth (100,000 nested <div>, a
1.1 MB page, take minutes). Stages that parse HTML in-process check the depth first and drop a
page past their bound, counted with a reason, instead of stalling the shard."""

from __future__ import annotations

import re

_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]{0,15})")
# Elements that never hold content, or whose end tag may be left out: they add no depth.
_FLAT = frozenset("""area base br col embed hr img input link meta param source track wbr
p li dt dd td th tr thead tbody tfoot option optgroup colgroup caption rb rt rp html head body""".split())


def tag_depth(html: str, limit: int) -> int:
    """The deepest nesting of elements in ``html`` (an upper bound: unclosed tags count as open;
    ``<div/>`` opens a div, as in HTML5), scanning no further than where it passes ``limit``."""
    if html.count("<") <= limit:  # cannot nest deeper than it has tags
        return min(html.count("<"), limit)
    depth = deepest = 0
    flat = _FLAT
    for closing, name in _TAG.findall(html):
        name = name.lower()
        if name in flat:
            continue
        if closing:
            if depth:
                depth -= 1
        else:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
    return deepest
