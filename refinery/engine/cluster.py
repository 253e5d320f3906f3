"""The Dask side of the engine: a local cluster or a scheduler, and running task lists on it."""

from __future__ import annotations

import logging
import os
from typing import Callable

from refinery.engine.task import Task, run_task

IN_PROCESS = "in-process"
SCHEDULER_TIMEOUT_S = 10  # how long `--scheduler ADDRESS` may take to answer


def _connect(address: str):
    """A client of the scheduler at ``address``; one that does not answer (nothing listening, or
    not a Dask scheduler) within SCHEDULER_TIMEOUT_S is a ConfigError naming ``--scheduler``."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed import Client
    from distributed.comm import connect

    from refinery.config import ConfigError

    async def handshake():
        comm = await connect(address, timeout=SCHEDULER_TIMEOUT_S)
        await comm.close()

    async def probe():  # a bare handshake first: a failed Client lingers and stalls the exit
        await asyncio.wait_for(handshake(), SCHEDULER_TIMEOUT_S)  # connect() alone waits on a silent peer

    try:
        with ThreadPoolExecutor(1) as pool:  # its own event loop, even where the caller runs one (Jupyter)
            pool.submit(asyncio.run, probe()).result()
        return Client(address, timeout=SCHEDULER_TIMEOUT_S)
    except ValueError as err:
        raise ConfigError("--scheduler", f"not a Dask scheduler address: {address!r} ({err})") from None
    except (OSError, TimeoutError) as err:
        raise ConfigError("--scheduler", f"no Dask scheduler answers at {address} within "
                                         f"{SCHEDULER_TIMEOUT_S} s ({type(err).__name__})") from None


class Engine:
    """Runs :class:`Task` lists on a ``distributed`` client (a LocalCluster, or the scheduler at
    ``scheduler``), or in-process with Dask's synchronous scheduler when ``scheduler`` is "sync".

    Use it as a context manager; every product (run, mix, ablate, train) gets one.
    ``Engine.in_process()`` uses Dask's configured local scheduler (tests, benchmarks)."""

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1, dashboard: bool = False,
                 shuffle: str = "tasks", scheduler: str | None = None):
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.dashboard = dashboard
        self.shuffle = shuffle
        self.scheduler = scheduler
        self.client = None
        self._cluster = None
        self._config = None
        self.cluster_spec = None  # run.cluster: Slurm or Kubernetes workers (refinery.engine.clusters)

    @classmethod
    def in_process(cls) -> Engine:
        return cls(scheduler=IN_PROCESS)

    @classmethod
    def for_run(cls, run, scheduler: str | None = None) -> Engine:
        """From a config's ``run:`` section (workers, threads_per_worker, dashboard, shuffle)."""
        engine = cls(run.workers, run.threads_per_worker, run.dashboard, run.shuffle, scheduler)
        engine.cluster_spec = getattr(run, "cluster", None)
        return engine

    def __enter__(self) -> Engine:
        import dask

        if self.scheduler == "sync":
            self._config = dask.config.set({"scheduler": "sync", "dataframe.shuffle.method": "tasks"})
            return self
        if self.scheduler == IN_PROCESS:  # whatever local scheduler Dask's config names
            self._config = dask.config.set({})
            return self
        from distributed import Client, LocalCluster

        if self.scheduler:
            self.client = _connect(self.scheduler)
        elif self.cluster_spec is not None:
            from refinery.engine.clusters import start_cluster

            self._cluster = start_cluster(self.cluster_spec)
            self.client = Client(self._cluster)
        else:
            self._cluster = LocalCluster(
                n_workers=self.workers or os.cpu_count() or 1,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                dashboard_address=":0" if self.dashboard else None,
                silence_logs=logging.CRITICAL,  # a failed task is reported once, by the driver
            )
            self.client = Client(self._cluster)
        self._config = dask.config.set({"dataframe.shuffle.method": self.shuffle})
        return self

    def __exit__(self, *exc) -> None:
        self._config.__exit__(None, None, None)
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    @property
    def dashboard_link(self) -> str | None:
        return self.client.dashboard_link if self.client is not None and self.dashboard else None

    def run(self, tasks: list[Task], on_result: Callable | None = None, report: int | None = None) -> list:
        """The results of ``tasks``, in their order. A task runs after the tasks named in its
        ``after`` (which must be in the same list). ``on_result`` sees each of the first
        ``report`` results (all by default) as it finishes."""
        from refinery.engine.watch import current

        monitor = current()
        if monitor is None:
            return self._run(tasks, on_result, report, None)
        with monitor.phase(tasks):  # progress files and task logs under the command's output
            return self._run(tasks, on_result, report, monitor.files)

    def _run(self, tasks: list[Task], on_result: Callable | None, report: int | None, files) -> list:
        from dask import delayed

        report = len(tasks) if report is None else report
        nodes: dict[str, object] = {}
        for task in tasks:
            upstream = [nodes[key] for key in task.after]
            nodes[task.key] = delayed(run_task, pure=False)(task, *upstream, files=files, dask_key_name=task.key)
        ordered = [nodes[t.key] for t in tasks]
        if self.client is None:
            import dask

            results = list(dask.compute(*ordered))
            for result in results[:report]:
                if on_result:
                    on_result(result)
            return results
        from distributed import as_completed

        futures = self.client.compute(ordered, retries=2)
        if on_result:
            for future in as_completed(futures[:report]):
                on_result(future.result())
        return [f.result() for f in futures]

    def run_here(self, task: Task):
        """Runs ``task`` on the driver: for steps that build Dask dataframe graphs themselves."""
        return run_task(task)
