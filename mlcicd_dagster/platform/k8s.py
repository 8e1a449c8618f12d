"""Compute on Kubernetes: the one configurable place for GPUs, node pools and pod sizes.

Why one place: a torch training asset, a scikit-learn asset and the executor that
launches them must agree on the GPU node pool label, its taint and the secret
names, and the cluster operator must be able to change them without editing
assets. Everything here is read from the environment (``MLCICD_*``) through
:class:`ComputeProfile` and turned into the two things dagster-k8s reads:

* per-step ``op_tags={"dagster-k8s/config": ...}`` (:func:`op_tags_for`), which the
  ``k8s_job_executor`` merges into each step's Job (``K8sRunLauncher`` alone reads
  only run tags, so GPU steps need the executor);
* the executor itself (:func:`k8s_executor`): one pod per step, the job image, the
  env secrets with the PostgreSQL / MLflow / object-store credentials.

``dagster_k8s`` and ``kubernetes`` are imported inside functions only: every
Dagster step process imports the code location, which imports this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import dagster as dg

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource name

# The GPU node group in deploy/terraform carries this label and this taint; pods
# that do not tolerate the taint never land on (expensive) GPU nodes.
DEFAULT_GPU_NODE_LABEL = "mlcicd.io/node-pool"
DEFAULT_GPU_NODE_POOL = "gpu"
DEFAULT_GPU_TAINT_KEY = GPU_RESOURCE
DEFAULT_NAMESPACE = "mlcicd"
DEFAULT_SERVICE_ACCOUNT = "mlcicd-runner"
# Home on Kubernetes: steps run in separate pods and pass data through the lake (paths),
# so MLCICD_HOME must be one shared filesystem: a ReadWriteMany claim (EFS in
# deploy/terraform) mounted at the same path in every step pod and the code server.
DEFAULT_HOME_CLAIM = "mlcicd-home"
HOME_MOUNT_PATH = "/var/lib/mlcicd"

# Secret and ConfigMap names shared by the Helm values, the executor and docs/deploy.md.
SECRET_POSTGRES = "mlcicd-postgres"  # DAGSTER_PG_HOST/_PORT/_USER/_PASSWORD/_DB
SECRET_MLFLOW = "mlcicd-mlflow"  # MLFLOW_TRACKING_URI (+ _USERNAME/_PASSWORD when used)
SECRET_OBJECT_STORE = "mlcicd-object-store"  # MLCICD_OBJECT_STORE_URL, MLFLOW_S3_ENDPOINT_URL
SECRET_FEEDBACK = "mlcicd-feedback"  # MLCICD_FEEDBACK_TOKEN: who may post labels (model servers)
CONFIGMAP_ENV = "mlcicd-env"  # non-secret settings (MLCICD_GPU_*, log level, ...)
ENV_SECRETS = (SECRET_POSTGRES, SECRET_MLFLOW, SECRET_OBJECT_STORE)

# Steps run as this user (the Dockerfiles create it) with nothing they do not need.
RUN_AS_USER = 10001
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}

# Kubernetes resource quantity, e.g. "500m", "2", "1.5", "4Gi", "512M".
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)

Kind = Literal["gpu", "cpu"]

# Env var -> ComputeProfile field. One table so docs/deploy.md and from_env cannot disagree.
PROFILE_ENV: Mapping[str, str] = {
    "MLCICD_GPU_COUNT": "gpu_count",
    "MLCICD_GPU_NODE_LABEL": "gpu_node_label",
    "MLCICD_GPU_NODE_POOL": "gpu_node_pool",
    "MLCICD_GPU_TAINT_KEY": "gpu_taint_key",
    "MLCICD_GPU_CPU_REQUEST": "gpu_cpu_request",
    "MLCICD_GPU_MEMORY_REQUEST": "gpu_memory_request",
    "MLCICD_GPU_MEMORY_LIMIT": "gpu_memory_limit",
    "MLCICD_CPU_REQUEST": "cpu_request",
    "MLCICD_CPU_LIMIT": "cpu_limit",
    "MLCICD_MEMORY_REQUEST": "memory_request",
    "MLCICD_MEMORY_LIMIT": "memory_limit",
}


class ComputeConfigError(ValueError):
    """A compute setting (usually an ``MLCICD_*`` variable) has a value Kubernetes rejects."""


def _quantity(name: str, value: str) -> str:
    value = str(value).strip()
    if not _QUANTITY.match(value):
        raise ComputeConfigError(
            f"{name}={value!r} is not a Kubernetes resource quantity (e.g. '500m', '2', '4Gi')"
        )
    return value


@dataclass(frozen=True)
class ComputeProfile:
    """Pod sizes and placement for the two kinds of step. Defaults suit a small EKS setup."""

    gpu_count: int = 1
    gpu_node_label: str = DEFAULT_GPU_NODE_LABEL
    gpu_node_pool: str = DEFAULT_GPU_NODE_POOL
    gpu_taint_key: str = DEFAULT_GPU_TAINT_KEY
    gpu_cpu_request: str = "4"
    gpu_memory_request: str = "16Gi"
    gpu_memory_limit: str = "32Gi"
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "4Gi"
    extra_gpu_tolerations: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if isinstance(self.gpu_count, bool) or not isinstance(self.gpu_count, int):
            raise ComputeConfigError(f"gpu_count must be an integer, got {self.gpu_count!r}")
        if self.gpu_count < 0:
            raise ComputeConfigError(f"gpu_count must be >= 0, got {self.gpu_count}")
        if not _LABEL_KEY.match(self.gpu_node_label):
            raise ComputeConfigError(f"gpu_node_label {self.gpu_node_label!r} is not a label key")
        if not self.gpu_node_pool or not _LABEL_VALUE.match(self.gpu_node_pool):
            raise ComputeConfigError(
                f"gpu_node_pool {self.gpu_node_pool!r} is not a Kubernetes label value"
            )
        if not _LABEL_KEY.match(self.gpu_taint_key):
            raise ComputeConfigError(f"gpu_taint_key {self.gpu_taint_key!r} is not a taint key")
        for name in (
            "gpu_cpu_request",
            "gpu_memory_request",
            "gpu_memory_limit",
            "cpu_request",
            "cpu_limit",
            "memory_request",
            "memory_limit",
        ):
            _quantity(name, getattr(self, name))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ComputeProfile:
        """The defaults overridden by every ``MLCICD_GPU_*`` / ``MLCICD_CPU_*`` / ``..._MEMORY_*``
        variable that is set (see ``PROFILE_ENV``). A bad value raises naming the variable."""
        env = os.environ if env is None else env
        base = cls()
        changes: dict[str, Any] = {}
        for var, attr in PROFILE_ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            if attr == "gpu_count":
                try:
                    changes[attr] = int(raw)
                except ValueError:
                    raise ComputeConfigError(f"{var}={raw!r} is not an integer") from None
            else:
                changes[attr] = raw.strip()
        try:
            return replace(base, **changes)
        except ComputeConfigError as exc:
            raise ComputeConfigError(f"{exc} (from the environment)") from None

    # -- what the pods get ------------------------------------------------------
    def gpu_tolerations(self) -> list[dict[str, Any]]:
        return [
            {"key": self.gpu_taint_key, "operator": "Exists", "effect": "NoSchedule"},
            *[dict(t) for t in self.extra_gpu_tolerations],
        ]

    def gpu_node_selector(self) -> dict[str, str]:
        return {self.gpu_node_label: self.gpu_node_pool}

    def resources(self, kind: Kind) -> dict[str, dict[str, str]]:
        """Container ``resources`` for a step of ``kind`` (GPU limits only where GPUs are asked)."""
        if kind == "gpu" and self.gpu_count > 0:
            gpus = str(self.gpu_count)
            # Extended resources: request must equal limit; setting the limit is enough
            # but both are spelled out so the Job spec says exactly what is reserved.
            return {
                "requests": {
                    "cpu": self.gpu_cpu_request,
                    "memory": self.gpu_memory_request,
                    GPU_RESOURCE: gpus,
                },
                "limits": {"memory": self.gpu_memory_limit, GPU_RESOURCE: gpus},
            }
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


def k8s_config_for(kind: Kind, profile: ComputeProfile | None = None) -> dict[str, Any]:
    """The ``dagster-k8s/config`` value (UserDefinedDagsterK8sConfig shape) for one step kind.

    ``gpu`` with ``gpu_count == 0`` deliberately yields the CPU config: a cluster with no
    GPU pool runs the torch trainer on CPU (it picks its device at run time) instead of
    leaving the pod Pending forever.
    """
    if kind not in ("gpu", "cpu"):
        raise ComputeConfigError(f"kind must be 'gpu' or 'cpu', got {kind!r}")
    profile = profile or ComputeProfile.from_env()
    config: dict[str, Any] = {"container_config": {"resources": profile.resources(kind)}}
    if kind == "gpu" and profile.gpu_count > 0:
        config["pod_spec_config"] = {
            "node_selector": profile.gpu_node_selector(),
            "tolerations": profile.gpu_tolerations(),
        }
    return config


def op_tags_for(kind: Kind, profile: ComputeProfile | None = None) -> dict[str, Any]:
    """``op_tags`` for an asset: ``@dg.asset(op_tags=op_tags_for("gpu"))``.

    Harmless under the local executors (they ignore the tag); under ``k8s_job_executor``
    the step's Job gets the resources, node selector and tolerations.
    """
    return {K8S_CONFIG_TAG: k8s_config_for(kind, profile)}


# -- the executor ---------------------------------------------------------------------
def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(str(raw))
    except ValueError:
        raise ComputeConfigError(f"{name}={raw!r} is not an integer") from None
    if value < 1:
        raise ComputeConfigError(f"{name} must be >= 1, got {value}")
    return value


def k8s_executor_config(
    env: Mapping[str, str] | None = None, profile: ComputeProfile | None = None
) -> dict[str, Any]:
    """Config for ``dagster_k8s.k8s_job_executor`` (plain dict, validated by Dagster).

    Environment:
      ``MLCICD_IMAGE``               step image; unset = the code location's image (Helm
                                     ``dagster-user-deployments`` sets it, which is the
                                     usual case)
      ``MLCICD_K8S_NAMESPACE``       namespace of step Jobs (default ``mlcicd``)
      ``MLCICD_K8S_SERVICE_ACCOUNT`` step pods' service account (IRSA for S3 lives here)
      ``MLCICD_MAX_CONCURRENT_STEPS`` pods per run at once (default 8)
      ``MLCICD_HOME_CLAIM``          ReadWriteMany PVC mounted as MLCICD_HOME (``mlcicd-home``)
    """
    env = os.environ if env is None else env
    profile = profile or ComputeProfile.from_env(env)
    claim = env.get("MLCICD_HOME_CLAIM") or DEFAULT_HOME_CLAIM
    config: dict[str, Any] = {
        "job_namespace": env.get("MLCICD_K8S_NAMESPACE") or DEFAULT_NAMESPACE,
        "service_account_name": env.get("MLCICD_K8S_SERVICE_ACCOUNT") or DEFAULT_SERVICE_ACCOUNT,
        "image_pull_policy": env.get("MLCICD_IMAGE_PULL_POLICY") or "IfNotPresent",
        "env_secrets": list(ENV_SECRETS),
        "env_config_maps": [CONFIGMAP_ENV],
        # Forwarded from the run pod (Helm puts them there) so every step agrees on them.
        "env_vars": ["MLCICD_ENV=k8s", f"MLCICD_HOME={HOME_MOUNT_PATH}"],
        "volumes": [
            {"name": "mlcicd-home", "persistentVolumeClaim": {"claimName": claim}},
            {"name": "tmp", "emptyDir": {}},
        ],
        "volume_mounts": [
            {"name": "mlcicd-home", "mountPath": HOME_MOUNT_PATH},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "max_concurrent": _int_env(env, "MLCICD_MAX_CONCURRENT_STEPS", 8),
        "security_context": dict(CONTAINER_SECURITY_CONTEXT),
        # Every step without its own op_tags gets the CPU profile; GPU op_tags deep-merge
        # over it (dagster-k8s merge_behavior DEEP), so GPU steps keep the security context.
        "step_k8s_config": {
            **k8s_config_for("cpu", profile),
            "pod_spec_config": {
                "security_context": {"runAsNonRoot": True, "fsGroup": RUN_AS_USER},
            },
        },
    }
    image = env.get("MLCICD_IMAGE")
    if image:
        config["job_image"] = image
    return config


def k8s_executor(
    env: Mapping[str, str] | None = None, profile: ComputeProfile | None = None
) -> dg.ExecutorDefinition:
    """``k8s_job_executor`` configured from the environment: one Kubernetes Job per step."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(
        k8s_executor_config(env, profile), name="mlcicd_k8s_executor"
    )
