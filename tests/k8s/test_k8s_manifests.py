"""deploy/: every Kubernetes object passes strict schema validation, offline.

Core kinds are checked with kubernetes-validate (strict: unknown fields fail) against
the version deploy/terraform provisions and the newest version the package ships.
Gateway API objects are CRDs, which kubernetes-validate does not know: they are checked
against the handwritten subset schema deploy/k8s/schemas/gateway-api-v1.schema.json.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from mlcicd_dagster.platform import k8s
from mlcicd_dagster.rollout import k8s_target as kt
from mlcicd_dagster.rollout.state import DeploymentState, ModelRef

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "k8s" / "base"
EXAMPLES = DEPLOY / "k8s" / "model-server" / "examples"
GATEWAY_SCHEMA = json.loads((DEPLOY / "k8s" / "schemas" / "gateway-api-v1.schema.json").read_text())
EKS_VERSION = re.search(
    r'cluster_version\s*=\s*"(\d+\.\d+)"', (DEPLOY / "terraform" / "variables.tf").read_text()
) or re.search(r'default\s*=\s*"(1\.\d+)"', (DEPLOY / "terraform" / "variables.tf").read_text())
VERSIONS = (f"{EKS_VERSION.group(1)}.0" if EKS_VERSION else "1.33.0", "1.37.0")


def validate(obj: dict[str, Any]) -> None:
    if obj["apiVersion"].startswith("gateway.networking.k8s.io/"):
        jsonschema.validate(obj, GATEWAY_SCHEMA)
        return
    for version in VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_objects() -> list[dict[str, Any]]:
    return [
        d
        for p in sorted(BASE.glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in load_docs(p)
    ]


def all_static_objects() -> list[dict[str, Any]]:
    return base_objects() + [d for p in sorted(EXAMPLES.glob("*.yaml")) for d in load_docs(p)]


def _id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("obj", all_static_objects(), ids=_id)
def test_every_static_object_is_schema_valid(obj):
    validate(obj)


def test_kustomization_lists_every_base_file():
    kust = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    assert kust["namespace"] == k8s.DEFAULT_NAMESPACE


def test_examples_are_exactly_what_the_target_renders():
    spec = kt.ServerSpec(image=kt.EXAMPLE_IMAGE, hostnames=("models.example.com",))
    for name, state in kt.example_states().items():
        assert load_docs(EXAMPLES / f"{name}.yaml") == kt.render(state, spec), (
            f"{name}.yaml is stale: run python -m mlcicd_dagster.rollout.k8s_target "
            "deploy/k8s/model-server/examples"
        )


def ref(v: str, w: float = 1.0) -> ModelRef:
    return ModelRef(version=v, model_uri=f"models:/m/{v}", weight=w)


@pytest.mark.parametrize(
    "state",
    [
        DeploymentState(model_name="credit_default", revision=3, stable=ref("1")),
        DeploymentState(
            model_name="credit_default",
            revision=9,
            stable=ref("4"),
            canary=ref("5", 0.05),
            shadow=ref("6", 0.5),
            previous=ref("3"),
        ),
        DeploymentState(model_name="a.b_c", revision=1, stable=ref("v10"), canary=ref("v11", 1.0)),
    ],
)
def test_rendered_objects_are_schema_valid(state):
    spec = kt.ServerSpec(image="r/i:1", gateway_namespace="gateway-system", hostnames=("a.b",))
    objs = kt.render(state, spec)
    assert objs
    for obj in objs:
        validate(obj)


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"]["containers"]


def test_workloads_are_locked_down_and_sized():
    deployments = [o for o in all_static_objects() if o["kind"] == "Deployment"]
    assert {o["metadata"]["name"] for o in deployments} >= {"mlflow", "credit-default-v1"}
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for c in _containers(dep):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"], _id(dep)
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert set(c["resources"]) == {"requests", "limits"}
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert c["livenessProbe"] and c["readinessProbe"]


def test_model_server_probes_and_track_objects():
    objs = load_docs(EXAMPLES / "canary.yaml")
    kinds = {o["kind"] for o in objs}
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
        "HTTPRoute",
    }
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        (c,) = _containers(dep)
        assert c["livenessProbe"]["httpGet"]["path"] == "/health"
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    services = {
        o["metadata"]["name"]: o["spec"]["selector"] for o in objs if o["kind"] == "Service"
    }
    assert services["credit-default-stable"]["mlcicd.io/model-version"] == "2"
    assert services["credit-default-canary"]["mlcicd.io/model-version"] == "3"
    assert services["credit-default-previous"]["mlcicd.io/model-version"] == "1"
    for hpa in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        assert hpa["spec"]["minReplicas"] >= 2
    # The NetworkPolicy selects exactly the pods the target creates.
    (np_,) = [o for o in base_objects() if _id(o) == "NetworkPolicy/mlcicd-model-server"]
    pod_labels = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["metadata"][
        "labels"
    ]
    for key, value in np_["spec"]["podSelector"]["matchLabels"].items():
        assert pod_labels[key] == value


def test_validation_can_fail():
    """The checks above are not vacuous: a bad field or a bad weight is caught."""
    (dep,) = [o for o in load_docs(EXAMPLES / "stable.yaml") if o["kind"] == "Deployment"]
    bad = json.loads(json.dumps(dep))
    _containers(bad)[0]["securityContext"]["runAsNonroot"] = True  # typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(bad)
    (route,) = [o for o in load_docs(EXAMPLES / "stable.yaml") if o["kind"] == "HTTPRoute"]
    bad_route = json.loads(json.dumps(route))
    bad_route["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_route)
    bad_route = json.loads(json.dumps(route))
    bad_route["spec"]["rules"][0]["backendRefs"][0]["weigth"] = 5
    with pytest.raises(jsonschema.ValidationError):
        validate(bad_route)


def test_rbac_covers_every_kind_the_target_writes():
    (role,) = [o for o in base_objects() if o["kind"] == "Role"]
    allowed = {
        (group, res): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for res in rule["resources"]
    }
    for kind, (api_version, plural) in kt.KINDS.items():
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        assert {"get", "list", "patch", "delete"} <= allowed[(group, plural)], kind
    assert "create" in allowed[("", "services/proxy")]
