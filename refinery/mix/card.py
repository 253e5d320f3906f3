"""The mix's dataset card: OUTPUT/README.md, a Hugging Face dataset card with YAML metadata."""

from __future__ import annotations

from pathlib import Path

from refinery.io import write_text_atomic
from refinery.mix.spec import MixSpec


def _size_category(documents: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")):
        if documents < limit:
            return label
    return "n>100M"


def epoch_cells(source: dict) -> tuple[str, str]:
    """A source's ``epochs`` as stats.json counts them (whole passes over it), and its tokens in
    the mix as a multiple of its own (0.40: part of one pass; 2.50: two passes and a half). The
    card and the report both show these two."""
    available = source.get("available_tokens") or 0
    return str(source["epochs"]), f"{source['tokens'] / available:.2f}" if available else "-"


def write_dataset_card(out: Path, spec: MixSpec, stats: dict, manifest: dict) -> None:
    """OUTPUT/README.md: a Hugging Face dataset card with YAML metadata."""
    languages = sorted({lang for s in spec.sources for lang in s.languages})
    licenses = sorted({s.license for s in spec.sources})
    lines = ["---", f"pretty_name: {spec.name}", "language:", *[f"- {lang}" for lang in languages],
             "license: other" if len(licenses) > 1 else f"license: {licenses[0]}",
             "size_categories:", f"- {_size_category(manifest['documents'])}",
             "task_categories:", "- text-generation", "configs:", "- config_name: default",
             "  data_files:", "  - split: train", "    path: documents/*.parquet", "---", "",
             f"# {spec.name}", "",
             "A pretraining mix built with refinery (RefinedWeb-style Macrodata Refinement).",
             "", "## Sources and shares (counted in tokens)", "",
             ("| source | license | languages | target share | achieved share | tokens | documents | whole epochs "
              "| passes |"), "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in stats["sources"].items():
        lines.append(f"| {name} | {s['license']} | {', '.join(s['languages'])} | {s['target_share']:.1%} "
                     f"| {s['achieved_share']:.2%} | {s['tokens']:,} | {s['documents']:,} | "
                     f"{' | '.join(epoch_cells(s))} |")
    if stats["short"]:
        lines += ["", "**Sources that ran short of their target:**", *[f"- {line}" for line in stats["short"]]]
    for name, pipeline in stats["pipelines"].items():
        lines += ["", f"## Funnel of {name}", "", "| stage | in | out | kept of input |", "|---|---:|---:|---:|"]
        lines += [f"| {f['stage']} | {f['docs_in']:,} | {f['docs_out']:,} | {f['kept_of_input']:.1%} |"
                  for f in pipeline["funnel"]]
        if pipeline.get("dedup"):
            removed = {k: v.get("removed", 0) for k, v in pipeline["dedup"]["per_stage"].items()}
            lines += ["", "Dedup removed: " + ", ".join(f"{k} {v:,}" for k, v in removed.items()) + "."]
    for name, summary in stats.get("curated_dedup", {}).items():
        removed = {k: v.get("removed", 0) for k, v in summary["per_stage"].items()}
        lines += ["", f"Dedup of {name} removed: " + ", ".join(f"{k} {v:,}" for k, v in removed.items()) + "."]
    if stats.get("heldout"):
        lines += ["", "## Held-out evaluation parts", "",
                  "Records held out of the mix by a hash of their id (never trained on), tokenized for "
                  "`refinery train`'s eval sets:", ""]
        lines += [f"- {name}: {h['documents']:,} documents, {h['tokens']:,} tokens in `heldout/{name}/`"
                  for name, h in stats["heldout"].items()]
    lines += ["", "## Tokenizer", "",
              f"Byte-level BPE, vocab {manifest['tokenizer']['vocab_size']:,}: `{manifest['tokenizer']['path']}` "
              f"(sha256 `{manifest['tokenizer']['sha256'][:16]}`); `<|endoftext|>` = {manifest['tokenizer']['eos_id']} ends every document; "
              f"tokens are {manifest['dtype']}.", "",
              "## Loading", "", "```python", "import pandas as pd",
              'docs = pd.read_parquet("documents/")  # id, source, repetition, text', "```", "",
              f"Token shards in `tokens/` ({', '.join(spec.tokenize.formats)}): Megatron-LM `part-*.bin/.idx` "
              "and datatrove/nanotron `part-*.ds` (+ `.ds.index`, `.ds.metadata`); `tokens/manifest.json` lists "
              f"tokens per source and per file. Documents are shuffled globally with seed {spec.mix.seed}.", ""]
    write_text_atomic(out / "README.md", "\n".join(lines))
