"""Every ``MLCICD_*`` environment variable, declared and read in one place.

Library code reads a variable with :func:`get` (or :func:`get_float`/:func:`get_int`),
never ``os.environ`` directly, so this table is the complete list (a test holds the
code to it) and a malformed value fails with a message naming the variable. Functions
that build configuration for another process take an ``env`` mapping (default: this
process's environment).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from mlcicd_dagster.errors import ConfigError


@dataclass(frozen=True)
class Variable:
    name: str
    default: str | None
    doc: str


_TABLE = (
    # where state lives and which environment
    Variable("MLCICD_HOME", None, "all state of the embedded default (default: ./.mlcicd)"),
    Variable("MLCICD_ENV", "local", "local | k8s: executor and resources"),
    Variable(
        "MLCICD_CACHE_DIR",
        None,
        "load-time checks remembered by their files' bytes (default: ~/.cache/mlcicd)",
    ),
    Variable("MLCICD_DEPLOYMENT_STATE_DIR", None, "deployment state dir (server pods on k8s)"),
    Variable("MLCICD_ALERT_WEBHOOK", None, "Slack-compatible URL every alert is posted to"),
    Variable("MLCICD_MLFLOW_UI_URL", None, "MLflow UI links point here (mlcicd ui sets it)"),
    Variable("MLCICD_FEEDBACK_TOKEN", None, "when set, /feedback needs 'Authorization: Bearer'"),
    Variable("MLCICD_FAULT", None, "fault tests only: the process dies at this phase"),
    Variable("MLCICD_CODE_VERSION", None, "code version recorded on MLflow runs (e.g. a git SHA)"),
    # timings (the demo shortens them)
    Variable("MLCICD_LANDING_SETTLE_SECONDS", None, "a landed file must be this old to be read"),
    Variable("MLCICD_MONITORING_WINDOW_MINUTES", None, "overrides monitoring.window_minutes"),
    Variable("MLCICD_CANARY_CHECK_INTERVAL_S", None, "seconds between canary analyses"),
    Variable("MLCICD_CANARY_STEP_MIN_DURATION_S", None, "shortest canary step"),
    Variable("MLCICD_CANARY_STEP_MIN_SAMPLES", None, "fewest labelled requests per step"),
    Variable("MLCICD_CANARY_MAX_DURATION_S", None, "overrides rollout.max_duration_s"),
    Variable("MLCICD_CANARY_STEPS", None, "e.g. '0.3,0.6': traffic steps instead of the spec's"),
    Variable("MLCICD_TRAINING_MAX_WAIT_S", "600", "longest a new batch waits for other data gates"),
    # Kubernetes (MLCICD_ENV=k8s): steps, storage, model server
    Variable("MLCICD_IMAGE", None, "step image (default: the code location's image)"),
    Variable("MLCICD_IMAGE_PULL_POLICY", "IfNotPresent", "pull policy of step pods"),
    Variable("MLCICD_K8S_NAMESPACE", "mlcicd", "namespace of step Jobs"),
    Variable("MLCICD_K8S_SERVICE_ACCOUNT", None, "service account of step pods"),
    Variable("MLCICD_MAX_CONCURRENT_STEPS", "8", "pods per run at once"),
    Variable("MLCICD_HOME_CLAIM", "mlcicd-home", "ReadWriteMany claim mounted as MLCICD_HOME"),
    Variable("MLCICD_OBJECT_STORE_URL", None, "object store for artifacts (s3://...)"),
    Variable("MLCICD_CPU_REQUEST", None, "CPU request of a step pod"),
    Variable("MLCICD_CPU_LIMIT", None, "CPU limit of a step pod"),
    Variable("MLCICD_MEMORY_REQUEST", None, "memory request of a step pod"),
    Variable("MLCICD_MEMORY_LIMIT", None, "memory limit of a step pod"),
    Variable("MLCICD_GPU_COUNT", None, "GPUs of a torch training step"),
    Variable("MLCICD_GPU_NODE_LABEL", None, "node label GPU steps select"),
    Variable("MLCICD_GPU_NODE_POOL", None, "node pool GPU steps select"),
    Variable("MLCICD_GPU_TAINT_KEY", None, "taint GPU steps tolerate"),
    Variable("MLCICD_GPU_CPU_REQUEST", None, "CPU request of a GPU step"),
    Variable("MLCICD_GPU_MEMORY_REQUEST", None, "memory request of a GPU step"),
    Variable("MLCICD_GPU_MEMORY_LIMIT", None, "memory limit of a GPU step"),
    Variable("MLCICD_SERVER_IMAGE", None, "model server image"),
    Variable("MLCICD_SERVER_HOSTNAMES", None, "hostnames of the model server's route"),
    Variable("MLCICD_SERVER_MIN_REPLICAS", None, "model server replicas, at least"),
    Variable("MLCICD_SERVER_MAX_REPLICAS", None, "model server replicas, at most"),
    Variable("MLCICD_GATEWAY_NAME", None, "Gateway API gateway the route attaches to"),
    Variable("MLCICD_GATEWAY_NAMESPACE", None, "namespace of that gateway"),
)
VARIABLES: dict[str, Variable] = {v.name: v for v in _TABLE}


def _declared(name: str) -> Variable:
    try:
        return VARIABLES[name]
    except KeyError:
        raise KeyError(f"{name} is not declared in mlcicd_dagster.settings") from None


def get(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The value of ``name`` (blank counts as unset), else its declared default."""
    var = _declared(name)
    raw = (os.environ if env is None else env).get(name, "")
    raw = raw.strip() if isinstance(raw, str) else raw
    return raw or var.default


def get_float(name: str, default: float, env: Mapping[str, str] | None = None) -> float:
    raw = get(name, env)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def get_int(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    raw = get(name, env)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
