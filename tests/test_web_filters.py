"""The filter sets users compare against (C4, FineWeb), PII redaction and benchmark
decontamination: rules on small texts, parity with datatrove 0.10.1 on the shared web shards'
English documents, and planted evaluation items found."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from refinery.document import Document, Drop
from support import run_cli_subprocess

PROSE = ("The committee met on Tuesday to discuss the budget. Members raised several concerns about "
         "spending. The chair promised a detailed reply next week. Everyone agreed to meet again. "
         "The minutes were published the same evening.")


def _run(stage, text: str, language: str = "en"):
    out = stage.process_doc(Document(id="d", url="", text=text, language=language))
    return out.reason if isinstance(out, Drop) else out.text


# --- C4 ----------------------------------------------------------------------------------------

def test_c4_keeps_punctuated_lines_and_drops_by_its_rules():
    from refinery.stages.c4_filters import C4Filters

    stage = C4Filters()
    text = "\n".join([PROSE, "Menu Home About", "Enable JavaScript to see the comments here.",
                      "We use cookies to improve your experience.", "Short one.", "Read more...",
                      "Cited fact here in the text.[1]"])
    assert _run(stage, text) == PROSE + "\nCited fact here in the text."
    assert stage.extra_stats()["lines_removed"] == {"no_terminal_punct": 2, "javascript": 1, "policy": 1,
                                                    "too_few_words": 1}
    assert _run(stage, PROSE + "\nLorem ipsum dolor sit amet, consectetur.") == "lorem_ipsum"
    assert _run(stage, PROSE + "\nThe function f(x) { return x; } is here.") == "curly_bracket"
    assert _run(stage, "One sentence only here. And a second one.") == "too_few_sentences"
    # "lorem ipsum" in a line already removed for its punctuation does not drop the document (datatrove's order)
    assert _run(stage, PROSE + "\nLorem ipsum dolor sit amet") == PROSE
    relaxed = C4Filters(C4Filters.Config(filter_no_terminal_punct=False, min_num_sentences=None))
    assert _run(relaxed, "Menu Home About\nNo punctuation here at all") == "Menu Home About\nNo punctuation here at all"
    assert _run(relaxed, "a b") == "no_lines_left"


def test_sentences_are_counted_as_spacys_sentencizer_counts_them():
    spacy = pytest.importorskip("spacy")
    from refinery.text import count_sentences

    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    rng = random.Random(4)
    pieces = ["Hello", "world", ".", "!", "?", "...", "“Quoted.”", "Mr.", "Smith", "e.g.", "U.S.", "3.5", "—", ")",
              "(", "'s", "。", "！", "etc.", "?!", ":-)", "end.Start", "\"", "'"]
    texts = [PROSE, "", "...", "Wait... what?! Yes.", "A. B. C."]
    texts += [" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(2000)]
    for text in texts:
        assert count_sentences(text) == len(list(nlp(text).sents)), text


# --- FineWeb -----------------------------------------------------------------------------------

def test_fineweb_rules_in_order():
    from refinery.stages.fineweb_filters import FineWebFilters

    stage = FineWebFilters()
    good = "\n".join(f"This is line number {i} of a long and well punctuated paragraph of prose." for i in range(10))
    assert _run(stage, good) == good
    assert _run(stage, "\n \n") == "empty"
    assert _run(stage, "\n".join(f"line {i} without an end that is long enough" for i in range(10))) == "line_punct_ratio"
    assert _run(stage, "\n".join(["Short line."] * 3 + [f"Unique and long line number {i} here." for i in range(1)])) \
        == "short_line_ratio"
    repeated = "\n".join([f"A long line of text that repeats itself often, number {i % 3}." for i in range(10)])
    assert _run(stage, repeated) == "char_dup_ratio"
    listed = "\n".join(f"Pneumonoultramicroscopicsilicovolcanoconiosis{i}." for i in range(30))  # 2 tokens a line
    assert _run(stage, listed) == "list_ratio"


# --- PII -----------------------------------------------------------------------------------------

def test_pii_replaces_emails_and_public_addresses_only():
    from refinery.stages.pii import Pii

    stage = Pii()
    text = ("Write to jane.doe+news@mail.example.co.uk or john@gmail.com. Servers: 8.8.8.8, 10.0.0.1, 127.0.0.1, "
            "192.168.1.20, 2606:4700:4700::1111, fe80::1, ::1 and 2001:db8::5. Meet at 12:30:45; std::string; a::b.")
    out = _run(stage, text)
    assert out == ("Write to email@example.com or firstname.lastname@example.org. Servers: 22.214.171.124, 10.0.0.1, "
                   "127.0.0.1, 192.168.1.20, 2001:db8::1, fe80::1, ::1 and 2001:db8::5. Meet at 12:30:45; std::string; a::b.")
    assert stage.extra_stats() == {"emails": 2, "ipv4": 1, "ipv6": 1, "documents_touched": 1}
    # placeholders turn over within a document (default) or across the documents of a task
    assert _run(Pii(), "a@b.com and 1.1.1.1") == _run(Pii(), "a@b.com and 1.1.1.1")
    task = Pii(Pii.Config(rotate="task"))
    assert [_run(task, "x@y.com") for _ in range(3)] == ["email@example.com", "firstname.lastname@example.org",
                                                         "email@example.com"]
    assert _run(Pii(Pii.Config(public_only=False)), "at 10.0.0.1") == "at 22.214.171.124"


def test_pii_cost_is_bounded_on_hostile_text():
    import time

    from refinery.stages.pii import Pii

    # datatrove's email pattern backtracks quadratically here: 64 KB of "a!" take it about a minute
    for text in ("a!" * 500_000 + "@x.com", "a@" + "b-" * 500_000, "x!@" * 1_500 + "y" * 100_000):
        began = time.perf_counter()
        assert isinstance(Pii().process_doc(Document(id="d", url="", text=text)), Document)
        assert time.perf_counter() - began < 5.0  # a bound on hostile input, not a speed target
    assert _run(Pii(), "@" * 2_001) == "too_many_at_signs"


# --- bad words ---------------------------------------------------------------------------------

def test_bad_words_match_whole_words_from_a_local_list(tmp_path):
    from refinery.stages.c4_badwords import C4BadWords

    words = tmp_path / "en.txt"
    words.write_text("badword\ntwo words\n")
    stage = C4BadWords(C4BadWords.Config(word_lists={"en": str(words)}))
    stage.setup()
    assert _run(stage, "A BadWord here.") == "bad_words"
    assert _run(stage, "say two words now") == "bad_words"
    assert _run(stage, "badwords and subbadword are other words") == "badwords and subbadword are other words"
    assert _run(stage, "badword", language="fr") == "badword"  # no French list: passes, counted
    assert stage.extra_stats() == {"documents_with_bad_words": 2, "no_word_list_fr": 1}
    half = C4BadWords(C4BadWords.Config(word_lists={"en": str(words)}, keep_fraction=0.5, seed=3))
    half.setup()
    kept = [_run(half, f"badword number {i}") != "bad_words" for i in range(400)]
    assert 150 < sum(kept) < 250 and kept == [_run(half, f"badword number {i}") != "bad_words" for i in range(400)]


def _config(tmp_path: Path, stage: dict, name: str) -> Path:
    (tmp_path / "docs.jsonl").write_text(json.dumps({"id": "1", "text": PROSE}) + "\n")
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "input": {"paths": [str(tmp_path / "docs.jsonl")], "format": "jsonl"},
                                "stages": [stage]}))
    return path


def test_missing_or_empty_lists_and_evaluation_files_are_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"text": "too short"}) + "\n" + json.dumps({"other": PROSE}) + "\n")
    cases = [
        ({"c4_badwords": {"word_lists": {"en": str(tmp_path / "missing.txt")}}}, "stages[0].c4_badwords.word_lists"),
        ({"c4_badwords": {"word_lists": {"en": str(empty)}}}, "stages[0].c4_badwords.word_lists"),
        ({"decontaminate": {"sets": [{"name": "mmlu", "paths": [str(tmp_path / "missing.jsonl")]}]}},
         "stages[0].decontaminate.sets[0].paths"),
        ({"decontaminate": {"sets": [{"name": "mmlu", "paths": [str(short)]}]}}, "stages[0].decontaminate.sets[0].paths"),
        ({"decontaminate": {"sets": [{"name": "mmlu", "paths": [str(empty)]}]}}, "stages[0].decontaminate.sets[0].paths"),
    ]
    for number, (stage, key) in enumerate(cases):
        result = run_cli_subprocess("run", _config(tmp_path, stage, f"c{number}"), "--output", tmp_path / "out",
                                    "--dry-run")
        assert result.returncode == 2 and len(result.stderr_lines) == 1, result.stderr
        assert result.stderr_lines[0].startswith(f"refinery: config error: {key}"), result.stderr
    assert not (tmp_path / "out").exists()


# --- on the shared web shards --------------------------------------------------------------------

@pytest.fixture(scope="module")
def english_documents(shared_data, tmp_path_factory) -> list[tuple[str, str]]:
    """(id, text) of the English documents of the four web shards: extraction and language ID."""
    import pyarrow.parquet as pq

    from refinery.config import parse_config
    from refinery.io import expand_inputs
    from refinery.pipeline.run import execute

    config = parse_config({"name": "english", "input": {"paths": [str(shared_data / "web" / "*.warc.gz")]},
                           "run": {"dashboard": False}, "stages": [{"extract": {}}, {"language_id": {}}]})
    out = tmp_path_factory.mktemp("english")
    execute(config, expand_inputs(config.spec.input.paths), str(out), scheduler="sync")
    return [(r["id"], r["text"]) for p in sorted(Path(out, "documents").glob("*.parquet"))
            for r in pq.read_table(p, columns=["id", "text"]).to_pylist()]


@pytest.mark.shared
@pytest.mark.slow
def test_c4_fineweb_and_pii_agree_with_datatrove_on_english_web_documents(english_documents, tmp_path):
    pytest.importorskip("spacy")
    from datatrove.data import Document as TheirDocument
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter
    from datatrove.pipeline.formatters import PIIFormatter

    from refinery.stages.c4_filters import C4Filters
    from refinery.stages.fineweb_filters import FineWebFilters
    from refinery.stages.pii import Pii

    assert len(english_documents) > 300
    pairs = {"c4": (C4QualityFilter(), C4Filters()), "fineweb": (FineWebQualityFilter(), FineWebFilters()),
             "c4_fineweb_settings": (C4QualityFilter(filter_no_terminal_punct=False),
                                     C4Filters(C4Filters.Config(filter_no_terminal_punct=False)))}
    for name, (theirs, ours) in pairs.items():
        differ = []
        for doc_id, text in english_documents:
            their = TheirDocument(text=text, id=doc_id)
            verdict = theirs.filter(their)
            their_side = ("kept", their.text if name != "fineweb" else text) if verdict is True else ("drop", verdict[1])
            out = ours.process_doc(Document(id=doc_id, url="", text=text, language="en"))
            our_side = ("drop", out.reason) if isinstance(out, Drop) else ("kept", out.text)
            if their_side != our_side:
                differ.append((doc_id, their_side[0], our_side[0]))
        assert not differ, (name, differ[:5])  # docs/FILTERS.md: 100% on these documents
    one, ours, touched = PIIFormatter(), Pii(Pii.Config(rotate="task")), 0
    for doc_id, text in english_documents:  # datatrove's formatter as it runs: one per task, in order
        expected = one.format(text)
        assert ours.process_doc(Document(id=doc_id, url="", text=text)).text == expected, doc_id
        assert _run(Pii(), text) == PIIFormatter().format(text)  # rotate: document, against a fresh formatter
        touched += expected != text
    assert touched >= 10  # the shards hold real addresses

    # bad words: the same decision as datatrove's regular expression, with a list from the documents' words
    from datatrove.pipeline.filters import C4BadWordsFilter
    from datatrove.pipeline.filters import c4_filters as their_c4

    from refinery.stages.c4_badwords import C4BadWords

    vocabulary = sorted({w.lower().strip(".,;:!?\"'()") for _, t in english_documents for w in t.split()})
    words = tmp_path / "badwords.txt"
    words.write_text("\n".join(random.Random(1).sample([w for w in vocabulary if w.isalpha() and len(w) > 7], 300)
                                + ["new york", "e-mail"]) + "\n")
    monkeypatch_target = their_c4.cached_asset_path_or_download
    their_c4.cached_asset_path_or_download = lambda *a, **k: str(words)  # the same local list, not a download
    theirs, ours = C4BadWordsFilter(), C4BadWords(C4BadWords.Config(word_lists={"en": str(words)}))
    ours.setup()
    dropped = 0
    for doc_id, text in english_documents:
        verdict = theirs.filter(TheirDocument(text=text, id=doc_id)) is True
        out = ours.process_doc(Document(id=doc_id, url="", text=text, language="en"))
        assert verdict == (not isinstance(out, Drop)), doc_id
        dropped += not verdict
    their_c4.cached_asset_path_or_download = monkeypatch_target
    assert 20 < dropped < len(english_documents)


def _items_from_curated(shared_data: Path, count: int) -> list[str]:
    """Evaluation-like items: passages of 25 to 40 words of the curated speeches, books and
    Wikipedia, distinct, in a seeded order."""
    passages = set()
    for name in ("speeches", "books", "wikipedia"):
        with gzip.open(shared_data / "curated" / f"{name}.jsonl.gz", "rt") as lines:
            for line in lines:
                for paragraph in json.loads(line)["text"].split("\n\n"):
                    words = paragraph.split()
                    if "{" in paragraph or "|" in paragraph or "[[" in paragraph:
                        continue
                    for start in range(0, len(words) - 24, 40):
                        passages.add(" ".join(words[start:start + 40]))
    ordered = sorted(passages)
    random.Random(13).shuffle(ordered)
    return ordered[:count]


@pytest.mark.shared
@pytest.mark.slow
def test_planted_evaluation_items_are_found_and_nothing_else(english_documents, shared_data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.stages.decontaminate import Decontaminate, load_index

    items = _items_from_curated(shared_data, 1500)
    assert len(items) == 1500
    # three sets, three formats: JSONL with a text field, Parquet through a template, plain text
    with open(tmp_path / "a.jsonl", "w") as handle:
        for item in items[:500]:
            handle.write(json.dumps({"text": item}) + "\n")
    halves = [(" ".join(i.split()[:10]), " ".join(i.split()[10:])) for i in items[500:1000]]
    pq.write_table(pa.table({"question": [q for q, _ in halves], "answer": [a for _, a in halves]}), tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text("\n".join(items[1000:]) + "\n")
    config = Decontaminate.Config(sets=[
        {"name": "set-a", "paths": [str(tmp_path / "a.jsonl")]},
        {"name": "set-b", "paths": [str(tmp_path / "b.parquet")], "template": "{question} {answer}"},
        {"name": "set-c", "paths": [str(tmp_path / "c.txt")]}])
    Decontaminate.preflight(config)
    assert load_index(config).ngrams > 30_000
    stage = Decontaminate(config)
    stage.setup()

    rng = random.Random(7)
    docs = list(english_documents)
    planted = {}
    for n, position in enumerate(rng.sample(range(len(docs)), 90)):
        doc_id, text = docs[position]
        number = rng.randrange(len(items))
        item = items[number]
        words = item.split()
        if n % 3 == 0:  # the whole item, as its own paragraph
            text = text + "\n\n" + item
        elif n % 3 == 1:  # 13 to 20 of its words inside a sentence of the page
            start = rng.randrange(len(words) - 20)
            middle = len(text) // 2
            text = text[:middle] + " as they said, " + " ".join(words[start:start + rng.randint(13, 20)]) + " " + text[middle:]
        else:  # changed case and punctuation
            changed = item.upper().replace(",", "").replace(".", " . ").replace(";", ",")
            text = '"' + changed + '" ' + text
        docs[position] = (doc_id, text)
        planted[doc_id] = ("set-a" if number < 500 else "set-b" if number < 1000 else "set-c", number)
    flagged = {}
    for doc_id, text in docs:
        out = stage.process_doc(Document(id=doc_id, url="", text=text))
        if isinstance(out, Drop):
            assert out.reason == "contaminated"
            flagged[doc_id] = out.detail
    assert set(flagged) == set(planted)  # recall 1.0, and no unplanted document flagged
    for doc_id, (name, number) in planted.items():
        row = number - (0 if name == "set-a" else 500 if name == "set-b" else 1000)
        assert flagged[doc_id] == f"{name} item {row}"  # the set and the item's row in it


def test_a_run_drops_contaminated_documents_and_names_the_item(tmp_path):
    import pyarrow.parquet as pq

    item = "the quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill"
    (tmp_path / "eval.txt").write_text("a line too short\n" + item + "\n")
    docs = [{"id": "clean", "text": PROSE}, {"id": "dirty", "text": PROSE + " THE QUICK, BROWN FOX JUMPS over the lazy dog "
                                                                   "while the cat watches from the warm window-sill!"}]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    config = tmp_path / "d.yaml"
    config.write_text(json.dumps({"name": "d", "input": {"paths": [str(tmp_path / "docs.jsonl")], "format": "jsonl"},
                                  "stages": [{"decontaminate": {"sets": [{"name": "evalset",
                                                                          "paths": [str(tmp_path / "eval.txt")]}]}}]}))
    result = run_cli_subprocess("run", config, "--output", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-2000:]
    kept = pq.read_table(next((tmp_path / "out" / "documents").glob("*.parquet")))["id"].to_pylist()
    dropped = pq.read_table(next((tmp_path / "out" / "dropped" / "decontaminate").glob("*.parquet"))).to_pylist()
    assert kept == ["clean"] and [(d["id"], d["reason"], d["detail"]) for d in dropped] == \
        [("dirty", "contaminated", "evalset item 1")]
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    stage = next(s for s in stats["funnel"] if s["stage"] == "decontaminate")
    assert stage["dropped"] == {"contaminated": 1} and stage["extra"] == {"contaminated_by_set": {"evalset": 1}}
