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


BUNDLE_INPUT_BYTES = 16 << 20  # a root task reading less than this may share a Dask task
BUNDLE_TASKS = 32  # at most this many tasks to one Dask task
P2P_SEND_BUFFER, P2P_WRITE_BUFFER = "128 MiB", "64 MiB"  # per worker, for p2p shuffles (dask: 1 GiB, 100 MiB)


def plan_units(tasks: list[Task], workers: int) -> list[list[Task]]:
    """The Dask tasks for ``tasks``: each alone, except that small root tasks (no ``after``, local
    inputs under BUNDLE_INPUT_BYTES together) run several to one, and the tasks that wait only on
    one such bundle form one bundle after it. Scheduling costs a few ms a Dask task, as much as a
    tiny shard's work; markers, logs and results stay per task. Keeps 4 units per worker at least."""
    from refinery.engine.watch import input_bytes

    roots = [t for t in tasks if not t.after]
    limit = max(1, min(BUNDLE_TASKS, len(roots) // (4 * max(workers, 1))))
    units: list[list[Task]] = []
    unit_of: dict[str, int] = {}
    followers: dict[int, int] = {}
    open_unit, open_bytes = None, 0
    for task in tasks:
        size = input_bytes(task.inputs) if not task.after and limit > 1 else None
        if size is not None and size < BUNDLE_INPUT_BYTES:
            if open_unit is None or len(units[open_unit]) >= limit or open_bytes + size > BUNDLE_INPUT_BYTES:
                units.append([])
                open_unit, open_bytes = len(units) - 1, 0
            units[open_unit].append(task)
            open_bytes += size
            unit_of[task.key] = open_unit
            continue
        upstream = {unit_of[key] for key in task.after}
        if len(upstream) == 1 and len(units[next(iter(upstream))]) > 1:
            lead = next(iter(upstream))
            if lead not in followers:
                units.append([])
                followers[lead] = len(units) - 1
            units[followers[lead]].append(task)
            unit_of[task.key] = followers[lead]
            continue
        units.append([task])
        unit_of[task.key] = len(units) - 1
    return units


def run_unit(unit: list[Task], *_upstream, files=None) -> list:
    """The results of a unit's tasks, run one after another (see :func:`plan_units`)."""
    return [run_task(task, files=files) for task in unit]


class Engine:
    """Runs :class:`Task` lists on a ``distributed`` client (a LocalCluster, or the scheduler at
    ``scheduler``), or in-process with Dask's synchronous scheduler when ``scheduler`` is "sync".

    Use it as a context manager; every product (run, mix, ablate, train) gets one.
    ``Engine.in_process()`` uses Dask's configured local scheduler (tests, benchmarks)."""

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1, dashboard: bool = False,
                 shuffle: str = "p2p", scheduler: str | None = None):
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

        # p2p shuffles buffer up to 1 GiB to send and 100 MiB to write, per worker; smaller
        # buffers keep a worker's memory flat as the corpus grows (a LocalCluster's workers and
        # this process; an existing scheduler's workers keep their own settings)
        self._config = dask.config.set({"dataframe.shuffle.method": self.shuffle,
                                        "distributed.p2p.comm.buffer": P2P_SEND_BUFFER,
                                        "distributed.p2p.storage.buffer": P2P_WRITE_BUFFER})
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
        position = {task.key: n for n, task in enumerate(tasks)}
        units = plan_units(tasks, self._worker_count())
        unit_of = {task.key: u for u, unit in enumerate(units) for task in unit}
        nodes: list[object] = []
        for u, unit in enumerate(units):
            upstream = sorted({unit_of[key] for task in unit for key in task.after} - {u})
            nodes.append(delayed(run_unit, pure=False)(unit, *(nodes[v] for v in upstream), files=files,
                                                      dask_key_name=unit[0].key if len(unit) == 1 else f"bundle-{unit[0].key}"))
        results: list = [None] * len(tasks)

        def finished(u: int, unit_results: list) -> None:
            for task, result in zip(units[u], unit_results):
                results[position[task.key]] = result
                if on_result and position[task.key] < report:
                    on_result(result)

        if self.client is None:
            import dask

            for u, unit_results in enumerate(dask.compute(*nodes)):
                finished(u, unit_results)
            return results
        from distributed import as_completed

        futures = self.client.compute(nodes, retries=2)
        index = {future.key: u for u, future in enumerate(futures)}
        for future in as_completed(futures):
            finished(index[future.key], future.result())
        return results

    def _worker_count(self) -> int:
        if self.client is None:
            return 1
        return max(1, len(self.client.scheduler_info().get("workers", {})) or self.workers or 1)

    def run_here(self, task: Task):
        """Runs ``task`` on the driver: for steps that build Dask dataframe graphs themselves."""
        return run_task(task)
