"""Dockerfiles and Helm values: pinned, non-root, consistent with platform/k8s.py.

The Helm chart is not available offline, so its values are checked where they can be
checked for real: the run launcher and run-queue blocks against the config schemas of
the Dagster classes the chart turns them into, and every Kubernetes fragment (resources,
securityContext, volumes, nodeSelector) inside a Pod with kubernetes-validate (strict).
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mlcicd_dagster.platform import k8s

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
VALUES = yaml.safe_load((DEPLOY / "helm" / "dagster-values.yaml").read_text())
K8S_VERSION = "1.33.0"


@pytest.mark.parametrize("name", ["Dockerfile.user-code", "Dockerfile.model-server"])
def test_dockerfiles_are_multistage_pinned_nonroot_and_cache_free(name):
    text = (DEPLOY / "docker" / name).read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M)
    froms = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert len(froms) >= 2 and all(f[0] == "${PYTHON_IMAGE}" for f in froms)
    assert "latest" not in text
    final = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER (\S+)$", final, re.M)
    assert users and users[-1].split(":")[0] == str(k8s.RUN_AS_USER)
    assert final.index("USER ") < final.index("CMD ")
    for line in re.findall(r"pip install[^\n]*", text):
        assert "--no-cache-dir" in line, line
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert (DEPLOY / "docker" / f"{name}.dockerignore").exists()


def _as_pod(container: dict, pod_spec: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "values-check"},
        "spec": {"containers": [{"name": "c", "image": "i:1", **container}], **(pod_spec or {})},
    }


def test_user_deployment_matches_the_platform_contract():
    (dep,) = VALUES["dagster-user-deployments"]["deployments"]
    env = {e["name"]: e["value"] for e in dep["env"]}
    assert env["MLCICD_ENV"] == "k8s" and env["MLCICD_HOME"] == k8s.HOME_MOUNT_PATH
    assert set(env) - {
        "MLCICD_ENV",
        "MLCICD_HOME",
        "MLCICD_K8S_NAMESPACE",
        "MLCICD_SERVER_IMAGE",
        "MLCICD_MLFLOW_UI_URL",  # where browsers open the MLflow run links
    } <= (set(k8s.PROFILE_ENV) | {"MLCICD_MAX_CONCURRENT_STEPS"})
    k8s.ComputeProfile.from_env(env)  # the values are valid settings
    assert [s["name"] for s in dep["envSecrets"]] == list(k8s.ENV_SECRETS)
    assert dep["dagsterApiGrpcArgs"][:2] == ["-m", "definitions"]
    pod = _as_pod(
        {
            "resources": dep["resources"],
            "securityContext": dep["securityContext"],
            "volumeMounts": dep["volumeMounts"],
        },
        {
            "volumes": dep["volumes"],
            "nodeSelector": dep["nodeSelector"],
            "securityContext": dep["podSecurityContext"],
        },
    )
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_run_launcher_block_is_valid_k8s_run_launcher_config():
    from dagster._config import process_config
    from dagster_k8s import K8sRunLauncher

    assert VALUES["runLauncher"]["type"] == "K8sRunLauncher"
    c = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
    # The chart's camelCase keys -> the dagster.yaml keys it writes.
    config = {
        "instance_config_map": "dagster-instance",
        "image_pull_policy": c["imagePullPolicy"],
        "job_namespace": c["jobNamespace"],
        "load_incluster_config": c["loadInclusterConfig"],
        "env_config_maps": [m["name"] for m in c["envConfigMaps"]],
        "env_secrets": [s["name"] for s in c["envSecrets"]],
        "env_vars": c["envVars"],
        "volumes": c["volumes"],
        "volume_mounts": c["volumeMounts"],
        "labels": c["labels"],
        "fail_pod_on_run_failure": c["failPodOnRunFailure"],
        "run_k8s_config": {
            "container_config": c["runK8sConfig"]["containerConfig"],
            "pod_spec_config": c["runK8sConfig"]["podSpecConfig"],
        },
    }
    result = process_config(K8sRunLauncher.config_type(), config)
    assert result.success, result.errors
    assert config["env_secrets"] == list(k8s.ENV_SECRETS)
    pod = _as_pod(
        {**c["runK8sConfig"]["containerConfig"], "volumeMounts": c["volumeMounts"]},
        {**c["runK8sConfig"]["podSpecConfig"], "volumes": c["volumes"]},
    )
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_run_queue_and_retries():
    from dagster._config import process_config
    from dagster._core.run_coordinator import QueuedRunCoordinator

    daemon = VALUES["dagsterDaemon"]
    q = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    config = {
        "max_concurrent_runs": q["maxConcurrentRuns"],
        "tag_concurrency_limits": q["tagConcurrencyLimits"],
        "dequeue_interval_seconds": q["dequeueIntervalSeconds"],
    }
    result = process_config(QueuedRunCoordinator.config_type(), config)
    assert result.success, result.errors
    assert q["maxConcurrentRuns"] >= 1
    assert daemon["runRetries"]["enabled"] and daemon["runRetries"]["maxRetries"] >= 1
    assert VALUES["postgresql"]["enabled"] is False  # external RDS from deploy/terraform
