"""Console progress: shards and documents done, with the dashboard link."""

from __future__ import annotations

import sys

from refinery.pipeline.run import Progress


class ConsoleProgress(Progress):
    def __init__(self, stream=None):
        super().__init__(on_start=self._start, on_shard=self._shard, on_phase=self._phase)
        stream = stream if stream is not None else sys.stderr  # looked up now, so redirection works
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        self.console = Console(file=stream)
        self.bar = Bar(TextColumn("shards"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[docs]}"),
                       TimeElapsedColumn(), console=self.console, transient=False)
        self.records = self.kept = self.resumed = 0
        self.task = None

    def __enter__(self) -> ConsoleProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def _start(self, total: int, dashboard: str | None) -> None:
        if dashboard:
            self.console.print(f"dashboard: {dashboard}")
        self.task = self.bar.add_task("map", total=total, docs=self._docs())

    def _docs(self) -> str:
        resumed = f", {self.resumed} shards resumed" if self.resumed else ""
        return f"records {self.records:,} -> documents {self.kept:,}{resumed}"

    def _shard(self, result) -> None:
        self.records += result.records
        self.kept += result.documents
        self.resumed += result.resumed
        self.bar.update(self.task, advance=1, docs=self._docs())

    def _phase(self, message: str) -> None:
        self.console.print(message)
