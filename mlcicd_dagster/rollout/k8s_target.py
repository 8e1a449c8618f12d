"""``K8sTarget``: the deploy target for a Kubernetes cluster, behind the ``DeployTarget`` API.

Layout (all objects carry ``mlcicd.io/model`` and ``app.kubernetes.io/managed-by=mlcicd``)

* one **Deployment per served model version** (``<model>-v<version>``) with its
  HorizontalPodAutoscaler, PodDisruptionBudget and a ConfigMap holding that
  version's *pod state* (the deployment-state document the server in those pods
  follows, via ``MLCICD_DEPLOYMENT_STATE_DIR``);
* one **Service per track** (``<model>-stable``, ``-canary``, ``-previous``) whose
  selector names the version on that track;
* one Gateway API **HTTPRoute** (``<model>``) splitting traffic between the stable
  and canary Services by weight.

Blue-green is a selector switch: the stable Service moves from version A's pods to
version B's in one API write, while A keeps running under ``<model>-previous`` for
an instant rollback (switch back). Canary is HTTPRoute weights, not a replica
ratio, because a replica ratio ties the traffic fraction to pod counts (5 % needs
20 pods; the HPA then changes the split as load moves), whereas route weights give
the exact fraction with a single canary pod and leave each Deployment's HPA free.
A bad canary also runs in its own pods, so a crash or OOM cannot take stable down.
Shadow stays in-process (the stable pods load the shadow model and score the
mirrored fraction from a bounded queue, as the local server does): a gateway
mirror would need a third pool and would double-log stable rows.

Limits, said plainly: route weights are per request, not sticky per routing key
(the in-process server is sticky); in-cluster clients that call
``<model>-stable`` directly bypass the split. Server-side apply with one field
manager makes ``apply`` idempotent; objects of versions no longer referenced are
deleted after the Services and route have moved away from them.

The kubernetes client is imported lazily: definitions.py imports the rollout package.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.platform.k8s import (
    CONTAINER_SECURITY_CONTEXT,
    DEFAULT_HOME_CLAIM,
    DEFAULT_NAMESPACE,
    HOME_MOUNT_PATH,
    RUN_AS_USER,
    SECRET_FEEDBACK,
    SECRET_MLFLOW,
    SECRET_OBJECT_STORE,
)
from mlcicd_dagster.rollout import state as st
from mlcicd_dagster.rollout.target import (
    DeployTarget,
    DeployTargetError,
    check_scores,
    check_track,
)

FIELD_MANAGER = "mlcicd-rollout"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"  # server-side apply (JSON is YAML)
LABEL_MODEL = "mlcicd.io/model"
LABEL_VERSION = "mlcicd.io/model-version"
LABEL_TRACK = "mlcicd.io/track"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGED_BY = "mlcicd"
APP_NAME = "mlcicd-model-server"
ANN_REVISION = "mlcicd.io/revision"
STATE_MOUNT = "/etc/mlcicd/deployment"  # where the pod-state ConfigMap is mounted
SERVER_PORT = 8080
SERVICE_PORT = 80
ROUTE_WEIGHT_SCALE = 1000  # HTTPRoute weights are integers: 0.1 % resolution
SERVICE_TRACKS = ("stable", "canary", "previous")  # shadow is in-process (see module doc)
POLL_S = 2.0  # a Deployment rollout takes seconds to minutes; polling faster buys nothing
HTTP_TIMEOUT_S = 30.0

# Kinds the target writes: kind -> (apiVersion, plural). Paths are built from these.
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("v1", "configmaps"),
    "Service": ("v1", "services"),
    "Deployment": ("apps/v1", "deployments"),
    "HorizontalPodAutoscaler": ("autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets"),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproutes"),
}
# Per-version kinds garbage-collected when a version stops serving (order: dependents first).
VERSION_KINDS = ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Deployment", "ConfigMap")

_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def dns_name(model_name: str) -> str:
    """``credit_default`` -> ``credit-default``; fails on names Kubernetes cannot carry."""
    name = model_name.lower().replace("_", "-").replace(".", "-")
    # "<name>-v<version>-state" must stay a valid 63-char label for Services/ConfigMaps.
    if not _DNS.match(name) or len(name) > 40:
        raise DeployTargetError(
            f"model name {model_name!r} cannot be a Kubernetes name "
            "(lowercase letters, digits, '-', '_' or '.', at most 40 characters)"
        )
    return name


def _version_label(version: str) -> str:
    if not _LABEL_VALUE.match(version):
        raise DeployTargetError(f"model version {version!r} cannot be a Kubernetes label value")
    return version


@dataclass(frozen=True)
class ServerSpec:
    """How model server pods look. ``from_env`` reads ``MLCICD_SERVER_*`` overrides."""

    image: str
    namespace: str = DEFAULT_NAMESPACE
    gateway_name: str = "mlcicd-gateway"
    gateway_namespace: str | None = None  # None: the route's namespace
    hostnames: tuple[str, ...] = ()
    service_account: str = "mlcicd-model-server"
    home_claim: str = DEFAULT_HOME_CLAIM
    min_replicas: int = 2  # two so a node drain never leaves a track without a pod
    max_replicas: int = 10
    target_cpu_utilization: int = 70
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "2Gi"
    # SECRET_FEEDBACK sets MLCICD_FEEDBACK_TOKEN: /feedback then requires it (scoring is open).
    env_secrets: tuple[str, ...] = (SECRET_MLFLOW, SECRET_OBJECT_STORE, SECRET_FEEDBACK)
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.image:
            raise DeployTargetError("ServerSpec.image is empty (set MLCICD_SERVER_IMAGE)")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise DeployTargetError(
                f"replicas must satisfy 1 <= min ({self.min_replicas}) <= max ({self.max_replicas})"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSpec:
        env = os.environ if env is None else env
        image = env.get("MLCICD_SERVER_IMAGE", "")
        hosts = tuple(h for h in env.get("MLCICD_SERVER_HOSTNAMES", "").split(",") if h.strip())
        kwargs: dict[str, Any] = {
            "image": image,
            "namespace": env.get("MLCICD_K8S_NAMESPACE") or DEFAULT_NAMESPACE,
            "hostnames": tuple(h.strip() for h in hosts),
        }
        if env.get("MLCICD_GATEWAY_NAME"):
            kwargs["gateway_name"] = env["MLCICD_GATEWAY_NAME"]
        if env.get("MLCICD_GATEWAY_NAMESPACE"):
            kwargs["gateway_namespace"] = env["MLCICD_GATEWAY_NAMESPACE"]
        for var, attr in (
            ("MLCICD_SERVER_MIN_REPLICAS", "min_replicas"),
            ("MLCICD_SERVER_MAX_REPLICAS", "max_replicas"),
        ):
            if env.get(var):
                try:
                    kwargs[attr] = int(env[var])
                except ValueError:
                    raise DeployTargetError(f"{var}={env[var]!r} is not an integer") from None
        return cls(**kwargs)


# -- what the cluster should hold for a state ------------------------------------------
def _ref(ref: st.ModelRef | None, **changes: Any) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {**asdict(ref), **changes}


def pod_state(state: st.DeploymentState, version: str) -> dict[str, Any]:
    """The deployment-state document the pods of ``version`` follow.

    Each pod pool serves one role: the stable pods serve stable (and score the
    shadow in-process); canary pods get every request as canary (weight 1.0) so
    their prediction log rows say ``track=canary``; a previous version's pods
    serve it as stable, ready for the switch back. Same revision as ``state``,
    so ``GET /deployment`` on any pod says which state it follows.
    """
    doc: dict[str, Any] = {
        "schema": st.SCHEMA_VERSION,
        "model_name": state.model_name,
        "revision": state.revision,
        "strategy": state.strategy,
        "phase": state.phase,
        "updated_at": state.updated_at,
        "stable": None,
        "canary": None,
        "shadow": None,
        "previous": None,
        "history": [],
    }
    if state.stable is not None and state.stable.version == version:
        doc["stable"] = _ref(state.stable, weight=1.0)
        doc["shadow"] = _ref(state.shadow)
    elif state.canary is not None and state.canary.version == version:
        doc["stable"] = _ref(state.stable, weight=1.0)
        doc["canary"] = _ref(state.canary, weight=1.0)
    elif state.previous is not None and state.previous.version == version:
        doc["stable"] = _ref(state.previous, weight=1.0)
    else:
        raise DeployTargetError(f"version {version} has no pod role in state r{state.revision}")
    return doc


def served_versions(state: st.DeploymentState) -> list[tuple[str, str]]:
    """(track, version) for each Service track with a model, stable first; shadow excluded."""
    out = []
    for track in SERVICE_TRACKS:
        ref = getattr(state, track)
        if ref is not None:
            out.append((track, _version_label(ref.version)))
    return out


def _meta(name: str, spec: ServerSpec, model: str, labels: Mapping[str, str], rev: int):
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": {
            "app.kubernetes.io/name": APP_NAME,
            "app.kubernetes.io/instance": dns_name(model),
            LABEL_MANAGED: MANAGED_BY,
            LABEL_MODEL: model,
            **labels,
        },
        "annotations": {ANN_REVISION: str(rev)},
    }


def _pod_selector(model: str, version: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": dns_name(model), LABEL_VERSION: version}


def version_objects(
    state: st.DeploymentState, version: str, spec: ServerSpec
) -> list[dict[str, Any]]:
    """ConfigMap, Deployment, HPA and PDB of one served version."""
    model, rev = state.model_name, state.revision
    base = f"{dns_name(model)}-v{version.lower()}"
    labels = {LABEL_VERSION: version}
    selector = _pod_selector(model, version)
    state_doc = pod_state(state, version)
    env = [
        {"name": "MLCICD_ENV", "value": "k8s"},
        {"name": "MLCICD_HOME", "value": HOME_MOUNT_PATH},
        {"name": "MLCICD_DEPLOYMENT_STATE_DIR", "value": STATE_MOUNT},
        *({"name": k, "value": v} for k, v in sorted(spec.extra_env.items())),
    ]
    container = {
        "name": "server",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        # --pipeline: a code location with several pipelines serves each one by name
        "args": ["serve", "--pipeline", model, "--host", "0.0.0.0", "--port", str(SERVER_PORT)],
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": env,
        "envFrom": [{"secretRef": {"name": s}} for s in spec.env_secrets],
        "resources": {
            "requests": {"cpu": spec.cpu_request, "memory": spec.memory_request},
            "limits": {"cpu": spec.cpu_limit, "memory": spec.memory_limit},
        },
        # /health: the process is alive; /ready: its models are loaded (docs/serving.md).
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        # Loading a model from MLflow can take a while; liveness waits for this.
        "startupProbe": {
            "httpGet": {"path": "/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "securityContext": {**CONTAINER_SECURITY_CONTEXT, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "home", "mountPath": HOME_MOUNT_PATH},
            {"name": "pod-state", "mountPath": STATE_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(base, spec, model, labels, rev),
        "spec": {
            # No "replicas": the HPA owns it (applying it would fight the autoscaler).
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 3,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": {
                        "app.kubernetes.io/name": APP_NAME,
                        LABEL_MODEL: model,
                        **selector,
                    },
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(SERVER_PORT),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": spec.service_account,
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": 30,  # the server flushes its log on SIGTERM
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS_USER,
                        "runAsGroup": RUN_AS_USER,
                        "fsGroup": RUN_AS_USER,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": {"matchLabels": selector},
                        }
                    ],
                    "containers": [container],
                    "volumes": [
                        {"name": "home", "persistentVolumeClaim": {"claimName": spec.home_claim}},
                        {"name": "pod-state", "configMap": {"name": f"{base}-state"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                },
            },
        },
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(f"{base}-state", spec, model, labels, rev),
        "data": {f"{model}.json": json.dumps(state_doc, indent=2, sort_keys=True)},
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(base, spec, model, labels, rev),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": base},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(base, spec, model, labels, rev),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    return [config_map, deployment, hpa, pdb]


def service_object(state: st.DeploymentState, track: str, spec: ServerSpec) -> dict[str, Any]:
    ref = getattr(state, track)
    model = state.model_name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(
            f"{dns_name(model)}-{track}",
            spec,
            model,
            {LABEL_TRACK: track},
            state.revision,
        ),
        "spec": {
            "type": "ClusterIP",
            # Blue-green: this selector is the switch.
            "selector": _pod_selector(model, _version_label(ref.version)),
            "ports": [
                {"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def route_weights(state: st.DeploymentState) -> dict[str, int]:
    """Integer HTTPRoute weights per track from the state's canary fraction."""
    canary = state.canary.weight if state.canary is not None else 0.0
    if not 0.0 <= canary <= 1.0:
        raise DeployTargetError(f"canary weight {canary} is not a fraction in [0, 1]")
    c = round(canary * ROUTE_WEIGHT_SCALE)
    weights = {"stable": ROUTE_WEIGHT_SCALE - c}
    if state.canary is not None:
        weights["canary"] = c
    return weights


def route_object(state: st.DeploymentState, spec: ServerSpec) -> dict[str, Any]:
    model = dns_name(state.model_name)
    parent: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": "Gateway"}
    parent["name"] = spec.gateway_name
    if spec.gateway_namespace:
        parent["namespace"] = spec.gateway_namespace
    route_spec: dict[str, Any] = {
        "parentRefs": [parent],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [
                    {
                        "group": "",
                        "kind": "Service",
                        "name": f"{model}-{track}",
                        "port": SERVICE_PORT,
                        "weight": weight,
                    }
                    for track, weight in route_weights(state).items()
                ],
            }
        ],
    }
    if spec.hostnames:
        route_spec["hostnames"] = list(spec.hostnames)
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": _meta(model, spec, state.model_name, {}, state.revision),
        "spec": route_spec,
    }


def render(state: st.DeploymentState, spec: ServerSpec) -> list[dict[str, Any]]:
    """Every object the cluster should hold for ``state``, in a safe apply order:
    new pods first, then the Services (the blue-green switch), then the route weights."""
    if state.stable is None:
        if state.canary is not None or state.shadow is not None:
            raise DeployTargetError("a canary or shadow needs a stable model to compare with")
        return []
    tracks = served_versions(state)
    objects: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _, version in tracks:
        if version not in seen:
            seen.add(version)
            objects += version_objects(state, version, spec)
    objects += [service_object(state, track, spec) for track, _ in tracks]
    objects.append(route_object(state, spec))
    return objects


# -- talking to the API server ---------------------------------------------------------
def _path(kind: str, namespace: str, name: str | None = None) -> str:
    api_version, plural = KINDS[kind]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    base = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{base}/{name}" if name else base


class K8sTarget(DeployTarget):
    """Serving on a cluster: ``apply`` server-side-applies :func:`render` and prunes the rest.

    ``api_client`` is a ``kubernetes.client.ApiClient``; by default one is built from
    ``$KUBECONFIG`` (or in-cluster config when running in a pod).
    """

    kind = "k8s"

    def __init__(
        self,
        model_name: str,
        state_path: Any,
        spec: ServerSpec,
        *,
        api_client: Any = None,
        check_pods: bool = True,
        dry_run: bool = False,
    ) -> None:
        super().__init__(model_name, state_path)
        dns_name(model_name)  # fail early on a name Kubernetes cannot carry
        self.spec = spec
        self._api = api_client
        self.check_pods = check_pods  # also ask pods (via the API proxy) what they serve
        self.dry_run = dry_run  # server validates and admits, persists nothing (dryRun=All)

    @classmethod
    def from_env(cls, home: Any, model_name: str, **kwargs: Any) -> K8sTarget:
        """The target the k8s environment uses: ``home`` is a ``Home``; spec from env."""
        return cls(model_name, home.deployment_state(model_name), ServerSpec.from_env(), **kwargs)

    # -- transport -------------------------------------------------------------------
    @property
    def api(self) -> Any:
        if self._api is None:
            import kubernetes

            if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
                kubernetes.config.load_incluster_config()
                self._api = kubernetes.client.ApiClient()
            else:
                self._api = kubernetes.config.new_client_from_config()
        return self._api

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        raw: bool = False,
    ) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            result = self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_types_map={},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=HTTP_TIMEOUT_S,
            )
        except ApiException as exc:
            if exc.status == 404 and method in ("GET", "DELETE"):
                return None
            raise DeployTargetError(
                f"{method} {path} failed: HTTP {exc.status} {str(exc.body)[:300]}"
            ) from exc
        except Exception as exc:  # connection refused, TLS, timeout: the cluster is unreachable
            raise DeployTargetError(f"{method} {path}: API server unreachable: {exc!r}") from exc
        if raw:
            return result
        data = result.data
        return json.loads(data) if data else {}

    def server_side_apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH with ``application/apply-patch+yaml``, our field manager, conflicts forced
        (this target owns these fields; a human's kubectl edit is overwritten, not merged)."""
        meta = obj["metadata"]
        return self._call(
            "PATCH",
            _path(obj["kind"], meta["namespace"], meta["name"]),
            body=obj,
            query=[
                ("fieldManager", FIELD_MANAGER),
                ("force", "true"),
                *([("dryRun", "All")] if self.dry_run else []),
            ],
            content_type=APPLY_CONTENT_TYPE,
        )

    def _list(self, kind: str) -> list[dict[str, Any]]:
        selector = f"{LABEL_MODEL}={self.model_name},{LABEL_MANAGED}={MANAGED_BY}"
        body = self._call(
            "GET", _path(kind, self.spec.namespace), query=[("labelSelector", selector)]
        )
        return list((body or {}).get("items") or [])

    def _delete(self, kind: str, name: str) -> None:
        self._call(
            "DELETE",
            _path(kind, self.spec.namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )

    # -- DeployTarget ----------------------------------------------------------------
    def apply(self, state: st.DeploymentState) -> None:
        """Apply every desired object (new pods, then Services, then route), then delete
        this model's managed objects that the state no longer names. Idempotent."""
        if state.model_name != self.model_name:
            raise DeployTargetError(f"state is for {state.model_name!r}, not {self.model_name!r}")
        desired = render(state, self.spec)
        for obj in desired:
            self.server_side_apply(obj)
        if self.dry_run:
            return
        keep = {(o["kind"], o["metadata"]["name"]) for o in desired}
        # Prune after the switch: nothing routes to a version by the time its pods go.
        for kind in ("HTTPRoute", "Service", *VERSION_KINDS):
            for item in self._list(kind):
                name = item.get("metadata", {}).get("name")
                if name and (kind, name) not in keep:
                    self._delete(kind, name)

    def _deployment_ready(self, name: str) -> bool:
        dep = self._call("GET", _path("Deployment", self.spec.namespace, name))
        if not dep:
            return False
        meta, status = dep.get("metadata", {}), dep.get("status") or {}
        wanted = int(status.get("replicas") or 0)
        return (
            int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 1)
            and wanted >= 1
            and int(status.get("updatedReplicas") or 0) >= wanted
            and int(status.get("availableReplicas") or 0) >= wanted
        )

    def _proxy(self, service: str, method: str, path: str, **kwargs: Any) -> Any:
        """The API server's Service proxy: reach a track without in-cluster networking."""
        url = (
            f"/api/v1/namespaces/{self.spec.namespace}/services/"
            f"{service}:{SERVICE_PORT}/proxy/{path.lstrip('/')}"
        )
        return self._call(method, url, raw=True, **kwargs)

    def _pod_revision(self, service: str) -> int | None:
        try:
            resp = self._proxy(service, "GET", "deployment")
            body = json.loads(resp.data)
        except (DeployTargetError, ValueError):
            return None
        for key in ("served_revision", "loaded_revision", "revision"):
            if isinstance(body, dict) and key in body:
                try:
                    return int(body[key])
                except (TypeError, ValueError):
                    return None
        return None

    def serving_report(self, revision: int) -> dict[str, Any]:
        """What is and is not serving ``revision`` yet (for waits and error messages)."""
        state = self.read_state()
        model = dns_name(self.model_name)
        report: dict[str, Any] = {"revision": revision, "pending": []}
        if state.revision < revision:
            report["pending"].append(f"state file is at r{state.revision}")
            return report
        for track, version in served_versions(state):
            dep = f"{model}-v{version.lower()}"
            if not self._deployment_ready(dep):
                report["pending"].append(f"deployment {dep} not available")
            svc = self._call("GET", _path("Service", self.spec.namespace, f"{model}-{track}"))
            got = int(
                ((svc or {}).get("metadata", {}).get("annotations") or {}).get(ANN_REVISION, -1)
            )
            if got < revision:
                report["pending"].append(f"service {model}-{track} at r{got}")
            elif self.check_pods:
                served = self._pod_revision(f"{model}-{track}")
                if served is None or served < revision:
                    report["pending"].append(f"pods behind {model}-{track} serve r{served}")
        if state.stable is not None:
            route = self._call("GET", _path("HTTPRoute", self.spec.namespace, model))
            ann = ((route or {}).get("metadata", {}).get("annotations") or {}).get(ANN_REVISION)
            if int(ann or -1) < revision:
                report["pending"].append(f"httproute {model} at r{ann}")
        return report

    def wait_until_serving(
        self,
        revision: int,
        timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> bool:
        """True once every track's Deployment is available, its Service and the route carry
        ``revision`` (or later) and, with ``check_pods``, the pods report it on /deployment."""
        deadline = clock() + timeout_s
        while True:
            if not self.serving_report(revision)["pending"]:
                return True
            if clock() >= deadline:
                return False
            sleep(POLL_S)

    def smoke(self, track: str, rows: pd.DataFrame) -> np.ndarray:
        """Score ``rows`` through the track's Service (API server proxy) and check that the
        version answering is the one the state puts on that track."""
        check_track(track)
        if track == "shadow":
            raise DeployTargetError(
                "shadow is scored in-process by the stable pods on Kubernetes; "
                "smoke the shadow version before it is shadowed, as a canary at weight 0"
            )
        ref = getattr(self.read_state(), track)
        if ref is None:
            raise DeployTargetError(f"nothing deployed on track {track!r}")
        if len(rows) == 0:
            raise DeployTargetError("smoke test needs at least one row")
        service = f"{dns_name(self.model_name)}-{track}"
        payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        resp = self._proxy(service, "POST", "invocations", body=payload)
        served = resp.getheader("X-Model-Version")
        if served is not None and served != ref.version:
            raise DeployTargetError(
                f"smoke on {track} answered by version {served}, expected {ref.version}"
            )
        from mlcicd_dagster.serving.output import positive_scores

        try:
            preds = positive_scores(json.loads(resp.data)["predictions"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DeployTargetError(f"smoke on {track}: bad answer {resp.data[:300]!r}") from exc
        return check_scores(preds, len(rows), f"version {ref.version} on {track} (k8s)")

    def describe(self) -> dict[str, Any]:
        state = self.read_state()
        model = dns_name(self.model_name)
        return {
            "kind": self.kind,
            "model_name": self.model_name,
            "namespace": self.spec.namespace,
            "route": f"httproute/{model}",
            "services": {t: f"{model}-{t}" for t, _ in served_versions(state)},
            "deployments": sorted({f"{model}-v{v.lower()}" for _, v in served_versions(state)}),
            "image": self.spec.image,
            "revision": state.revision,
            "serving": state.serving_versions(),
            "weights": state.weights(),
            "route_weights": route_weights(state) if state.stable else {},
        }


def render_yaml(state: st.DeploymentState, spec: ServerSpec) -> str:
    """Multi-document YAML of :func:`render` (``deploy/k8s/model-server/examples``)."""
    import yaml

    return "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in render(state, spec))


def example_states(model_name: str = "credit_default") -> dict[str, st.DeploymentState]:
    """The states rendered into ``deploy/k8s/model-server/examples`` (and tested there)."""

    def ref(v: str, weight: float = 1.0) -> st.ModelRef:
        return st.ModelRef(version=v, model_uri=f"models:/{model_name}/{v}", weight=weight)

    return {
        "stable": st.DeploymentState(
            model_name=model_name,
            revision=1,
            strategy="blue_green",
            phase="promoted",
            stable=ref("1"),
        ),
        "canary": st.DeploymentState(
            model_name=model_name,
            revision=7,
            strategy="canary",
            phase="canary",
            stable=ref("2"),
            canary=ref("3", 0.25),
            previous=ref("1"),
        ),
    }


EXAMPLE_IMAGE = "REGISTRY/mlcicd-server:0.1.0"


def main(argv: list[str] | None = None) -> int:
    """``python -m mlcicd_dagster.rollout.k8s_target OUT_DIR``: write the example renders."""
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m mlcicd_dagster.rollout.k8s_target OUT_DIR", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    spec = ServerSpec(image=EXAMPLE_IMAGE, hostnames=("models.example.com",))
    for name, state in example_states().items():
        header = (
            f"# Rendered by `python -m mlcicd_dagster.rollout.k8s_target {args[0]}` for the\n"
            f"# example state '{name}' ({state.serving_versions()}). Do not edit: the deploy\n"
            "# target applies these objects itself; tests check this file matches the code.\n"
        )
        (out / f"{name}.yaml").write_text(header + render_yaml(state, spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
