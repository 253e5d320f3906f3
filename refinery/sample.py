"""The embedded default input: small WARC shards that refinery writes itself.

All text here is generated from the project's own word lists, so no third-party text ships
with the package. The shards mix what a real crawl holds: articles in several languages with
navigation boilerplate, exact and near duplicates, a page captured twice, a boilerplate
paragraph inside several articles, non-HTML payloads, request records and an error page.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

SAMPLE_SCHEME = "sample://"
SAMPLES = {"english": 2}  # name -> number of shards
SAMPLE_VERSION = 3  # bump when the generator changes, so cached shards are rewritten

_EN = {
    "subjects": ["The harbour committee", "A local bakery", "The regional library", "Our volunteer team",
                 "The city council", "A small software company", "The school orchestra", "The river trust",
                 "A group of cyclists", "The museum curator", "The weather service", "A farmer near the coast"],
    "verbs": ["announced", "described", "planned", "reviewed", "organised", "published", "celebrated",
              "questioned", "measured", "repaired", "documented", "improved"],
    "objects": ["a new timetable for the northern ferry", "the results of its annual survey",
                "a workshop on bread and pastry", "the restoration of an old stone bridge",
                "a guide for families who visit in winter", "the cost of heating public buildings",
                "a careful study of water quality", "the opening of a community garden",
                "a series of evening concerts", "the history of the town market",
                "a plan to reduce traffic near schools", "the long delays on the coastal railway"],
    "tails": ["after a long public meeting", "because many residents had asked for it",
              "with help from students at the college", "although the budget was very tight",
              "before the end of the summer", "in a report that runs to forty pages",
              "while the main road was closed for repairs", "so that visitors can plan their trips",
              "and invited everyone to share their views", "which surprised several observers"],
    "extras": ["Most people who attended said they were pleased with the outcome.",
               "The details will be discussed again at the next meeting in spring.",
               "Several questions about funding remain open for now.",
               "Anyone who wants to help can contact the office during the week.",
               "It is the first change of this kind in more than a decade.",
               "Critics argue that the plan does not go far enough.",
               "The figures show a clear improvement compared with last year."],
}
_DE = {
    "subjects": ["Der Gemeinderat", "Eine kleine Bäckerei", "Die Stadtbibliothek", "Unser Verein",
                 "Das Orchester der Schule", "Die Feuerwehr"],
    "verbs": ["plant", "beschreibt", "organisiert", "veröffentlicht", "prüft", "verbessert"],
    "objects": ["einen neuen Fahrplan für die Fähre", "die Ergebnisse der jährlichen Umfrage",
                "die Renovierung der alten Brücke", "einen Ratgeber für Familien im Winter",
                "die Eröffnung eines Gemeinschaftsgartens", "eine Reihe von Konzerten am Abend"],
    "tails": ["nach einer langen öffentlichen Sitzung", "weil viele Bürger danach gefragt haben",
              "mit Hilfe von Studenten der Hochschule", "obwohl das Budget sehr knapp war",
              "noch vor dem Ende des Sommers", "und lädt alle ein, ihre Meinung zu sagen"],
    "extras": ["Die meisten Besucher waren mit dem Ergebnis zufrieden.",
               "Die Einzelheiten werden bei der nächsten Sitzung im Frühjahr besprochen.",
               "Einige Fragen zur Finanzierung sind noch offen."],
}
_FR = {
    "subjects": ["Le conseil municipal", "Une petite boulangerie", "La bibliothèque de la ville",
                 "Notre association", "L'orchestre du lycée", "Le musée régional"],
    "verbs": ["annonce", "décrit", "organise", "publie", "examine", "améliore"],
    "objects": ["un nouvel horaire pour le bac du nord", "les résultats de son enquête annuelle",
                "la restauration du vieux pont de pierre", "un guide pour les familles en hiver",
                "l'ouverture d'un jardin partagé", "une série de concerts le soir"],
    "tails": ["après une longue réunion publique", "parce que beaucoup d'habitants l'avaient demandé",
              "avec l'aide des étudiants de l'université", "bien que le budget soit très serré",
              "avant la fin de l'été", "et invite chacun à donner son avis"],
    "extras": ["La plupart des participants se sont dits satisfaits du résultat.",
               "Les détails seront discutés lors de la prochaine réunion au printemps.",
               "Plusieurs questions sur le financement restent ouvertes."],
}
_NAV = ["Home", "News", "Events", "About us", "Contact", "Sign in", "Newsletter"]
_FOOTER = "Copyright 2024 Example Community Network. All rights reserved. Privacy policy. Cookie settings."
# A syndication note that some articles carry inside their text, where extractors keep it: the
# boilerplate that substring dedup cuts after its first occurrence (more than 50 words).
_SYNDICATION = ("This article first appeared in the weekly community bulletin that our volunteers put "
                "together every Friday morning. Readers who would like to receive the bulletin by post or "
                "by email can leave their details at the front desk of the regional library, and anyone "
                "with news about a local club, a school event or a neighbourhood project is warmly invited "
                "to send a short note to the editors before Wednesday evening.")


def _article(rng: random.Random, words: dict, paragraphs: int) -> list[str]:
    """Paragraphs whose sentences never reuse an object, tail or extra, so that, like real
    prose, a page has no repeated 5-grams for the Gopher repetition filter to catch."""
    objects = rng.sample(words["objects"], len(words["objects"]))
    tails = rng.sample(words["tails"], len(words["tails"]))
    extras = rng.sample(words["extras"], len(words["extras"]))
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(2, 3)):
            if extras and rng.random() < 0.25:
                sentences.append(extras.pop())
            elif objects and tails:
                sentences.append(f"{rng.choice(words['subjects'])} {rng.choice(words['verbs'])} "
                                 f"{objects.pop()} {tails.pop()}.")
        if sentences:
            out.append(" ".join(sentences))
    return out


def _title(rng: random.Random, words: dict) -> str:
    return f"{rng.choice(words['subjects'])} {rng.choice(words['verbs'])} {rng.choice(words['objects'])}"


def _page(title: str, paragraphs: list[str], lang: str, charset: str = "utf-8") -> str:
    nav = "".join(f'<li><a href="/{item.lower().replace(" ", "-")}">{item}</a></li>' for item in _NAV)
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="{charset}"><title>{title}</title></head>'
            f'<body><header><nav><ul>{nav}</ul></nav></header>'
            f'<main><article><h1>{title}</h1>{body}</article></main>'
            f'<aside><h3>Related</h3><ul><li><a href="/a">Read more</a></li></ul></aside>'
            f"<footer><p>{_FOOTER}</p></footer></body></html>")


def _records(shard: int, per_shard: int):
    """Yields (kind, url, content_type, body bytes) for one shard, deterministically."""
    rng = random.Random(1000 + shard)
    site = f"https://news{shard}.sample.refinery.invalid"
    bodies = []
    for i in range(per_shard):
        roll = rng.random()
        lang, words = ("de", _DE) if roll < 0.12 else ("fr", _FR) if roll < 0.2 else ("en", _EN)
        title, paragraphs = _title(rng, words), _article(rng, words, rng.randint(3, 4))
        if lang == "en" and i % 5 == 2:
            paragraphs.append(_SYNDICATION)
        html = _page(title, paragraphs, lang)
        bodies.append(html)
        yield "response", f"{site}/{lang}/article-{i}", "text/html; charset=utf-8", html.encode("utf-8")
        if i % 7 == 3:  # the same page captured again under another URL
            yield "response", f"{site}/{lang}/article-{i}?ref=feed", "text/html", html.encode("utf-8")
        if i % 9 == 4:  # republished elsewhere with one more sentence: a near duplicate
            sentence = _article(rng, words, 1)[0].split(". ")[0].rstrip(".") + "."
            edited = _page(title, [*paragraphs[:-1], f"{paragraphs[-1]} {sentence}"], lang)
            yield "response", f"{site}/{lang}/archive/{i}", "text/html", edited.encode("utf-8")
        if i % 13 == 6:  # the same URL crawled again later, with new content
            renewed = _page(_title(rng, words), _article(rng, words, 3), lang)
            yield "response", f"http://{site.removeprefix('https://')}/{lang}/article-{i}/", "text/html", renewed.encode("utf-8")
        if i % 11 == 5:
            yield "request", f"{site}/{lang}/article-{i}", None, b""
    latin1 = _page("Grüße aus Köln", _article(rng, _DE, 3), "de", "iso-8859-1")
    yield "response", f"{site}/de/latin1", "text/html; charset=iso-8859-1", latin1.encode("latin-1")
    yield "response", f"{site}/logo.png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(256))
    yield "response", f"{site}/report.pdf", "application/pdf", b"%PDF-1.4\n% sample\n"
    yield "response", f"{site}/tiny", "text/html", b"<html><body><p>Sign in</p></body></html>"
    spam = "<p>Best deals today, click the link below for the best deals today.</p>" * 12
    yield "response", f"{site}/deals", "text/html", _page("Deals", [], "en").replace("<article>", f"<article>{spam}").encode()
    listing = "".join(f"<li>{rng.choice(_NAV)} {n}</li>" for n in range(40))
    yield "response", f"{site}/index", "text/html", _page("Index", [], "en").replace("<article>", f"<article><ul>{listing}</ul>").encode()
    yield "error", f"{site}/missing", "text/html", b"<html><body><h1>404 Not Found</h1></body></html>"


def write_sample_shard(path: Path, shard: int, per_shard: int = 40) -> None:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buffer = io.BytesIO()
    writer = WARCWriter(buffer, gzip=True)
    for n, (kind, url, content_type, body) in enumerate(_records(shard, per_shard)):
        date = f"2024-01-{shard + 1:02d}T00:{n // 60:02d}:{n % 60:02d}Z"  # later records are newer
        warc_headers = {"WARC-Date": date, "WARC-Record-ID": f"<urn:uuid:00000000-0000-4000-8000-{shard:04d}{n:08d}>"}
        if kind == "request":
            http = StatusAndHeaders("GET / HTTP/1.1", [("Host", url.split("/")[2])], is_http_request=True)
            record = writer.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=http,
                                               warc_headers_dict=warc_headers)
        else:
            status = "404 Not Found" if kind == "error" else "200 OK"
            http = StatusAndHeaders(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))],
                                    protocol="HTTP/1.1")
            record = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                               warc_headers_dict=warc_headers)
        writer.write_record(record)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def sample_cache_dir() -> Path:
    root = os.environ.get("REFINERY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "refinery")
    return Path(root) / "sample"


def materialise(name: str) -> list[str]:
    """Writes the named sample's shards (once) and returns their local paths."""
    if name not in SAMPLES:
        raise KeyError(name)
    directory = sample_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(SAMPLES[name]):
        path = directory / f"{name}-v{SAMPLE_VERSION}-{shard:05d}.warc.gz"
        if not path.exists():
            write_sample_shard(path, shard)
        paths.append(str(path))
    return paths
