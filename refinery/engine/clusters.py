"""Dask workers beyond one machine: ``run.cluster`` as Slurm jobs (dask-jobqueue's SLURMCluster)
or Kubernetes pods (dask-kubernetes' operator KubeCluster). The scheduler runs where refinery
runs (Slurm: the login node) or in the Kubernetes cluster; each worker is one process with
``cores`` (``resources.cpu``) threads. Both packages are the optional extra ``cluster`` and are
imported only when a config names a cluster."""

from __future__ import annotations

import logging

from refinery.config import ClusterConfig, ConfigError

EXTRA = "pip install 'refinery-mdr[cluster]'"
PACKAGES = {"slurm": "dask_jobqueue", "kubernetes": "dask_kubernetes"}


def _require(kind: str):
    """The package a cluster kind needs, or a ConfigError naming ``run.cluster.kind`` (exit 2)."""
    import importlib

    try:
        return importlib.import_module(PACKAGES[kind] + (".operator" if kind == "kubernetes" else ""))
    except ImportError:
        raise ConfigError("run.cluster.kind", f"{kind} needs the package {PACKAGES[kind].replace('_', '-')}, "
                                              f"not installed here ({EXTRA})") from None


def slurm_cluster(spec: ClusterConfig):
    """A SLURMCluster whose jobs each run one Dask worker of ``cores`` threads and ``memory``;
    nothing is submitted until it is scaled. ``.job_script()`` shows what each job runs."""
    jobqueue = _require("slurm")
    options = {"queue": spec.queue, "account": spec.account, "walltime": spec.walltime, "python": spec.python,
               "interface": spec.interface}
    return jobqueue.SLURMCluster(
        cores=spec.cores, memory=spec.memory, processes=1, job_name="refinery-worker",
        job_extra_directives=list(spec.job_extra_directives), job_script_prologue=list(spec.job_script_prologue),
        scheduler_options={"dashboard_address": ":0"},  # any free port: a login node is shared
        silence_logs=logging.CRITICAL, **{k: v for k, v in options.items() if v is not None})


def worker_command(spec: ClusterConfig) -> list[str]:
    """The command of each Kubernetes worker pod: one worker with the pod's CPUs as threads."""
    return ["dask", "worker", "--nthreads", str(spec.resources.cpu), "--memory-limit", spec.resources.memory]


def kubernetes_spec(spec: ClusterConfig, name: str = "refinery") -> dict:
    """The DaskCluster resource the Dask operator is given (rendered here, without a cluster)."""
    operator = _require("kubernetes")
    resources = {"cpu": str(spec.resources.cpu), "memory": spec.resources.memory}
    cluster = operator.make_cluster_spec(name=name, image=spec.image, n_workers=spec.workers,
                                         resources={"requests": dict(resources), "limits": dict(resources)},
                                         worker_command=worker_command(spec))
    if spec.volumes:  # the workers read the inputs and write OUTPUT at the paths the driver sees
        pod = cluster["spec"]["worker"]["spec"]
        pod["volumes"] = [{"name": f"data-{n}", "persistentVolumeClaim": {"claimName": claim}}
                          for n, claim in enumerate(spec.volumes)]
        pod["containers"][0]["volumeMounts"] = [{"name": f"data-{n}", "mountPath": path}
                                                for n, path in enumerate(spec.volumes.values())]
    return cluster


def start_cluster(spec: ClusterConfig):
    """The cluster object of ``run.cluster``, asked for its ``workers``; close it when done."""
    if spec.kind == "slurm":
        cluster = slurm_cluster(spec)
        cluster.scale(jobs=spec.workers)
        return cluster
    operator = _require("kubernetes")
    import uuid

    name = f"refinery-{uuid.uuid4().hex[:8]}"
    return operator.KubeCluster(custom_cluster_spec=kubernetes_spec(spec, name), namespace=spec.namespace,
                                shutdown_on_close=True, quiet=True)
