"""GPU/CPU op_tags and the k8s executor, checked on the real Job spec dagster-k8s would send.

The path mirrors ``dagster_k8s.executor.K8sStepHandler.launch_step``: the real
``k8s_job_executor`` is initialised from our config (so Dagster validates it), its
container context is merged with the step's ``dagster-k8s/config`` tag read by
``get_user_defined_k8s_config``, and ``construct_dagster_k8s_job`` builds the V1Job.
The Job is then checked with kubernetes-validate (strict) as the API server would.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import kubernetes_validate
import pytest
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.executor.init import InitExecutorContext
from dagster_k8s import k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)

from mlcicd_dagster.platform import k8s

K8S_VERSION = "1.33.0"  # a current release kubernetes-validate ships strict schemas for

ENV = {
    "MLCICD_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlcicd-user-code:0.1.0",
    "MLCICD_K8S_NAMESPACE": "mlcicd",
    "MLCICD_GPU_COUNT": "2",
    "MLCICD_GPU_NODE_POOL": "gpu-a10g",
}


def _kubeconfig(tmp_path: Path) -> Path:
    # Never contacted: building the step handler only reads it.
    path = tmp_path / "kubeconfig"
    path.write_text(
        """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: mlcicd}}]
current-context: x
"""
    )
    return path


@dg.asset(op_tags=k8s.op_tags_for("gpu", k8s.ComputeProfile.from_env(ENV)))
def train_torch() -> int:
    return 1


@dg.asset(op_tags=k8s.op_tags_for("cpu", k8s.ComputeProfile.from_env(ENV)))
def train_sklearn() -> int:
    return 1


@dg.asset
def untagged() -> int:
    return 1


def _step_handler(tmp_path: Path):
    """The real K8sStepHandler that k8s_job_executor builds from our config."""
    from dagster._config import process_config

    raw = {
        **k8s.k8s_executor_config(ENV),
        "load_incluster_config": False,
        "kubeconfig_file": str(_kubeconfig(tmp_path)),
    }
    result = process_config(k8s_job_executor.config_schema.config_type, raw)
    assert result.success, result.errors
    defs = dg.Definitions(assets=[train_torch, train_sklearn, untagged])
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        executor = k8s_job_executor.executor_creation_fn(
            InitExecutorContext(
                job=InMemoryJob(job),
                executor_def=k8s_job_executor,
                executor_config=result.value,
                instance=instance,
            )
        )
    return executor._step_handler  # noqa: SLF001 - the object under test


def _job_for(tmp_path: Path, asset: dg.AssetsDefinition):
    handler = _step_handler(tmp_path)
    # As K8sStepHandler._get_container_context: executor context, then the step's tags.
    context = handler._executor_container_context.merge(  # noqa: SLF001
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(asset.op.tags))
    )
    job_config = DagsterK8sJobConfig(job_image=handler._executor_image)  # noqa: SLF001
    job = construct_dagster_k8s_job(
        job_config=job_config,
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-abc123",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/op": asset.op.name},
        env_vars=[{"name": "DAGSTER_RUN_STEP_KEY", "value": asset.op.name}],
    )
    from kubernetes.client import ApiClient

    body = ApiClient().sanitize_for_serialization(job)
    body.setdefault("apiVersion", "batch/v1")
    body.setdefault("kind", "Job")
    kubernetes_validate.validate(body, K8S_VERSION, strict=True)
    return body, context.namespace


def _container(body):
    (container,) = body["spec"]["template"]["spec"]["containers"]
    return container


def test_gpu_step_job_requests_gpus_on_the_gpu_pool(tmp_path):
    body, namespace = _job_for(tmp_path, train_torch)
    pod = body["spec"]["template"]["spec"]
    c = _container(body)
    assert namespace == "mlcicd"
    assert c["image"] == ENV["MLCICD_IMAGE"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert pod["nodeSelector"] == {"mlcicd.io/node-pool": "gpu-a10g"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    # Secrets and settings arrive as envFrom references, never as values in the spec.
    refs = {e.get("secretRef", {}).get("name") for e in c["envFrom"]}
    assert {"mlcicd-postgres", "mlcicd-mlflow", "mlcicd-object-store"} <= refs
    assert {"configMapRef": {"name": "mlcicd-env"}} in c["envFrom"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MLCICD_ENV"] == "k8s"
    assert env["MLCICD_HOME"] == k8s.HOME_MOUNT_PATH
    assert env["DAGSTER_RUN_STEP_KEY"] == "train_torch"
    assert not any("PASSWORD" in name for name in env)
    # The shared home and the security context survive the deep merge with GPU tags.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["mlcicd-home"] == k8s.HOME_MOUNT_PATH
    claims = {v["name"]: v.get("persistentVolumeClaim") for v in pod["volumes"]}
    assert claims["mlcicd-home"] == {"claimName": "mlcicd-home"}
    assert c["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["serviceAccountName"] == "mlcicd-runner"


def test_cpu_step_job_has_cpu_requests_and_no_gpu(tmp_path):
    for asset in (train_sklearn, untagged):  # untagged steps get the executor's CPU default
        body, _ = _job_for(tmp_path, asset)
        pod = body["spec"]["template"]["spec"]
        res = _container(body)["resources"]
        assert res["requests"] == {"cpu": "500m", "memory": "1Gi"}
        assert res["limits"] == {"cpu": "2", "memory": "4Gi"}
        assert "nvidia.com/gpu" not in str(res)
        assert "nodeSelector" not in pod
        assert "tolerations" not in pod


def test_gpu_count_zero_falls_back_to_cpu_placement():
    profile = k8s.ComputeProfile.from_env({"MLCICD_GPU_COUNT": "0"})
    assert k8s.op_tags_for("gpu", profile) == k8s.op_tags_for("cpu", profile)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MLCICD_GPU_COUNT": "two"}, "MLCICD_GPU_COUNT"),
        ({"MLCICD_GPU_COUNT": "-1"}, "gpu_count"),
        ({"MLCICD_GPU_NODE_POOL": "bad pool!"}, "gpu_node_pool"),
        ({"MLCICD_MEMORY_LIMIT": "4 gigs"}, "memory_limit"),
        ({"MLCICD_GPU_NODE_LABEL": "-x-/y"}, "gpu_node_label"),
    ],
)
def test_bad_settings_name_the_problem(env, needle):
    with pytest.raises(k8s.ComputeConfigError, match=needle):
        k8s.ComputeProfile.from_env(env)


def test_bad_kind_and_bad_executor_env_are_rejected():
    with pytest.raises(k8s.ComputeConfigError, match="kind"):
        k8s.op_tags_for("tpu")  # type: ignore[arg-type]
    with pytest.raises(k8s.ComputeConfigError, match="MLCICD_MAX_CONCURRENT_STEPS"):
        k8s.k8s_executor_config({"MLCICD_MAX_CONCURRENT_STEPS": "0"})


def test_k8s_executor_is_a_configured_k8s_job_executor():
    ex = k8s.k8s_executor(ENV)
    assert isinstance(ex, dg.ExecutorDefinition)
    assert ex.name == "mlcicd_k8s_executor"
    # Definitions accept it (the lead's environment table composes it this way).
    defs = dg.Definitions(assets=[train_torch], executor=ex)
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == ex.name


def test_module_import_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, mlcicd_dagster.platform.k8s; "
        "bad=[m for m in ('dagster_k8s','kubernetes','dagster') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
