"""Per-shard stage counters that add up across shards into the funnel."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class StageStats:
    stage: str
    docs_in: int = 0
    docs_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # stage-specific counters (dicts of ints add up)
    languages_out: Counter = field(default_factory=Counter)  # documents passed on, by language ("" before language_id)
    lengths_out: Counter = field(default_factory=Counter)  # documents passed on, by length_bin of their text

    def count_out(self, language: str, text: str | None) -> None:
        self.docs_out += 1
        self.languages_out[language or ""] += 1
        self.lengths_out[length_bin(len(text or ""))] += 1

    def check_balanced(self) -> None:
        if self.docs_in != self.docs_out + sum(self.dropped.values()):
            raise AssertionError(
                f"stage {self.stage}: {self.docs_in} in != {self.docs_out} out + "
                f"{sum(self.dropped.values())} dropped"
            )

    def __add__(self, other: StageStats) -> StageStats:
        if other.stage != self.stage:
            raise ValueError(f"cannot add stats of {other.stage} to {self.stage}")
        return StageStats(
            stage=self.stage,
            docs_in=self.docs_in + other.docs_in,
            docs_out=self.docs_out + other.docs_out,
            dropped=self.dropped + other.dropped,
            seconds=self.seconds + other.seconds,
            extra=_add_nested(self.extra, other.extra),
            languages_out=self.languages_out + other.languages_out,
            lengths_out=self.lengths_out + other.lengths_out,
        )

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "dropped": dict(sorted(self.dropped.items())),
            "seconds": round(self.seconds, 3),
            **({"extra": self.extra} if self.extra else {}),
            **({"languages_out": dict(sorted(self.languages_out.items()))} if self.languages_out else {}),
            **({"lengths_out": {str(k): v for k, v in sorted(self.lengths_out.items())}} if self.lengths_out else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> StageStats:
        return cls(
            stage=data["stage"],
            docs_in=data["docs_in"],
            docs_out=data["docs_out"],
            dropped=Counter(data["dropped"]),
            seconds=data.get("seconds", 0.0),
            extra=data.get("extra", {}),
            languages_out=Counter(data.get("languages_out", {})),
            lengths_out=Counter({int(k): v for k, v in data.get("lengths_out", {}).items()}),
        )


def length_bin(chars: int) -> int:
    """The power-of-two bin of a text length in characters: 0, 1, 2, 4, 8, ... (lower bounds)."""
    return 1 << (chars.bit_length() - 1) if chars else 0


def _add_nested(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, dict):
            out[key] = _add_nested(out[key], value)
        else:
            out[key] = out[key] + value
    return out


def sum_stage_stats(per_shard: list[list[StageStats]]) -> list[StageStats]:
    """Adds per-shard funnels stage by stage; every shard ran the same chain."""
    if not per_shard:
        return []
    totals = [StageStats(stage=s.stage) for s in per_shard[0]]
    for funnel in per_shard:
        totals = [total + stage for total, stage in zip(totals, funnel, strict=True)]
    return totals


def funnel_report(stages: list[StageStats]) -> list[dict]:
    """The funnel as stats.json shows it, with the share of input records kept after each stage."""
    records = stages[0].docs_in if stages else 0
    rows = []
    for stage in stages:
        stage.check_balanced()
        row = stage.to_dict()
        row["kept_of_input"] = round(stage.docs_out / records, 6) if records else 0.0
        rows.append(row)
    return rows
