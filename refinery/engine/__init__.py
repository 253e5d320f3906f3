"""The engine: the only code that knows Dask and resume.

- :mod:`refinery.engine.task`: a task (key, function, arguments, fingerprint, inputs, outputs)
  and the one runner that skips it when its marker matches;
- :mod:`refinery.engine.cluster`: the local cluster or ``--scheduler``, running task lists;
- :mod:`refinery.engine.lsh` and :mod:`refinery.engine.resolve`: dedup's corpus-wide resolution
  as Dask dataframe shuffles.
"""

from refinery.engine.task import Result, Task, finished, run_task

__all__ = ["Engine", "Result", "Task", "finished", "run_task"]


def __getattr__(name: str):
    if name == "Engine":  # Dask is imported only when a product starts one
        from refinery.engine.cluster import Engine

        return Engine
    raise AttributeError(name)
