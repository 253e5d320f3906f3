"""`refinery run` over every file of ../shared/data/warc-samples plus generated bad inputs: no
crash, and every skipped record counted with a reason in stats.json."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import yaml

from support import (ENGLISH_CONFIG, article_html, http_response, read_documents, run_cli_inprocess, shared_path,
                     write_warc)

pytestmark = pytest.mark.slow

PARAGRAPHS = [
    "The harbour board met on Tuesday to discuss the repairs to the northern pier, which was damaged in "
    "the storms of last winter and has been closed to the public since the middle of January.",
    "Members agreed that the work should begin in the spring, when the weather is calmer and the fishing "
    "boats spend more of their time at sea, so that the builders can reach the damaged sections safely.",
    "The chairman said the cost would be shared between the council and the port authority, and that the "
    "pier should open again before the summer festival brings thousands of visitors to the town.",
]


LIBRARY = [
    "The town library will stay open until nine in the evening from next month, after readers asked for "
    "more time to study and to borrow books once their working day had ended.",
    "The librarian explained that volunteers from the reading club offered to help at the desk, which "
    "means the longer hours will not add to the budget that the council approved in the autumn.",
    "Children's story sessions move to Saturday mornings, and a new shelf of local history, with maps "
    "and photographs of the old railway station, opens in the reading room next week.",
]


CAFE = [
    "Jürgen Müller opened his café on the corner of the market square twelve years ago, and this week "
    "he celebrated with free coffee for every customer who brought a friend along to the counter.",
    "He told reporters that the secret of a good café is patience, fresh bread every morning and a "
    "friendly word for the regulars who come in before work to read the newspaper at the window.",
    "The owners of the shops around the square said the café has brought new life to the street, and "
    "they hope that the market will grow again now that the old fountain has been repaired.",
]
WEATHER = [
    "Forecasters expect a week of mild weather across the valley, with light winds and only a small "
    "chance of rain on Thursday afternoon, before a colder spell arrives from the north at the weekend.",
    "Farmers welcomed the news because the fields are still wet from the heavy rain of last month, and "
    "a few dry days would let them bring in the last of the potatoes before the first frost.",
    "The mountain rescue team reminded walkers to carry warm clothes and a torch, since the evenings "
    "are getting shorter and the paths above the lake can turn icy soon after the sun goes down.",
]


def good_page(n: int) -> bytes:
    return article_html(f"Harbour board meeting {n}", [f"Report {n}. " + p for p in PARAGRAPHS]).encode()


def make_bad_inputs(folder: Path, huge_mb: int = 20) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    whole = write_warc(folder / "whole.warc.gz", [http_response(f"http://ok.test/{n}", good_page(n)) for n in range(6)])
    data = whole.read_bytes()
    (folder / "cut.warc.gz").write_bytes(data[: len(data) * 2 // 3])  # a gzip member cut in the middle
    files["cut"] = folder / "cut.warc.gz"
    (folder / "random.warc.gz").write_bytes(random.Random(0).randbytes(50_000))
    files["random"] = folder / "random.warc.gz"
    (folder / "empty.warc.gz").write_bytes(b"")
    files["empty"] = folder / "empty.warc.gz"
    block = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n" + good_page(99)
    lying = (b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:lying>\r\n"
             b"WARC-Target-URI: http://lying.test/\r\nWARC-Date: 2024-01-01T00:00:00Z\r\n"
             b"Content-Type: application/http; msgtype=response\r\nContent-Length: 900000\r\n\r\n" + block)
    (folder / "lying.warc.gz").write_bytes(gzip.compress(lying))  # Content-Length far beyond the record
    files["lying"] = folder / "lying.warc.gz"
    sentence = b"<p>The harbour board met again to talk about the pier and the boats in the bay.</p>\n"
    huge = b"<html><body>" + sentence * (huge_mb * 1_000_000 // len(sentence)) + b"</body></html>"
    files["pages"] = write_warc(folder / "pages.warc.gz", [
        http_response("http://ok.test/a", article_html("Weather", WEATHER).encode(), record_id="<urn:uuid:pages-a>"),
        http_response("http://huge.test/", record_id="<urn:uuid:pages-huge>", body=huge),  # a 20 MB page
        http_response("http://charset.test/", record_id="<urn:uuid:pages-charset>", body=article_html("Café in Köln", CAFE)
                      .encode("utf-8"), content_type="text/html; charset=iso-8859-1"),  # the wrong charset
        http_response("http://junk.test/", record_id="<urn:uuid:pages-junk>", body=random.Random(2).randbytes(30_000)),  # binary junk as text/html
        http_response("http://script.test/", record_id="<urn:uuid:pages-script>", body=b"<html><head><script>var x = 1;" + b"x++;" * 5000
                      + b"</script></head><body><script>document.write(x)</script></body></html>"),
        http_response("http://ok.test/b", article_html("Library hours", LIBRARY).encode(), record_id="<urn:uuid:pages-b>"),
    ])
    return files


def dropped(stats: dict) -> dict[str, int]:
    totals: dict[str, int] = {}
    for stage in stats["funnel"]:
        for reason, count in stage["dropped"].items():
            totals[reason] = totals.get(reason, 0) + count
    return totals


def run(tmp_path: Path, inputs: list[Path], **overrides) -> dict:
    config = yaml.safe_load(ENGLISH_CONFIG.read_text())
    config["input"].update(overrides.get("input", {}))
    for entry in config["stages"]:
        name = next(iter(entry))
        entry[name].update(overrides.get(name, {}))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    args = [a for p in inputs for a in ("--input", str(p))]
    result = run_cli_inprocess("run", path, "--output", out, "--workers", "2", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    for stage in stats["funnel"]:  # every record that leaves a stage is kept or counted with a reason
        assert stage["docs_in"] == stage["docs_out"] + sum(stage["dropped"].values()), stage
    return stats


@pytest.mark.parametrize("extractor", ["trafilatura", "fast", "union"])
def test_every_sample_file_and_every_generated_bad_input_is_survived_and_counted(tmp_path, extractor):
    samples = sorted(p for p in shared_path("warc-samples").iterdir() if p.is_file())
    bad = make_bad_inputs(tmp_path / "bad")
    stats = run(tmp_path, samples + list(bad.values()), extract={"extractor": extractor})
    reasons = dropped(stats)
    for reason in ("truncated", "unreadable_archive", "empty_file", "too_large", "binary_payload"):
        assert reasons.get(reason, 0) >= 1, (reason, reasons)
    assert stats["input"]["shards"] == len(samples) + len(bad)
    docs = {row["url"]: row["text"] for row in read_documents(tmp_path / "out").to_pylist()}
    assert {"http://ok.test/a", "http://ok.test/b"} <= set(docs), "the good pages next to the bad ones survive"
    assert "Jürgen Müller opened his café" in docs["http://charset.test/"]  # UTF-8 read as UTF-8
    assert not any(url.startswith(("http://junk.test", "http://script.test", "http://huge.test")) for url in docs)


def test_extractor_bounds_drop_one_page_alone(tmp_path):
    """With the size bound raised past the 20 MB page and a short extraction timeout, that page is
    dropped by the extractor's bound; the pages around it in the same shard are kept."""
    bad = make_bad_inputs(tmp_path / "bad")
    stats = run(tmp_path, [bad["pages"]], input={"max_record_bytes": 30_000_000},
                extract={"timeout_s": 0.5}, language_prefilter={"min_chars": 10**9})
    reasons = dropped(stats)
    assert "too_large" not in reasons
    assert reasons.get("extract_timeout", 0) + reasons.get("extractor_crashed", 0) >= 1, reasons
    assert stats["output"]["documents"] >= 2
