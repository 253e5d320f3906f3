"""`run.cluster`: Dask workers as Slurm jobs (dask-jobqueue) or Kubernetes pods (dask-kubernetes).

No Slurm or Kubernetes here: the tests check the config, the job script and the pod spec that
would be submitted (both render offline), and that the engine runs on the cluster it is given."""

from __future__ import annotations

import sys

import pytest
import yaml

from refinery.config import ClusterConfig, ConfigError, RunConfig, parse_config, read_yaml
from refinery.engine import Engine, Task, clusters
from support import ENGLISH_CONFIG, run_cli_inprocess

SLURM = {"kind": "slurm", "workers": 8, "cores": 4, "memory": "16GiB", "walltime": "04:00:00", "queue": "cpu",
         "account": "lab", "job_extra_directives": ["--exclusive"],
         "job_script_prologue": ["source /shared/venv/bin/activate"], "python": "/shared/venv/bin/python"}
KUBERNETES = {"kind": "kubernetes", "image": "registry.example.com/refinery:1", "workers": 3,
              "resources": {"cpu": 2, "memory": "8Gi"}, "namespace": "data", "volumes": {"refinery-data": "/data"}}


def config_with(cluster) -> dict:
    raw = read_yaml(ENGLISH_CONFIG)
    raw.setdefault("run", {})["cluster"] = cluster
    return raw


def config_error(cluster) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(config_with(cluster))
    return str(err.value)


def test_both_kinds_parse_in_a_pipeline_config():
    slurm = parse_config(config_with(SLURM)).spec.run.cluster
    assert (slurm.kind, slurm.workers, slurm.cores, slurm.memory, slurm.queue) == ("slurm", 8, 4, "16GiB", "cpu")
    kube = parse_config(config_with(KUBERNETES)).spec.run.cluster
    assert (kube.image, kube.resources.cpu, kube.volumes) == (KUBERNETES["image"], 2, {"refinery-data": "/data"})
    assert RunConfig().cluster is None  # a local cluster unless asked


@pytest.mark.parametrize("cluster, expected", [
    ({**SLURM, "partition": "cpu"}, "run.cluster.partition: Extra inputs are not permitted"),
    ({"kind": "pbs"}, "run.cluster.kind: Input should be 'slurm' or 'kubernetes'"),
    ({"kind": "kubernetes"}, "run.cluster.image: required for kind kubernetes"),
    ({**KUBERNETES, "queue": "cpu"}, "run.cluster.queue: a Slurm setting; kind kubernetes takes workers, image"),
    ({**SLURM, "image": "x"}, "run.cluster.image: a Kubernetes setting; kind slurm takes workers, cores"),
    ({**SLURM, "memory": "lots"}, "run.cluster.memory: not a size like '16GiB' or '8Gi' (got 'lots')"),
    ({**SLURM, "walltime": "4 hours"}, "run.cluster.walltime: String should match pattern"),
    ({**SLURM, "workers": 0}, "run.cluster.workers: Input should be greater than or equal to 1"),
    ({**KUBERNETES, "resources": {"gpu": 1}}, "run.cluster.resources.gpu: Extra inputs are not permitted"),
])
def test_a_bad_cluster_is_one_line_naming_the_key(cluster, expected):
    message = config_error(cluster)
    assert message.startswith(expected) and "\n" not in message


def test_a_missing_package_names_the_kind_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import fails as if not installed
    with pytest.raises(ConfigError) as err:
        clusters.start_cluster(ClusterConfig(**SLURM))
    assert err.value.key == "run.cluster.kind"
    assert "dask-jobqueue" in str(err.value) and "pip install 'refinery-mdr[cluster]'" in str(err.value)


def test_the_cli_exits_2_on_a_missing_package(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "dask_kubernetes", None)
    monkeypatch.setitem(sys.modules, "dask_kubernetes.operator", None)
    config = tmp_path / "k8s.yaml"
    config.write_text(yaml.safe_dump(config_with(KUBERNETES)))
    result = run_cli_inprocess("run", config, "--output", tmp_path / "out", "--limit", "2")
    assert result.returncode == 2
    assert result.stderr_lines == [("refinery: config error: run.cluster.kind: kubernetes needs the package "
                                    "dask-kubernetes, not installed here (pip install 'refinery-mdr[cluster]')")]


def test_the_slurm_job_script_runs_one_worker_with_the_jobs_cores_and_memory():
    pytest.importorskip("dask_jobqueue")
    cluster = clusters.slurm_cluster(ClusterConfig(**SLURM))
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    for directive in ("-p cpu", "-A lab", "--cpus-per-task=4", "--mem=16G", "-t 04:00:00", "--exclusive"):
        assert f"#SBATCH {directive}" in lines, script
    assert "source /shared/venv/bin/activate" in lines
    worker = next(line for line in lines if "dask_worker" in line or "dask worker" in line)
    assert worker.startswith("/shared/venv/bin/python -m distributed.cli.dask_worker tcp://")
    assert "--nthreads 4" in worker and "--memory-limit 16.00GiB" in worker


def test_slurm_is_scaled_to_its_workers(monkeypatch):
    class Cluster:
        jobs = None

        def scale(self, jobs):
            self.jobs = jobs

    monkeypatch.setattr(clusters, "slurm_cluster", lambda spec: Cluster())
    assert clusters.start_cluster(ClusterConfig(**SLURM)).jobs == 8


def test_the_kubernetes_workers_run_the_image_with_their_resources_and_volumes():
    pytest.importorskip("dask_kubernetes.operator")
    spec = clusters.kubernetes_spec(ClusterConfig(**KUBERNETES), name="refinery-test")
    assert spec["kind"] == "DaskCluster" and spec["metadata"]["name"] == "refinery-test"
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 3
    (container,) = worker["spec"]["containers"]
    assert container["image"] == KUBERNETES["image"]
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}
    assert container["args"][:6] == ["dask", "worker", "--nthreads", "2", "--memory-limit", "8Gi"]
    assert worker["spec"]["volumes"] == [{"name": "data-0", "persistentVolumeClaim": {"claimName": "refinery-data"}}]
    assert container["volumeMounts"] == [{"name": "data-0", "mountPath": "/data"}]
    assert spec["spec"]["scheduler"]["spec"]["containers"][0]["image"] == KUBERNETES["image"]


def test_kubernetes_gets_the_rendered_spec_and_namespace(monkeypatch):
    operator = pytest.importorskip("dask_kubernetes.operator")
    seen = {}
    monkeypatch.setattr(operator, "KubeCluster", lambda **kwargs: seen.update(kwargs) or "cluster")
    assert clusters.start_cluster(ClusterConfig(**KUBERNETES)) == "cluster"
    assert seen["namespace"] == "data" and seen["shutdown_on_close"] is True
    assert seen["custom_cluster_spec"]["spec"]["worker"]["replicas"] == 3


def _double(x: int) -> int:
    return 2 * x


def test_the_engine_runs_on_the_cluster_run_cluster_builds(monkeypatch):
    """What Slurm or Kubernetes would start is stood in for by an in-process cluster."""
    from distributed import LocalCluster

    started = []

    def start(spec):
        started.append(spec)
        return LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None)

    monkeypatch.setattr(clusters, "start_cluster", start)
    run = RunConfig(cluster=ClusterConfig(**SLURM))
    with Engine.for_run(run) as engine:
        assert engine.run([Task(key=f"double-{n}", func=_double, args=(n,)) for n in range(3)]) == [0, 2, 4]
    assert started == [run.cluster]
    with Engine.for_run(run, scheduler="sync") as engine:  # --scheduler wins over run.cluster
        assert engine.client is None
    assert len(started) == 1
