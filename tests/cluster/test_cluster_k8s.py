"""Against a real cluster: runs only where KUBECONFIG is set (skipped here, plainly).

What only a cluster can show: that the API server (with the Gateway API CRDs installed)
admits every object we render and ship, server-side apply with our field manager, and,
with MLCICD_CLUSTER_E2E=1 and a pushed server image, that pods come up Ready and the
selector switch and route weights move traffic.

  KUBECONFIG=~/.kube/config MLCICD_K8S_NAMESPACE=mlcicd-test pytest tests/cluster -m cluster
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from mlcicd_dagster.rollout import k8s_target as kt
from mlcicd_dagster.rollout.state import ModelRef

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not os.environ.get("KUBECONFIG"),
        reason="KUBECONFIG is not set: no Kubernetes cluster to test against (skipped)",
    ),
]

NAMESPACE = os.environ.get("MLCICD_K8S_NAMESPACE", "mlcicd")
BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"


@pytest.fixture
def api():
    import kubernetes

    return kubernetes.config.new_client_from_config()


def test_api_server_admits_every_rendered_object(tmp_path, api):
    spec = kt.ServerSpec(image=os.environ.get("MLCICD_SERVER_IMAGE", "r/i:1"), namespace=NAMESPACE)
    target = kt.K8sTarget("credit_default", tmp_path / "s.json", spec, api_client=api, dry_run=True)
    for state in kt.example_states().values():
        target.apply(state)  # dryRun=All: validated and admitted, nothing persisted


def test_api_server_admits_the_base_manifests(api):
    target = kt.K8sTarget(
        "credit_default", "/dev/null", kt.ServerSpec(image="r/i:1"), api_client=api, dry_run=True
    )
    for path in sorted(BASE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for obj in yaml.safe_load_all(path.read_text()):
            if obj and obj["kind"] in kt.KINDS:
                obj["metadata"]["namespace"] = NAMESPACE
                target.server_side_apply(obj)


@pytest.mark.skipif(
    os.environ.get("MLCICD_CLUSTER_E2E") != "1" or not os.environ.get("MLCICD_SERVER_IMAGE"),
    reason="set MLCICD_CLUSTER_E2E=1 and MLCICD_SERVER_IMAGE to roll out real pods",
)
def test_blue_green_and_canary_on_the_cluster(tmp_path, api):
    model_uri_base = os.environ.get("MLCICD_CLUSTER_MODEL", "credit_default")
    spec = kt.ServerSpec(image=os.environ["MLCICD_SERVER_IMAGE"], namespace=NAMESPACE)
    target = kt.K8sTarget(model_uri_base, tmp_path / "s.json", spec, api_client=api)

    def ref(v: str, w: float = 1.0) -> ModelRef:
        return ModelRef(version=v, model_uri=f"models:/{model_uri_base}/{v}", weight=w)

    try:
        s = target.transition("deploy", lambda s: {"stable": ref("1")})
        assert target.wait_until_serving(s.revision, 600)
        s = target.transition("canary", lambda s: {"canary": ref("2", 0.1)})
        assert target.wait_until_serving(s.revision, 600)
        s = target.transition("promote", lambda s: {"stable": s.canary, "canary": None,
                                                    "previous": s.stable})  # fmt: skip
        assert target.wait_until_serving(s.revision, 600)
    finally:
        from mlcicd_dagster.rollout.state import DeploymentState

        target.apply(DeploymentState(model_name=model_uri_base, revision=10**6))  # prune all
