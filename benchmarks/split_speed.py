"""One big .warc.gz on 2 workers: read whole (one map task) against split into byte ranges.

    .venv/bin/python benchmarks/split_speed.py --out /tmp/split     # writes the input and configs, prints the command

The input is the four shared web shards as one file (1,778 records, 53 MB; gzip members may
follow each other), ``--copies`` times over. Both configs are configs/english.yaml's chain without dedup (splitting is
about the map phase), with ``input.split_bytes`` 0 (whole) or an eighth of the file (8 ranges).
The command it prints times both with farm-bench, in turn, and gives the ratio of the medians.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHARDS = REPO.parent / "shared" / "data" / "web"


def prepare(out: Path, ranges: int, copies: int) -> tuple[Path, Path, Path]:
    shards = sorted(SHARDS.glob("*.warc.gz"))
    if not shards:
        sys.exit(f"no shards in {SHARDS}")
    out.mkdir(parents=True, exist_ok=True)
    big = out / "all-shards.warc.gz"
    big.write_bytes(b"".join(p.read_bytes() for p in shards) * copies)
    raw = yaml.safe_load((REPO / "configs" / "english.yaml").read_text())
    raw.pop("dedup", None)
    raw.pop("output", None)
    configs = []
    for name, split_bytes in (("whole", 0), ("split", big.stat().st_size // ranges + 1)):
        config = dict(raw, input={**raw["input"], "paths": [str(big)], "split_bytes": split_bytes})
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        configs.append(path)
    return big, *configs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the input, the configs and the runs")
    parser.add_argument("--ranges", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--copies", type=int, default=1,
                        help="the four shards this many times over: a bigger file, so that each worker's "
                             "start-up (about 5 s: imports, fastText, the extraction sandbox) weighs less")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    big, whole, split = prepare(out, args.ranges, args.copies)
    refinery = [str(REPO / ".venv" / "bin" / "refinery"), "run"]
    a = [*refinery, str(split), "--output", str(out / "split-out"), "--workers", "2", "--force"]
    b = [*refinery, str(whole), "--output", str(out / "whole-out"), "--workers", "2", "--force"]
    print(f"input: {big} ({big.stat().st_size:,} bytes)", file=sys.stderr)
    print(f"farm-bench -n {args.runs} --warmup 1 --timeout 1800 --vs {shlex.quote(shlex.join(b))} -- {shlex.join(a)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
