"""`refinery report OUTPUT`: one self-contained OUTPUT/report.html for a run or a mix.

Everything is read from what the run wrote (stats.json, dedup/, dropped/, documents/,
tokens/manifest.json); charts are matplotlib SVG inlined into the page, so it opens offline
with no script and no network. Document samples are read a row group at a time, so a report of
a large run stays small and quick.
"""

from __future__ import annotations

import html
import io
import json
import random
from pathlib import Path

import pyarrow.parquet as pq

from refinery.io import write_text_atomic

# RefinedWeb's funnel (Penedo et al. 2023, Figure 2): share of CommonCrawl documents kept at its
# three named checkpoints, matched to the last refinery stage of each.
REFINEDWEB_FUNNEL = [
    ("RW-Raw (after language identification)", "language_id", 0.4751),
    ("RW-Filtered (after line-wise corrections)", "line_filter", 0.2334),
    ("RefinedWeb (after deduplication)", None, 0.1167),  # None: the run's last stage
]
SAMPLE_CHARS = 1500
KEPT_SAMPLES = 8
DROPPED_SAMPLES = 3  # per stage and reason
MAX_SIZE_BARS = 25


def write_report(out_dir: str | Path, tokenizer: str | None = None, seed: int = 0) -> Path:
    """Writes OUTPUT/report.html and returns its path."""
    out = Path(out_dir)
    loaded = _load_tokenizer(tokenizer) if tokenizer else None  # a bad --tokenizer fails before any work
    stats = json.loads((out / "stats.json").read_text())
    rng = random.Random(seed)
    if stats.get("kind") == "mix":
        title = f"refinery mix report: {stats['name']}"
        body = _mix_sections(out, stats, rng)
    else:
        title = f"refinery run report: {stats['name']}"
        body = _run_sections(out, stats, rng, loaded)
    path = out / "report.html"
    write_text_atomic(path, _page(title, body))
    return path


# --- a pipeline run ------------------------------------------------------------------------------

def _run_sections(out: Path, stats: dict, rng: random.Random, tokenizer=None, heading: str = "") -> list[str]:
    funnel = stats["funnel"]
    records, kept = stats["input"]["records"], stats["output"]["documents"]
    parts = [f"<p class='summary'>{heading}{_e(stats['name'])}: {records:,} input records in "
             f"{stats['input']['shards']:,} shards &rarr; <b>{kept:,}</b> documents "
             f"({kept / records:.2%} kept) &middot; config <code>{_e(stats.get('config') or '')}</code></p>"
             if records else "<p class='summary'>The run read no records.</p>"]
    parts += [_section("funnel", "Funnel: share of input records kept after each stage", [
        _svg(_funnel_chart(funnel)), _funnel_table(funnel),
        "<p class='note'>Dashed markers: RefinedWeb's published funnel (Penedo et al. 2023, Figure 2), share of "
        "CommonCrawl documents kept: RW-Raw 47.51%, RW-Filtered 23.34%, RefinedWeb 11.67%.</p>"])]
    parts.append(_section("languages", "Languages", _language_parts(stats)))
    if stats.get("dedup"):
        parts.append(_section("dedup", "Deduplication", _dedup_parts(stats["dedup"])))
    parts.append(_section("tokens", "Tokens per shard", _shard_size_parts(out, stats, tokenizer)))
    parts.append(_section("lengths", "Document lengths before and after filtering", _length_parts(funnel)))
    parts.append(_section("samples", "Samples", _sample_parts(out, rng)))
    return parts


def _funnel_chart(funnel: list[dict]):
    """Kept after each stage (blue), and what the stage dropped, by reason, stacked to its right,
    so each bar ends where the stage began."""
    import matplotlib.pyplot as plt

    fig, ax = _figure(10, 0.5 * len(funnel) + 1.6)
    names = [row["stage"] for row in funnel]
    records = funnel[0]["docs_in"] or 1 if funnel else 1
    kept = [100 * row["kept_of_input"] for row in funnel]
    y = list(range(len(names)))[::-1]
    ax.barh(y, kept, color="#3b78b0", height=0.6, label="kept of input records")
    palette = plt.get_cmap("tab20").colors[2:]
    colors: dict[str, tuple] = {}
    for yy, row, value in zip(y, funnel, kept):
        left = value
        for reason, count in sorted(row["dropped"].items(), key=lambda kv: -kv[1]):
            if not count:
                continue
            color = colors.setdefault(reason, palette[len(colors) % len(palette)])
            width = 100 * count / records
            ax.barh(yy, width, left=left, color=color, height=0.6, edgecolor="white", linewidth=0.5)
            left += width
        ax.text(left + 1, yy, f"{value:.1f}% kept", va="center", fontsize=8)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color="#3b78b0", label="kept of input records"),
               *(Patch(color=color, label=f"dropped: {reason}") for reason, color in colors.items())]
    position = {name: yy for name, yy in zip(names, y)}
    for label, stage, share in REFINEDWEB_FUNNEL:
        yy = position.get(stage if stage else names[-1])
        if yy is not None:
            ax.plot([100 * share] * 2, [yy - 0.4, yy + 0.4], color="#d0641e", linestyle="--", linewidth=2)
            ax.text(100 * share, yy + 0.42, f"RW {100 * share:.2f}%", color="#d0641e", fontsize=7, ha="center")
    handles.append(Line2D([], [], color="#d0641e", linestyle="--", label="RefinedWeb, published (Figure 2)"))
    ax.set_yticks(y, names)
    ax.set_xlim(0, 118)
    ax.set_xlabel("% of input records")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
    return fig


def _funnel_table(funnel: list[dict]) -> str:
    rows = []
    for row in funnel:
        reasons = ", ".join(f"{_e(reason)} {count:,}" for reason, count in
                            sorted(row["dropped"].items(), key=lambda kv: -kv[1]) if count)
        rows.append(f"<tr><td>{_e(row['stage'])}</td><td>{row['docs_in']:,}</td><td>{row['docs_out']:,}</td>"
                    f"<td>{row['kept_of_input']:.2%}</td><td>{reasons or '&ndash;'}</td></tr>")
    return ("<table><tr><th>stage</th><th>in</th><th>out</th><th>kept of input</th><th>dropped, by reason</th></tr>"
            + "".join(rows) + "</table>")


def _language_parts(stats: dict) -> list[str]:
    seen = stats.get("languages", {}).get("languages_seen", {})
    kept = stats.get("languages", {}).get("languages_kept", {})
    if not seen:
        return ["<p class='note'>This run has no language_id stage.</p>"]
    top = sorted(seen.items(), key=lambda kv: -kv[1])[:25]
    fig, ax = _figure(9, 3)
    ax.bar([k for k, _ in top], [v for _, v in top], color="#7a9cc6", width=0.6, label="identified")
    ax.bar([k for k, _ in top], [kept.get(k, 0) for k, _ in top], color="#3b78b0", width=0.6,
           label="kept (above threshold)")
    ax.set_xlim(-1, max(len(top), 6))
    ax.set_ylabel("documents")
    ax.legend(fontsize=8)
    parts = [_svg(fig)]
    stages = [row for row in stats["funnel"] if set(row.get("languages_out", {})) - {""}]
    languages = sorted({lang for row in stages for lang in row["languages_out"]} - {""})
    if len(languages) > 1:  # per-language funnel, from language identification on
        fig, ax = _figure(9, 3.5)
        for lang in languages:
            start = stages[0]["languages_out"].get(lang, 0)
            if start:
                ax.plot([row["stage"] for row in stages],
                        [100 * row["languages_out"].get(lang, 0) / start for row in stages], marker="o", label=lang)
        ax.set_ylabel("% of identified documents kept")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.legend(fontsize=8, ncol=4)
        header = "".join(f"<th>{_e(lang)}</th>" for lang in languages)
        rows = "".join(f"<tr><td>{_e(row['stage'])}</td>" + "".join(
            f"<td>{row['languages_out'].get(lang, 0):,}</td>" for lang in languages) + "</tr>" for row in stages)
        parts += ["<h3>Per-language funnel</h3>", _svg(fig), f"<table><tr><th>stage</th>{header}</tr>{rows}</table>"]
    return parts


def _dedup_parts(dedup: dict) -> list[str]:
    per_stage = dedup.get("per_stage", {})
    parts = []
    fig, ax = _figure(6, 2.6)
    names = list(per_stage)
    ax.bar(names, [per_stage[n].get("removed", 0) for n in names], color="#3b78b0")
    ax.set_ylabel("documents removed")
    parts.append("<h3>Removed by dedup kind</h3>" + _svg(fig))
    selection = dedup.get("selection")
    if selection:
        cutoff = selection["cutoff"]
        what = "mean corpus-wide percentile" if cutoff and cutoff["percentiles"] else " + ".join(selection["scores"])
        parts.append(f"<p class='note'>{selection['stage']} kept the top {selection['keep_percent']:g}% of the "
                     f"{selection['by']} by {what}: {selection['documents_kept']:,} of {selection['documents_in']:,} "
                     f"documents, {selection['kept_share']:.2%} of the {selection['by']}"
                     + (f", cut-off {cutoff['value']:.6g} (one for the whole corpus)" if cutoff else "") + ".</p>")
    touched = per_stage.get("substring_dedup", {})
    if touched:
        parts.append(f"<p class='note'>substring_dedup cut {touched.get('bytes_cut', 0):,} bytes from "
                     f"{touched.get('documents_touched', 0):,} documents and dropped {touched.get('removed', 0):,} "
                     "left too short.</p>")
    sizes = {n: s["cluster_sizes"] for n, s in per_stage.items() if s.get("cluster_sizes")}
    if sizes:
        bins = sorted({int(k) for histogram in sizes.values() for k in histogram})
        labels = [str(b) for b in bins][:MAX_SIZE_BARS - 1]
        if len(bins) >= MAX_SIZE_BARS:
            labels.append(f">= {bins[MAX_SIZE_BARS - 1]}")
        fig, ax = _figure(7, 2.8)
        width = 0.8 / len(sizes)
        for n, (name, histogram) in enumerate(sizes.items()):
            counts = [0] * len(labels)
            for key, count in histogram.items():
                counts[min(bins.index(int(key)), len(labels) - 1)] += count
            ax.bar([x + n * width for x in range(len(labels))], counts, width=width, label=name)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels)
        ax.set_xlabel("cluster size (documents)")
        ax.set_ylabel("clusters")
        if max(c for h in sizes.values() for c in h.values()) > 50 * min(c for h in sizes.values() for c in h.values()):
            ax.set_yscale("log")
        ax.legend(fontsize=8)
        parts.append("<h3>Cluster sizes</h3>" + _svg(fig))
    else:
        parts.append("<p class='note'>No duplicate clusters were found.</p>")
    domains = dedup.get("top_domains", [])
    if domains:
        rows = "".join(f"<tr><td>{_e(d['domain'])}</td><td>{d['documents']:,}</td><td>{d['removed']:,}</td>"
                       f"<td>{d['duplicate_rate']:.1%}</td></tr>" for d in domains[:20])
        parts.append("<h3>Most-duplicated domains</h3><table><tr><th>domain</th><th>documents</th><th>removed</th>"
                     f"<th>duplicate rate</th></tr>{rows}</table>")
    return parts


def _shard_size_parts(out: Path, stats: dict, tokenizer=None) -> list[str]:
    """Documents, characters and tokens per output shard: BPE tokens with ``tokenizer`` (a loaded
    `tokenizers.Tokenizer`, which reads the documents), else the whitespace-separated words the
    run counted as it wrote them (a pipeline run has no tokenizer of its own)."""
    encode = None
    if tokenizer is not None:
        encode = lambda texts: sum(len(e.ids) for e in tokenizer.encode_batch(texts, add_special_tokens=False))  # noqa: E731
    unit = "BPE tokens" if encode else "words (whitespace tokens)"
    rows, labels, counts = [], [], []
    for shard in stats.get("shards", []):
        path = out / "documents" / f"{shard['shard_id']}.parquet"
        chars, tokens = shard.get("characters", 0), shard.get("words", 0)  # counted by the run as it wrote
        if path.exists() and (encode or "words" not in shard):  # BPE tokens asked for, or an older run: read
            chars = tokens = 0
            for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=1024):
                texts = batch.column(0).to_pylist()
                chars += sum(map(len, texts))
                tokens += encode(texts) if encode else sum(len(t.split()) for t in texts)
        labels.append(shard["shard_id"])
        counts.append(tokens)
        rows.append(f"<tr><td>{_e(shard['shard_id'])}</td><td>{shard['records']:,}</td><td>{shard['documents']:,}</td>"
                    f"<td>{chars:,}</td><td>{tokens:,}</td></tr>")
    if not rows:
        return ["<p class='note'>No shards.</p>"]
    fig, ax = _figure(9, max(1.6, 0.3 * len(labels) + 0.8))
    ax.barh(range(len(labels))[::-1], counts, color="#3b78b0")
    ax.set_yticks(range(len(labels))[::-1], labels, fontsize=7)
    ax.set_xlabel(unit)
    total = sum(counts)
    return [f"<p>{total:,} {unit} in {stats['output']['documents']:,} documents. Token shards with exact BPE counts "
            "per source come from a mix config (`refinery run configs/falcon180b_mix.yaml`); `refinery report OUTPUT "
            "--tokenizer PATH` counts BPE tokens here.</p>" if not encode else f"<p>{total:,} {unit}.</p>",
            _svg(fig), f"<table><tr><th>shard</th><th>records</th><th>documents</th><th>characters</th>"
                       f"<th>{unit}</th></tr>{''.join(rows)}</table>"]


def _load_tokenizer(path: str):
    """The tokenizer at ``path`` (a tokenizer.json, or a folder holding one); anything else is a
    ConfigError naming ``--tokenizer``."""
    from refinery import tokenizer as tk
    from refinery.config import ConfigError

    file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise ConfigError("--tokenizer", f"no tokenizer.json at {str(path)!r}")
    try:
        return tk.load(file)
    except Exception as err:  # noqa: BLE001 - the tokenizers library raises a bare Exception on a bad file
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise ConfigError("--tokenizer", f"{str(file)!r} is not a tokenizer.json: {reason}") from None


def _length_parts(funnel: list[dict]) -> list[str]:
    with_text = [row for row in funnel if set(row.get("lengths_out", {})) - {"0"}]
    if not with_text:
        return ["<p class='note'>No length counts in stats.json (a run from before refinery recorded them).</p>"]
    before = next((row for row in with_text if row["stage"] == "language_id"), with_text[0])
    after = with_text[-1]
    bins = sorted({int(k) for row in (before, after) for k in row["lengths_out"]})
    fig, ax = _figure(8, 3)
    for n, (row, label, color) in enumerate(((before, f"before filtering (after {before['stage']})", "#7a9cc6"),
                                             (after, f"after filtering and dedup (after {after['stage']})",
                                              "#3b78b0"))):
        ax.bar([x + 0.4 * n for x in range(len(bins))], [row["lengths_out"].get(str(b), 0) for b in bins],
               width=0.4, color=color, label=label)
    ax.set_xticks([x + 0.2 for x in range(len(bins))], [_length_label(b) for b in bins], fontsize=7, rotation=30)
    ax.set_xlabel("characters")
    ax.set_ylabel("documents")
    ax.legend(fontsize=8)
    return [_svg(fig), f"<p class='note'>{before['docs_out']:,} documents before filtering, {after['docs_out']:,} "
                       "after.</p>"]


def _length_label(low: int) -> str:
    def short(n: int) -> str:
        return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k" if n >= 1000 else str(n)

    return "0" if low == 0 else f"{short(low)}-{short(2 * low - 1)}" if low > 1 else "1"


def _sample_parts(out: Path, rng: random.Random) -> list[str]:
    parts = ["<h3>Kept</h3>"]
    files = sorted((out / "documents").glob("*.parquet"))
    kept = _random_rows(files, KEPT_SAMPLES, rng, ["id", "url", "text"])
    parts += [_document(row, "kept") for row in kept] or ["<p class='note'>No documents were kept.</p>"]
    parts.append("<h3>Dropped, by stage and reason</h3>")
    dropped_dir = out / "dropped"
    # a stage folder can be empty: a rerun removed the samples of drops that no longer happen
    stages = sorted(p.name for p in dropped_dir.iterdir() if any(p.glob("*.parquet"))) if dropped_dir.is_dir() else []
    for stage in stages:
        rows = [row for f in sorted((dropped_dir / stage).glob("*.parquet"))  # bounded samples
                for row in pq.read_table(f, columns=["id", "url", "reason", "text", "kept_id"]).to_pylist()]
        for reason in sorted({r["reason"] for r in rows}):
            chosen = [r for r in rows if r["reason"] == reason]
            rng.shuffle(chosen)
            parts.append(f"<h4>{_e(stage)} &middot; {_e(reason)}</h4>")
            parts += [_document(row, f"{stage} / {reason}") for row in chosen[:DROPPED_SAMPLES]]
    if not stages:
        parts.append("<p class='note'>No dropped samples were kept (run.dropped_samples: 0).</p>")
    return parts


def _random_rows(files: list[Path], count: int, rng: random.Random, columns: list[str]) -> list[dict]:
    """Up to ``count`` rows from random row groups of ``files``, read one row group at a time."""
    groups = [(f, g) for f in files for g in range(pq.ParquetFile(f).num_row_groups)]
    rng.shuffle(groups)
    rows: list[dict] = []
    for path, group in groups[:count]:
        table = pq.ParquetFile(path).read_row_group(group, columns=columns)
        if table.num_rows:
            rows.append(table.slice(rng.randrange(table.num_rows), 1).to_pylist()[0])
    first_group = None
    while len(rows) < count and groups:  # few row groups: more rows from the first
        if first_group is None:  # read once, not once per extra row
            first_group = pq.ParquetFile(groups[0][0]).read_row_group(groups[0][1], columns=columns).to_pylist()
        taken = {r["id"] for r in rows}
        extra = [r for r in first_group if r["id"] not in taken]
        if not extra:
            break
        rows.append(rng.choice(extra))
    return rows


def _document(row: dict, label: str) -> str:
    text = row.get("text") or ""
    shown = text[:SAMPLE_CHARS] + ("…" if len(text) > SAMPLE_CHARS else "")
    kept_id = f" &middot; duplicate of <code>{_e(row['kept_id'])}</code>" if row.get("kept_id") else ""
    return (f"<details class='doc'><summary><span class='tag'>{_e(label)}</span> {_e(row.get('url') or row['id'])}"
            f"{kept_id}</summary><pre>{_e(shown)}</pre></details>")


# --- a mix ---------------------------------------------------------------------------------------

def _mix_sections(out: Path, stats: dict, rng: random.Random) -> list[str]:
    from refinery.mix.card import epoch_cells

    sources = stats["sources"]
    names = list(sources)
    fig, ax = _figure(8, 3)
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [100 * sources[n]["target_share"] for n in names], width=0.4, label="target",
           color="#7a9cc6")
    ax.bar([x + 0.2 for x in xs], [100 * sources[n]["achieved_share"] for n in names], width=0.4, label="achieved",
           color="#3b78b0")
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_ylabel("% of tokens")
    ax.legend(fontsize=8)
    rows = "".join(f"<tr><td>{_e(n)}</td><td>{s['target_share']:.1%}</td><td>{s['achieved_share']:.2%}</td>"
                   f"<td>{s['tokens']:,}</td><td>{s['documents']:,}</td>"
                   + "".join(f"<td>{cell}</td>" for cell in epoch_cells(s)) + "</tr>"
                   for n, s in sources.items())
    parts = [f"<p class='summary'>{stats['output']['tokens']:,} tokens in {stats['output']['files']} files.</p>",
             _section("mix", "Mix: target and achieved token shares", [
                 _svg(fig), "<table><tr><th>source</th><th>target</th><th>achieved</th><th>tokens</th>"
                            f"<th>documents</th><th>whole epochs</th><th>passes</th></tr>{rows}</table>"]
                 + [f"<p class='note'>Short: {_e(line)}</p>" for line in stats.get("short", [])])]
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    fig, ax = _figure(9, max(1.6, 0.3 * len(manifest["files"]) + 0.8))
    left = [0] * len(manifest["files"])
    for name in names:
        values = [f["sources"].get(name, {}).get("tokens", 0) for f in manifest["files"]]
        ax.barh(range(len(values))[::-1], values, left=left, label=name)
        left = [a + b for a, b in zip(left, values)]
    ax.set_yticks(range(len(manifest["files"]))[::-1], [f["name"] for f in manifest["files"]], fontsize=7)
    ax.set_xlabel("tokens")
    ax.legend(fontsize=8, ncol=3)
    per_file = "".join(f"<tr><td>{_e(f['name'])}</td><td>{f['documents']:,}</td><td>{f['tokens']:,}</td></tr>"
                       for f in manifest["files"])
    parts.append(_section("tokens", "Tokens per source and per shard", [
        _svg(fig), f"<table><tr><th>file</th><th>documents</th><th>tokens</th></tr>{per_file}</table>",
        f"<p class='note'>Tokenizer <code>{_e(manifest['tokenizer']['path'])}</code>, vocab "
        f"{manifest['tokenizer']['vocab_size']:,}, {manifest['dtype']}.</p>"]))
    for name in stats.get("pipelines", {}):
        source = out / "sources" / name
        if (source / "stats.json").exists():
            inner = _run_sections(source, json.loads((source / "stats.json").read_text()), rng, None,
                                  heading="pipeline source ")
            parts.append(f"<h2 id='source-{_e(name)}'>Source {_e(name)}</h2>" + "".join(inner))
    kept = _random_rows(sorted((out / "documents").glob("*.parquet")), KEPT_SAMPLES, rng,
                        ["id", "source", "text"])
    parts.append(_section("samples", "Samples of the mix",
                          [_document({**row, "url": f"{row['source']}: {row['id']}"}, row["source"]) for row in kept]))
    return parts


# --- page and charts -----------------------------------------------------------------------------

def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "refinery", "font.size": 9})
    fig, ax = plt.subplots(figsize=(width, height))
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    svg = buffer.getvalue()
    return "<div class='chart'>" + svg[svg.index("<svg"):] + "</div>"


def _section(anchor: str, title: str, parts: list[str]) -> str:
    return f"<section id='{anchor}'><h2>{_e(title)}</h2>{''.join(parts)}</section>"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; overflow-wrap: anywhere; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .85em; max-width: 100%; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: right; vertical-align: top; }
td:first-child, th:first-child, td:last-child { text-align: left; }
.chart svg { max-width: 100%; height: auto; }
.note { color: #555; font-size: .9em; } .summary { font-size: 1.05em; }
details.doc { margin: .3em 0; border: 1px solid #e4e4e4; border-radius: 4px; padding: .3em .6em; }
details.doc pre { white-space: pre-wrap; word-break: break-word; font-size: .8em; max-height: 24em; overflow: auto; }
.tag { background: #eef3f9; border-radius: 3px; padding: 0 .4em; font-size: .8em; }
nav a { margin-right: 1em; }
"""


def _page(title: str, body: list[str]) -> str:
    links = ("funnel", "languages", "dedup", "mix", "tokens", "lengths", "samples")
    joined = "".join(body)
    nav = "".join(f"<a href='#{a}'>{a}</a>" for a in links if f"id='{a}'" in joined)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{STYLE}</style></head>"
            f"<body><h1>{_e(title)}</h1><nav>{nav}</nav>{joined}</body></html>\n")
