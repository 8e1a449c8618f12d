"""The shipped digits pipeline (torch) asks Kubernetes for a GPU for its training step:
with ``MLCICD_ENV=k8s`` the Job dagster-k8s would send for ``digits/model`` requests
``nvidia.com/gpu`` on the GPU pool, and diabetes' (scikit-learn) does not. Same path as
``test_k8s_compute``: the real executor config, the step's tags, ``construct_dagster_k8s_job``,
checked with kubernetes-validate."""

from __future__ import annotations

import dagster as dg
import kubernetes_validate
from dagster._config import process_config
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.executor.init import InitExecutorContext
from dagster_k8s import k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from tests_support import ROOT

from mlcicd_dagster.platform import k8s

ENV = {
    "MLCICD_ENV": "k8s",
    "MLCICD_IMAGE": "registry.example.com/mlcicd-user-code:0.1.0",
    "MLCICD_K8S_NAMESPACE": "mlcicd",
    "MLCICD_GPU_COUNT": "1",
    "MLCICD_GPU_NODE_POOL": "gpu-l4",
}


def _job(tmp_path, asset: dg.AssetsDefinition) -> dict:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        'clusters: [{name: c, cluster: {server: "http://127.0.0.1:9"}}]\n'
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u, namespace: mlcicd}}]\n"
        "current-context: x\n"
    )
    raw = {
        **k8s.k8s_executor_config(ENV),
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
    }
    result = process_config(k8s_job_executor.config_schema.config_type, raw)
    assert result.success, result.errors

    @dg.asset
    def anything() -> int:
        return 1

    job = dg.Definitions(assets=[anything]).resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        executor = k8s_job_executor.executor_creation_fn(
            InitExecutorContext(
                job=InMemoryJob(job),
                executor_def=k8s_job_executor,
                executor_config=result.value,
                instance=instance,
            )
        )
    handler = executor._step_handler  # noqa: SLF001 - the object under test
    context = handler._executor_container_context.merge(  # noqa: SLF001
        K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(asset.op.tags))
    )
    v1job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(job_image=handler._executor_image),  # noqa: SLF001
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-digits",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/op": asset.op.name},
    )
    from kubernetes.client import ApiClient

    body = ApiClient().sanitize_for_serialization(v1job)
    body.setdefault("apiVersion", "batch/v1")
    body.setdefault("kind", "Job")
    kubernetes_validate.validate(body, "1.33.0", strict=True)
    return body


def test_digits_training_step_job_requests_a_gpu(tmp_path, monkeypatch, home_dir):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    from mlcicd_dagster.location import load_location

    location = load_location(ROOT / "assets")
    assets = {
        key.to_user_string(): a
        for a in location.defs.assets or []
        if isinstance(a, dg.AssetsDefinition)
        for key in a.keys
    }
    body = _job(tmp_path, assets["digits/model"])
    pod = body["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"mlcicd.io/node-pool": "gpu-l4"}
    for name in ("diabetes/model", "digits/training_set"):
        (c,) = _job(tmp_path, assets[name])["spec"]["template"]["spec"]["containers"]
        assert "nvidia.com/gpu" not in str(c.get("resources"))
