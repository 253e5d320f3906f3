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
        )

    def to_dict(self) -> dict:
        return {
            "stage": self.stage,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "dropped": dict(sorted(self.dropped.items())),
            "seconds": round(self.seconds, 3),
            **({"extra": self.extra} if self.extra else {}),
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
        )


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
