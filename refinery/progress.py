"""Console progress of a command's task lists, updated while tasks run (not only when they end).

:class:`refinery.engine.watch.Monitor` hands a display each task list (a phase), the states of
its tasks every ~second (read from their progress files) and its end. :class:`Tally` turns
those into counts, rates and an ETA; :class:`ConsoleProgress` draws them as a rich bar on a
terminal, :class:`PlainProgress` as a line every PLAIN_EVERY_S elsewhere (a log file, a pipe)::

    progress: 1,234 records (56.7/s), 321 documents (15.0/s), 2/4 shards, ETA 3m10s
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

from refinery.engine.watch import Phase

# a plain progress line about every 10 s while something moves: on a fixed grid a little under
# 10 s, so that scheduling delays never make two lines more than 10 s apart
PLAIN_EVERY_S = 9.8
QUIET_EVERY_S = 60.0  # a line even when nothing moved, so a stuck task shows
ETA_AFTER = 0.02  # of the work done: before, the start (workers, models) is most of the time spent
COUNTS = ("records", "documents", "tokens")  # the counts shown, with their rates
NOUNS = {"map": "shards"}


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


@dataclass
class Tally:
    """One phase's task states added up: tasks done per group, the lead group's counts (and
    their rates, without resumed tasks) and an ETA from input bytes read (or tasks done)."""

    groups: dict[str, list[int]]  # group -> [done, total, resumed]
    counts: dict[str, int]
    rates: dict[str, float]
    fraction: float | None  # of the lead group's fresh work done
    eta: float | None
    elapsed: float

    @classmethod
    def of(cls, phase: Phase, states: dict[str, dict], now: float) -> Tally:
        groups: dict[str, list[int]] = {}
        for key in phase.keys:
            row = groups.setdefault(Phase.group(key), [0, 0, 0])
            row[1] += 1
            state = states.get(key, {}).get("state")
            row[0] += state in ("done", "resumed")
            row[2] += state == "resumed"
        lead = Phase.group(phase.keys[0]) if phase.keys else ""
        mine = [k for k in phase.keys if Phase.group(k) == lead]
        fresh = [k for k in mine if states.get(k, {}).get("state") != "resumed"]
        counts = {name: sum(states.get(k, {}).get("counts", {}).get(name, 0) for k in mine) for name in COUNTS}
        elapsed = max(now - phase.started, 1e-6)
        rates = {name: sum(states.get(k, {}).get("counts", {}).get(name, 0) for k in fresh) / elapsed
                 for name in COUNTS}
        fraction = cls._fraction(phase, states, fresh)
        eta = elapsed * (1 - fraction) / fraction if fraction and fraction >= ETA_AFTER else None
        return cls(groups, {k: v for k, v in counts.items() if v}, rates, fraction, eta, elapsed)

    @staticmethod
    def _fraction(phase: Phase, states: dict[str, dict], fresh: list[str]) -> float | None:
        """Bytes read of the fresh tasks' inputs when they are all local files, else tasks done."""
        if not fresh:
            return None
        sizes = [phase.sizes.get(k) for k in fresh]
        if all(sizes) and any("bytes" in states.get(k, {}).get("counts", {}) for k in fresh):
            read = 0
            for key, size in zip(fresh, sizes):
                state = states.get(key, {})
                read += size if state.get("state") == "done" else min(state.get("counts", {}).get("bytes", 0), size)
            return read / sum(sizes)
        return sum(states.get(k, {}).get("state") == "done" for k in fresh) / len(fresh)

    def line(self, final: str | None = None) -> str:
        """``1,234 records (56.7/s), 321 documents (15.0/s), 2/4 shards, keys 1/4, ETA 3m10s``."""
        parts = [f"{self.counts[n]:,} {n}" + (f" ({_rate(self.rates[n])}/s)" if self.rates[n] else "")
                 for n in COUNTS if n in self.counts]
        for index, (group, (done, total, resumed)) in enumerate(self.groups.items()):
            noun = NOUNS.get(group) if index == 0 else None
            parts.append(f"{done}/{total} {noun}" if noun else f"{group} {done}/{total}")
            if resumed:
                parts[-1] += f", {resumed} {noun} resumed" if noun else f" ({resumed} resumed)"
        if final:
            parts.append(f"{final} in {duration(self.elapsed)}")
        elif self.eta is not None:
            parts.append(f"ETA {duration(self.eta)}")
        return ", ".join(parts)


class Display:
    """What a :class:`refinery.engine.watch.Monitor` tells (its sink), and the lines of the command."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr  # looked up now, so redirection works
        self.lock = threading.Lock()

    def __enter__(self) -> Display:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def start(self, total: int, dashboard: str | None) -> None:
        """`refinery.pipeline.run.Progress.on_start`: a pipeline's shards are about to run."""
        if dashboard:
            self.message(f"dashboard: {dashboard}")

    def message(self, line: str) -> None:
        with self.lock:
            print(line, file=self.stream, flush=True)

    def begin(self, phase: Phase) -> None:
        pass

    def due(self) -> float | None:
        """When this display next prints on its own (the monitor wakes for it)."""
        return None

    def update(self, phase: Phase, states: dict[str, dict], now: float) -> None:
        pass

    def end(self, phase: Phase, states: dict[str, dict], failed: bool) -> str:
        return Tally.of(phase, states, time.time()).line("failed" if failed else "done")


class PlainProgress(Display):
    """A line every PLAIN_EVERY_S (on a fixed grid from the phase's start) while counts or tasks
    move, at least every QUIET_EVERY_S, and one when a phase ends."""

    _due: float | None = None

    def begin(self, phase: Phase) -> None:
        self._due = phase.started + PLAIN_EVERY_S
        self._shown: tuple | None = None
        self._shown_at = phase.started

    def due(self) -> float | None:
        return self._due

    def update(self, phase: Phase, states: dict[str, dict], now: float) -> None:
        if now < self._due:
            return
        while self._due <= now:
            self._due += PLAIN_EVERY_S
        tally = Tally.of(phase, states, now)
        moved = (tally.counts, tally.groups) != self._shown
        if moved or now - self._shown_at >= QUIET_EVERY_S - PLAIN_EVERY_S / 2:
            self._shown, self._shown_at = (tally.counts, tally.groups), now
            self.message(f"progress: {tally.line()}")

    def end(self, phase: Phase, states: dict[str, dict], failed: bool) -> str:
        line = super().end(phase, states, failed)
        self.message(f"progress: {line}")
        return line


class ConsoleProgress(Display):
    """A rich bar per phase on a terminal: tasks done, counts and their rates, ETA."""

    def __init__(self, stream=None):
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        self.console = Console(file=self.stream)
        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                       TimeElapsedColumn(), console=self.console, transient=False)
        self.task = None

    def __enter__(self) -> ConsoleProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def message(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False)

    def begin(self, phase: Phase) -> None:
        lead = Phase.group(phase.keys[0]) if phase.keys else ""
        self.task = self.bar.add_task(lead, total=1.0, detail="")

    def update(self, phase: Phase, states: dict[str, dict], now: float) -> None:
        tally = Tally.of(phase, states, now)
        self.bar.update(self.task, completed=tally.fraction or 0.0, detail=tally.line())

    def end(self, phase: Phase, states: dict[str, dict], failed: bool) -> str:
        line = super().end(phase, states, failed)
        self.bar.update(self.task, completed=0.0 if failed else 1.0, detail=line)
        self.bar.stop_task(self.task)
        return line


def display_for(stream=None) -> Display:
    """A rich bar on a terminal, plain lines elsewhere."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return ConsoleProgress(stream) if isatty is not None and isatty() else PlainProgress(stream)
