"""K8sTarget against a recording API server on loopback: the exact requests it sends."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mlcicd_dagster.rollout import k8s_target as kt
from mlcicd_dagster.rollout.state import ModelRef
from mlcicd_dagster.rollout.target import DeployTargetError

MODEL = "credit_default"
NS = "mlcicd"
IMAGE = "registry.example.com/mlcicd-server:0.1.0"


def ref(v: str, weight: float = 1.0) -> ModelRef:
    return ModelRef(version=v, model_uri=f"models:/{MODEL}/{v}", run_id=f"run{v}", weight=weight)


@pytest.fixture
def target(tmp_path, api_client):
    spec = kt.ServerSpec(image=IMAGE, namespace=NS, hostnames=("models.example.com",))
    return kt.K8sTarget(
        MODEL, tmp_path / "deployment" / f"{MODEL}.json", spec, api_client=api_client
    )


def _obj(fake, kind, name):
    return fake.objects.get(kt._path(kind, NS, name))


def test_first_deploy_server_side_applies_everything_in_order(target, fake_apiserver):
    state = target.transition("deploy", lambda s: {"stable": ref("1"), "strategy": "blue_green"})
    writes = fake_apiserver.writes()
    assert [(r.method, r.path) for r in writes] == [
        ("PATCH", f"/api/v1/namespaces/{NS}/configmaps/credit-default-v1-state"),
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/credit-default-v1"),
        (
            "PATCH",
            f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/credit-default-v1",
        ),
        ("PATCH", f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/credit-default-v1"),
        ("PATCH", f"/api/v1/namespaces/{NS}/services/credit-default-stable"),
        (
            "PATCH",
            f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes/credit-default",
        ),
    ]
    for r in writes:
        assert r.content_type == "application/apply-patch+yaml"
        assert r.query == {"fieldManager": "mlcicd-rollout", "force": "true"}
        assert r.authorization == "Bearer test-token"
        assert r.body["metadata"]["annotations"]["mlcicd.io/revision"] == str(state.revision)
    dep = writes[1].body
    assert "replicas" not in dep["spec"]  # the HPA owns it
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == IMAGE
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["MLCICD_DEPLOYMENT_STATE_DIR"] == kt.STATE_MOUNT
    doc = json.loads(writes[0].body["data"][f"{MODEL}.json"])
    assert doc["stable"]["version"] == "1" and doc["revision"] == state.revision
    route = writes[-1].body["spec"]
    assert route["hostnames"] == ["models.example.com"]
    assert route["rules"][0]["backendRefs"] == [
        {
            "group": "",
            "kind": "Service",
            "name": "credit-default-stable",
            "port": 80,
            "weight": 1000,
        }
    ]
    # Then it lists each managed kind by label to prune, and deletes nothing.
    lists = [r for r in fake_apiserver.requests if r.method == "GET"]
    assert {r.query["labelSelector"] for r in lists} == {
        "mlcicd.io/model=credit_default,app.kubernetes.io/managed-by=mlcicd"
    }
    assert not [r for r in writes if r.method == "DELETE"]


def test_apply_is_idempotent(target, fake_apiserver):
    state = target.transition("deploy", lambda s: {"stable": ref("1")})
    before = json.dumps(fake_apiserver.objects, sort_keys=True)
    fake_apiserver.clear()
    target.apply(state)
    assert json.dumps(fake_apiserver.objects, sort_keys=True) == before  # generations unchanged
    assert not [r for r in fake_apiserver.writes() if r.method == "DELETE"]


def test_canary_weights_go_to_the_httproute(target, fake_apiserver):
    target.transition("deploy", lambda s: {"stable": ref("1")})
    target.transition("canary", lambda s: {"canary": ref("2", 0.05), "phase": "canary"})
    route = _obj(fake_apiserver, "HTTPRoute", "credit-default")["spec"]["rules"][0]
    assert [(b["name"], b["weight"]) for b in route["backendRefs"]] == [
        ("credit-default-stable", 950),
        ("credit-default-canary", 50),
    ]
    canary_svc = _obj(fake_apiserver, "Service", "credit-default-canary")
    assert canary_svc["spec"]["selector"]["mlcicd.io/model-version"] == "2"
    doc = json.loads(
        _obj(fake_apiserver, "ConfigMap", "credit-default-v2-state")["data"][f"{MODEL}.json"]
    )
    # Canary pods take every request they get as canary: their log rows say track=canary.
    assert doc["canary"]["version"] == "2" and doc["canary"]["weight"] == 1.0
    assert doc["stable"]["version"] == "1"
    target.transition("step", lambda s: {"canary": ref("2", 0.25)})
    route = _obj(fake_apiserver, "HTTPRoute", "credit-default")["spec"]["rules"][0]
    assert [b["weight"] for b in route["backendRefs"]] == [750, 250]


def test_blue_green_switch_then_rollback_then_prune(target, fake_apiserver):
    target.transition("deploy", lambda s: {"stable": ref("1")})
    fake_apiserver.clear()
    # Switch: stable -> v2, v1 kept warm as previous.
    target.transition("switch", lambda s: {"stable": ref("2"), "previous": s.stable})
    stable = _obj(fake_apiserver, "Service", "credit-default-stable")
    previous = _obj(fake_apiserver, "Service", "credit-default-previous")
    assert stable["spec"]["selector"]["mlcicd.io/model-version"] == "2"
    assert previous["spec"]["selector"]["mlcicd.io/model-version"] == "1"
    assert _obj(fake_apiserver, "Deployment", "credit-default-v1") is not None
    # v2's pods were applied before the stable Service moved to them.
    paths = [r.path for r in fake_apiserver.writes()]
    assert paths.index(kt._path("Deployment", NS, "credit-default-v2")) < paths.index(
        kt._path("Service", NS, "credit-default-stable")
    )
    # Rollback: the selector moves back; v2 is no longer named, so it is pruned after.
    fake_apiserver.clear()
    target.transition("rollback", lambda s: {"stable": s.previous, "previous": None})
    stable = _obj(fake_apiserver, "Service", "credit-default-stable")
    assert stable["spec"]["selector"]["mlcicd.io/model-version"] == "1"
    writes = fake_apiserver.writes()
    deletes = [r.path for r in writes if r.method == "DELETE"]
    assert set(deletes) == {
        kt._path("Service", NS, "credit-default-previous"),
        kt._path("HorizontalPodAutoscaler", NS, "credit-default-v2"),
        kt._path("PodDisruptionBudget", NS, "credit-default-v2"),
        kt._path("Deployment", NS, "credit-default-v2"),
        kt._path("ConfigMap", NS, "credit-default-v2-state"),
    }
    first_delete = next(i for i, r in enumerate(writes) if r.method == "DELETE")
    assert all(r.method == "PATCH" for r in writes[:first_delete])
    assert all(r.body["propagationPolicy"] == "Background" for r in writes if r.method == "DELETE")
    assert _obj(fake_apiserver, "Deployment", "credit-default-v2") is None


def test_wait_until_serving_waits_for_pods_and_revision(target, fake_apiserver):
    fake_apiserver.auto_ready = False
    state = target.transition("deploy", lambda s: {"stable": ref("1")})
    clock = iter(range(1000)).__next__
    assert target.wait_until_serving(state.revision, 3, clock=clock, sleep=lambda s: None) is False
    assert (
        "deployment credit-default-v1 not available"
        in target.serving_report(state.revision)["pending"]
    )
    fake_apiserver.make_ready()
    assert target.wait_until_serving(state.revision, 3, clock=clock, sleep=lambda s: None)
    # A later revision is not served until it is recorded and applied.
    assert not target.wait_until_serving(state.revision + 1, 1, clock=clock, sleep=lambda s: None)
    fake_apiserver.pods_down.add("credit-default-stable")
    report = target.serving_report(state.revision)
    assert report["pending"] == ["pods behind credit-default-stable serve rNone"]


def test_smoke_scores_through_the_service_proxy(target, fake_apiserver):
    target.transition("deploy", lambda s: {"stable": ref("1")})
    target.transition("canary", lambda s: {"canary": ref("2", 0.0)})
    rows = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0, 1, 0]})
    fake_apiserver.clear()
    scores = target.smoke("canary", rows)
    assert scores.tolist() == [0.25, 0.25, 0.25]
    (r,) = fake_apiserver.requests
    assert r.method == "POST"
    assert r.path == f"/api/v1/namespaces/{NS}/services/credit-default-canary:80/proxy/invocations"
    assert r.body["dataframe_split"]["columns"] == ["a", "b"]
    # The wrong version answering on a track fails the smoke test.
    svc = _obj(fake_apiserver, "Service", "credit-default-canary")
    svc["spec"]["selector"]["mlcicd.io/model-version"] = "1"
    with pytest.raises(DeployTargetError, match="answered by version 1, expected 2"):
        target.smoke("canary", rows)
    with pytest.raises(DeployTargetError, match="nothing deployed"):
        target.smoke("previous", rows)
    with pytest.raises(DeployTargetError, match="at least one row"):
        target.smoke("stable", rows.iloc[:0])
    with pytest.raises(DeployTargetError, match="unknown track"):
        target.smoke("blue", rows)


def test_errors_are_named(tmp_path, api_client, fake_apiserver):
    spec = kt.ServerSpec(image=IMAGE)
    with pytest.raises(DeployTargetError, match="cannot be a Kubernetes name"):
        kt.K8sTarget("Credit Default!", tmp_path / "x.json", spec, api_client=api_client)
    with pytest.raises(DeployTargetError, match="image is empty"):
        kt.ServerSpec(image="")
    target = kt.K8sTarget(MODEL, tmp_path / "s.json", spec, api_client=api_client)
    from mlcicd_dagster.rollout.state import DeploymentState

    with pytest.raises(DeployTargetError, match="needs a stable"):
        target.apply(DeploymentState(model_name=MODEL, canary=ref("2", 0.1)))
    with pytest.raises(DeployTargetError, match="not a fraction"):
        target.apply(DeploymentState(model_name=MODEL, stable=ref("1"), canary=ref("2", 1.5)))
    with pytest.raises(DeployTargetError, match="label value"):
        target.apply(DeploymentState(model_name=MODEL, stable=ref("1 beta")))


def test_unreachable_api_server_is_a_clear_error(tmp_path):
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = "http://127.0.0.1:9"  # discard port: nothing listens
    target = kt.K8sTarget(
        MODEL, tmp_path / "s.json", kt.ServerSpec(image=IMAGE), api_client=client.ApiClient(cfg)
    )
    target._api.rest_client.pool_manager.connection_pool_kw["retries"] = False
    with pytest.raises(DeployTargetError, match="unreachable"):
        target.transition("deploy", lambda s: {"stable": ref("1")})
    # The intent is recorded (old or new, never half); resume re-applies it later.
    assert target.read_state().stable == ref("1")


def test_describe(target):
    target.transition("deploy", lambda s: {"stable": ref("1")})
    target.transition("canary", lambda s: {"canary": ref("2", 0.1)})
    d = target.describe()
    assert d["kind"] == "k8s"
    assert d["deployments"] == ["credit-default-v1", "credit-default-v2"]
    assert d["route_weights"] == {"stable": 900, "canary": 100}
    assert d["services"] == {"stable": "credit-default-stable", "canary": "credit-default-canary"}


def test_dry_run_sends_dry_run_and_prunes_nothing(tmp_path, api_client, fake_apiserver):
    spec = kt.ServerSpec(image=IMAGE, namespace=NS)
    target = kt.K8sTarget(MODEL, tmp_path / "s.json", spec, api_client=api_client, dry_run=True)
    target.apply(kt.example_states(MODEL)["canary"])
    assert fake_apiserver.requests
    assert all(r.method == "PATCH" and r.query["dryRun"] == "All" for r in fake_apiserver.requests)
