"""`refinery` command line."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys

EXIT_CONFIG = 2

DESCRIPTION = """\
refinery: RefinedWeb-style web-data curation (Macrodata Refinement) on a Dask DAG.

Reads CommonCrawl WARC/ARC files (local paths, s3:// or https://), extracts main text,
identifies the language and writes Parquet with a stage-by-stage funnel in stats.json."""

RUN_EPILOG = """\
examples:
  refinery run configs/english.yaml                     # embedded sample input
  refinery run configs/english.yaml --input 'data/*.warc.gz' --output runs/en
  refinery run configs/english.yaml --input s3://commoncrawl/crawl-data/CC-MAIN-2024-22/segments/1715971057216.39/warc/CC-MAIN-20240517233122-20240518023122-00000.warc.gz
  refinery run configs/english.yaml --scheduler tcp://10.0.0.5:8786

outputs: OUTPUT/documents/*.parquet (one file per input shard) and OUTPUT/stats.json.
exit codes: 0 done, 2 bad configuration or unusable output directory, 1 anything else."""


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refinery", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"refinery {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a pipeline config over WARC inputs",
        description="Run a pipeline: one Dask task per input shard, then the global phases.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", help="pipeline YAML, e.g. configs/english.yaml")
    run.add_argument("--input", action="extend", nargs="+", metavar="GLOB_OR_URL",
                     help="replaces the config's inputs: one or more (local globs, s3://, https://), and it may be "
                          "repeated; relative paths are from the current directory")
    run.add_argument("--input-list", metavar="FILE",
                     help="replaces the config's inputs with the paths or URLs listed in FILE, one a line "
                          "(a Common Crawl warc.paths.gz or wet.paths.gz, or any list; local or remote)")
    run.add_argument("--base-url", metavar="URL",
                     help="put in front of --input-list entries without a scheme, e.g. s3://commoncrawl/ or "
                          "https://data.commoncrawl.org/")
    run.add_argument("--select", metavar="I/N",
                     help="with --input-list: only every N-th entry from the I-th (1-based), a deterministic 1/N")
    run.add_argument("--output", metavar="DIR", help="output directory (default: the config's `output`, "
                                                      "else runs/NAME)")
    run.add_argument("--workers", type=_positive_int, metavar="N",
                     help="worker processes of the local cluster (default: one per core)")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="connect to a running dask.distributed scheduler (tcp://host:port); "
                          "'sync' runs everything in this process, for debugging")
    run.add_argument("--limit", type=_positive_int, metavar="N",
                     help="read at most N records from each input shard")
    run.add_argument("--force", action="store_true", help="ignore results of earlier runs in OUTPUT")

    trainer = commands.add_parser("train", help="train a tiny Falcon on a run's token shards",
                                  description="Trains transformers' FalconForCausalLM on OUTPUT/tokens of a mix "
                                              "run; see configs/train/tiny-falcon.yaml.")
    trainer.add_argument("config", help="training YAML, e.g. configs/train/tiny-falcon.yaml")
    trainer.add_argument("--output", metavar="DIR", help="default: the config's `output`, else runs/train/NAME")
    trainer.add_argument("--force", action="store_true", help="train again even if OUTPUT holds a finished training")

    ablate = commands.add_parser(
        "ablate", help="build data variants, train the same tiny Falcon on each, compare held-out bits per byte",
        description="Runs each variant of configs/ablation.yaml (raw, filtered, refined) over the same inputs, "
                    "tokenizes them with one tokenizer, trains the same model on the same token budget and "
                    "writes OUTPUT/ablation.md, ablation.json and ablation.png.")
    ablate.add_argument("config", help="ablation YAML, e.g. configs/ablation.yaml")
    ablate.add_argument("--input", action="extend", nargs="+", metavar="GLOB_OR_URL",
                        help="replaces the config's inputs: one or more, and it may be repeated")
    ablate.add_argument("--output", metavar="DIR", help="default: the config's `output`, else runs/NAME")
    ablate.add_argument("--workers", type=_positive_int, metavar="N", help="worker processes of the local cluster")
    ablate.add_argument("--scheduler", metavar="ADDRESS", help="a dask.distributed scheduler, or 'sync'")
    ablate.add_argument("--force", action="store_true", help="ignore results of earlier runs in OUTPUT")
    ablate.add_argument("--preset", metavar="NAME", help="model and budget for the machine: cpu-small (the shipped "
                                                         "size, < 30 min on 2 cores), cpu-large (4x tokens, 2 more "
                                                         "layers), gpu (~50M parameters, 200M tokens, bf16)")

    classifier = commands.add_parser("classifier", help="train a fastText quality classifier (DCLM's recipe)")
    classifier_commands = classifier.add_subparsers(dest="classifier_command", metavar="ACTION", required=True)
    ctrain = classifier_commands.add_parser(
        "train", help="train on reference sources against a sample of a pipeline run's documents",
        description="Runs the config's pipeline sources, samples both sides with a seed, trains fastText with word "
                    "bigrams and writes OUTPUT/model.bin, metrics.json (held-out AUC, precision, recall), "
                    "features.json and MODEL_CARD.md; see configs/classifier.yaml and docs/QUALITY.md.")
    ctrain.add_argument("config", help="classifier YAML, e.g. configs/classifier.yaml")
    ctrain.add_argument("--output", metavar="DIR", help="default: the config's `output`, else runs/NAME")
    ctrain.add_argument("--workers", type=_positive_int, metavar="N", help="worker processes of the local cluster")
    ctrain.add_argument("--scheduler", metavar="ADDRESS", help="a dask.distributed scheduler, or 'sync'")
    ctrain.add_argument("--force", action="store_true", help="ignore results of earlier runs in OUTPUT")

    tok = commands.add_parser("tokenizer", help="train a Falcon-style byte-level BPE tokenizer")
    tok_commands = tok.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)
    train = tok_commands.add_parser(
        "train", help="train on a sample of a run's documents",
        description="Trains a byte-level BPE (Falcon's layout: 11 special tokens at ids 0-10, "
                    "<|endoftext|> at 11) with the `tokenizers` library on documents/*.parquet.")
    train.add_argument("inputs", nargs="+", metavar="PARQUET_OR_DIR",
                       help="Parquet files or run output folders (their documents/*.parquet are read)")
    train.add_argument("--output", required=True, metavar="DIR", help="where tokenizer.json is written")
    train.add_argument("--vocab-size", type=_positive_int, default=65024, metavar="N")
    train.add_argument("--sample-bytes", type=_positive_int, default=200_000_000, metavar="N",
                       help="train on at most N bytes of text, read in file order (default 200 MB)")
    run.add_argument("--dry-run", action="store_true", help="validate, list the shards and stages, and stop")

    report = commands.add_parser(
        "report", help="write OUTPUT/report.html: funnel, languages, dedup, mix, tokens, lengths, samples",
        description="Writes a self-contained HTML report (inline SVG charts, no network) of a run or mix output.")
    report.add_argument("output", metavar="OUTPUT", help="a `refinery run` output folder")
    report.add_argument("--tokenizer", metavar="PATH", help="count BPE tokens per shard with this tokenizer.json "
                                                           "(a pipeline run has none of its own)")
    report.add_argument("--seed", type=int, default=0, help="which random samples are shown")

    inspect = commands.add_parser(
        "inspect", help="print kept or dropped documents with their URL, stage and reason",
        description="Prints matching documents of OUTPUT: kept ones (documents/) and the dropped samples of each "
                    "stage (dropped/STAGE/).",
        epilog="examples:\n  refinery inspect runs/english --stage gopher_quality --reason too_few_alpha_words\n"
               "  refinery inspect runs/english --stage kept --grep 'cookie|subscribe' --sample 3",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    inspect.add_argument("output", metavar="OUTPUT", help="a `refinery run` output folder")
    inspect.add_argument("--stage", metavar="S", help="`kept`, or a stage whose dropped documents to show "
                                                       "(default: all)")
    inspect.add_argument("--reason", metavar="R", help="only documents dropped for this reason")
    inspect.add_argument("--grep", metavar="PATTERN", help="only documents whose text or URL matches this "
                                                           "regular expression (case-insensitive)")
    inspect.add_argument("--sample", type=_positive_int, default=5, metavar="N", help="show N at random (default 5)")
    inspect.add_argument("--seed", type=int, default=0, help="which random ones")
    inspect.add_argument("--chars", type=_positive_int, default=1200, metavar="N",
                         help="show at most N characters of each text (default 1200)")
    return parser


def _version() -> str:
    from refinery import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    from refinery.config import ConfigError

    commands = {"run": command_run, "tokenizer": command_tokenizer_train, "train": command_train,
                "ablate": command_ablate, "report": command_report, "inspect": command_inspect,
                "classifier": command_classifier_train}
    try:
        return commands[args.command](args)
    except ConfigError as err:  # or a UsageError: `refinery: error: ...`, not a config problem
        print(f"refinery: {err.label}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("refinery: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return _failed(args)
        # every output is written to a temporary name and renamed when whole, so nothing is half-written
        where = err.filename or getattr(args, "output_dir", None) or "the output"
        _print_logs(args)  # before: the last line says what to do
        print(f"refinery: could not write {where}: {os.strerror(err.errno)}; free some space and run the same "
              "command again to resume", file=sys.stderr)
        return EXIT_CONFIG
    except Exception:
        return _failed(args)


def _failed(args: argparse.Namespace) -> int:
    """An unexpected error: its traceback, then where the run's logs are (exit 1). Before a run
    kept logs, the error propagates as it is."""
    if getattr(args, "logs", None) is None:
        raise
    import traceback

    traceback.print_exc()
    _print_logs(args)
    return 1


def _print_logs(args: argparse.Namespace) -> None:
    if getattr(args, "logs", None) is not None:
        print(f"refinery: logs: {args.logs}", file=sys.stderr)


def _listed_inputs(args: argparse.Namespace, config) -> list[tuple[int, str]]:
    """(line, path) of --input-list's selected entries; [] without it."""
    from refinery.config import UsageError
    from refinery.io import read_input_list

    if args.input_list is None:
        for flag, value in (("--select", args.select), ("--base-url", args.base_url)):
            if value is not None:
                raise UsageError(flag, "only used with --input-list")
        return []
    if args.input:
        raise UsageError("--input-list", "give either --input or --input-list, not both")
    return read_input_list(args.input_list, args.base_url, args.select, config.spec.input)


def command_run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # never reach the network for it
    from refinery.config import ConfigError, UsageError, load_config, preflight, read_yaml, with_overrides
    from refinery.engine.output import claim_output
    from refinery.io import expand_inputs
    from refinery.pipeline.chain import source_stage_class
    from refinery.logs import command_logs
    from refinery.pipeline.run import execute

    raw = read_yaml(args.config)
    if isinstance(raw, dict) and "mix" in raw:
        return command_mix(args, raw)
    config = load_config(args.config)
    listed = _listed_inputs(args, config)
    config = with_overrides(config, inputs=[p for _, p in listed] if listed else args.input, output=args.output,
                            workers=args.workers, limit=args.limit)
    out_dir = config.spec.output or os.path.join("runs", config.name)
    try:
        shards = expand_inputs(config.spec.input.paths, config.spec.input)
    except ConfigError as err:
        index = re.fullmatch(r"input\.paths\[(\d+)\]", err.key)
        if listed and index:  # name the list's line, not a config key the user never wrote
            raise UsageError(f"--input-list line {listed[int(index[1])][0]}", err.message) from None
        raise
    preflight(config)  # what validation cannot see (a model that does not load), in a dry run too
    if args.dry_run:
        print(f"config {config.path} ({config.fingerprint()}) -> {out_dir}")
        print("stages: " + " -> ".join([source_stage_class(config, shards[0]).name, *(s.name for s in config.stages)]))
        if config.dedup:
            print("dedup:  " + " -> ".join(s.name for s in config.dedup))
        for shard in shards:
            print(f"  {shard.shard_id}  {shard.path}")
        return 0
    args.output_dir = out_dir
    facts = {"config": f"{config.path} (fingerprint {config.fingerprint()})", "shards": len(shards)}
    with claim_output(out_dir, force=args.force), command_logs(out_dir, facts) as logs:
        args.logs = logs.driver_log
        stats = execute(config, shards, out_dir, scheduler=args.scheduler, progress=logs.progress())
        report = _write_report(out_dir)
    final = stats["funnel"][-1]
    print(f"done: {stats['input']['records']} records in {stats['input']['shards']} shards -> "
          f"{stats['output']['documents']} documents ({final['kept_of_input']:.1%} kept)")
    if "dedup" in stats:
        removed = ", ".join(
            f"{s['removed']:,} {name}" + (f" (and cut text from {s['documents_touched']:,})" if "documents_touched" in s else "")
            for name, s in stats["dedup"]["per_stage"].items())
        print(f"  dedup removed {removed}; clusters: {os.path.join(out_dir, 'dedup', 'clusters.parquet')}")
        selection = stats["dedup"].get("selection")
        if selection:
            cutoff = selection["cutoff"]
            print(f"  {selection['stage']} kept {selection['documents_kept']:,} of {selection['documents_in']:,} documents: "
                  f"{selection['kept_share']:.2%} of the {selection['by']} (target {selection['keep_percent']:g}%) by "
                  f"{' + '.join(selection['scores'])}" + (f", cut-off {cutoff['value']:.6g}" if cutoff else ""))
    print(f"  documents: {os.path.join(out_dir, 'documents')}/*.parquet")
    print(f"  stats:     {os.path.join(out_dir, 'stats.json')}")
    print(f"  report:    {report}")
    return 0


def _write_report(out_dir: str) -> str:
    from refinery.report import write_report

    return str(write_report(out_dir))


def command_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from refinery.config import UsageError
    from refinery.report import write_report

    if not (Path(args.output) / "stats.json").is_file():
        raise UsageError("OUTPUT", f"no stats.json in {args.output!r}: not a finished `refinery run` output")
    if args.tokenizer and not Path(args.tokenizer).exists():
        raise UsageError("--tokenizer", f"no tokenizer at {args.tokenizer!r}")
    args.output_dir = args.output
    print(f"report: {write_report(args.output, tokenizer=args.tokenizer, seed=args.seed)}")
    return 0


def command_inspect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from refinery.inspection import Query, find, render

    rows = find(args.output, Query(stage=args.stage, reason=args.reason, grep=args.grep, sample=args.sample,
                                   seed=args.seed))
    render(rows, Console(highlight=False), grep=args.grep, chars=args.chars)
    return 0


def command_tokenizer_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from refinery.config import ConfigError
    from refinery.tokenizer import file_hash, sample_texts, save, train

    files: list[str] = []
    for item in args.inputs:
        path = Path(item)
        found = sorted((path / "documents").glob("*.parquet")) or sorted(path.glob("*.parquet")) if path.is_dir() else [path]
        if not found or not all(p.is_file() for p in found):
            raise ConfigError("inputs", f"no Parquet documents at {item!r}")
        files += [str(p) for p in found]
    if args.vocab_size < 256 + 12:
        raise ConfigError("--vocab-size", "must leave room for the 256 bytes and the 12 special tokens")
    tokenizer = train(sample_texts(files, args.sample_bytes), vocab_size=args.vocab_size)
    path = save(tokenizer, args.output)
    print(f"tokenizer: {path} (vocab {tokenizer.get_vocab_size():,}, sha256 {file_hash(path)[:16]})")
    return 0


def command_mix(args: argparse.Namespace, raw: dict) -> int:
    """`refinery run` on a mix config: sources, tokenizer, mix by token share, token shards, card."""
    from refinery.config import UsageError
    from refinery.engine.output import claim_output
    from refinery.logs import command_logs
    from refinery.mix import execute_mix, parse_mix
    from refinery.mix.spec import check_mix

    if args.input or args.limit or args.input_list:
        flag = "--input" if args.input else "--input-list" if args.input_list else "--limit"
        raise UsageError(flag, "not used by a mix config; set each source's input")
    spec = parse_mix(raw, args.config)
    checked = check_mix(spec)  # every source, path and nested config, before any work (in a dry run too)
    out_dir = args.output or spec.output or os.path.join("runs", spec.name)
    if args.dry_run:
        print(f"mix {args.config} -> {out_dir}")
        for source in spec.sources:
            count = len(checked.pipelines[source.name][1]) if source.config else \
                sum(1 for s, _ in checked.curated if s is source)
            print(f"  {source.name}: {spec.mix.shares[source.name]:.1%} from {source.config or source.paths} "
                  f"({count} {'input shard' if source.config else 'file'}{'' if count == 1 else 's'})")
        return 0
    args.output_dir = out_dir
    with claim_output(out_dir, force=args.force), command_logs(out_dir, {"config": args.config}) as logs:
        args.logs = logs.driver_log  # --force (above): the pipeline sources' markers too
        stats = execute_mix(spec, out_dir, scheduler=args.scheduler, workers=args.workers, log=logs.say,
                            checked=checked)
        report = _write_report(out_dir)
    for line in stats["short"]:
        print(f"warning: source ran short: {line}")
    print(f"done: {stats['output']['tokens']:,} tokens in {stats['output']['files']} files")
    for name, source in stats["sources"].items():
        print(f"  {name}: target {source['target_share']:.1%}, achieved {source['achieved_share']:.2%} "
              f"({source['tokens']:,} tokens, {source['documents']:,} documents)")
    print(f"  tokens:  {os.path.join(out_dir, 'tokens')}/ (manifest.json)")
    print(f"  card:    {os.path.join(out_dir, 'README.md')}")
    print(f"  report:  {report}")
    return 0


def command_train(args: argparse.Namespace) -> int:
    from refinery.config import read_yaml
    from refinery.engine.output import claim_output
    from refinery.train import parse_train, run_training

    spec = parse_train(read_yaml(args.config), args.config)
    out_dir = args.output or spec.output or os.path.join("runs", "train", spec.name)
    args.output_dir = out_dir
    with claim_output(out_dir, force=args.force):  # --force: its marker goes, and run_training drops the checkpoint
        summary = run_training(spec, out_dir, log=lambda line: print(line, file=sys.stderr, flush=True),
                               fresh=args.force)
    print(f"done: {summary['steps']} steps, {summary['tokens']:,} tokens in {summary['seconds']:.0f} s")
    if "eval_share" in summary:  # a run finished by an older refinery did not time its evaluation
        print(f"  evaluation: {summary['eval_seconds']:.1f} s, {summary['eval_share']:.1%} of the time in steps and "
              f"evaluations (steps {summary['train_seconds']:.1f} s)")
    for name, result in summary["eval"].items():
        print(f"  {name}: {result['bits_per_byte']:.4f} bits/byte (+- {result['bpb_stderr']:.4f})")
    print(f"  model: {summary['model_dir']}")
    return 0


def command_classifier_train(args: argparse.Namespace) -> int:
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    from refinery.config import read_yaml
    from refinery.engine.output import claim_output
    from refinery.logs import command_logs
    from refinery.classifier.train import check_classifier, parse_classifier, train_classifier

    spec = parse_classifier(read_yaml(args.config), args.config)
    checked = check_classifier(spec)  # sources found, pipelines preflighted, no empty positive: before any work
    out_dir = args.output or spec.output or os.path.join("runs", spec.name)
    args.output_dir = out_dir
    with claim_output(out_dir, force=args.force), command_logs(out_dir, {"config": args.config}) as logs:
        args.logs = logs.driver_log
        metrics = train_classifier(spec, out_dir, checked, scheduler=args.scheduler, workers=args.workers,
                                   log=logs.say)
    held = metrics["heldout"]
    print(f"done: held-out AUC {held['auc']:.4f} over {held['documents']:,} documents; at {held['threshold']}: "
          f"precision {held['precision']:.4f}, recall {held['recall']:.4f}")
    print(f"  model: {metrics['model']}")
    print(f"  card:  {os.path.join(out_dir, 'MODEL_CARD.md')}")
    return 0


def command_ablate(args: argparse.Namespace) -> int:
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    from refinery.ablate import execute_ablation, parse_ablation
    from refinery.ablate.spec import check_ablation
    from refinery.config import read_yaml
    from refinery.engine.output import claim_output
    from refinery.logs import command_logs

    raw = read_yaml(args.config)
    if args.preset:
        from refinery.ablate.spec import apply_preset

        raw = apply_preset(raw if isinstance(raw, dict) else {}, args.preset)
    spec = parse_ablation(raw, args.config)
    if args.input:  # from the current directory, not the config's folder
        spec = spec.model_copy(update={"input": list(args.input)})
    checked = check_ablation(spec)  # base, variants, inputs, eval paths, models: before any work
    out_dir = args.output or spec.output or os.path.join("runs", spec.name)
    args.output_dir = out_dir
    with claim_output(out_dir, force=args.force), command_logs(out_dir, {"config": args.config}) as logs:
        args.logs = logs.driver_log  # --force (above): every variant's markers too
        result = execute_ablation(spec, out_dir, scheduler=args.scheduler, workers=args.workers, log=logs.say,
                                  checked=checked, fresh=args.force)
    print(f"done in {result['seconds']:.0f} s: {len(result['variants'])} variants x {len(spec.seeds)} seeds, "
          f"{result['budget_tokens']:,} tokens each")
    for name, variant in result["variants"].items():
        bpb = ", ".join(f"{s} {e['bits_per_byte']:.4f}" for s, e in variant["eval"].items())
        print(f"  {name}: {variant['train_tokens']:,} train tokens, bits/byte {bpb}")
    print(f"  table: {os.path.join(out_dir, 'ablation.md')}")
    print(f"  plot:  {os.path.join(out_dir, 'ablation.png')}")
    return 0
