"""One small table: which executor and resources each ``MLCICD_ENV`` uses.

``local``  the embedded default: one process per run (``in_process_executor``)
           because per-step processes pay the heavy imports (torch, mlflow, GE,
           sklearn) once per step: 4 trivial steps take ~12 s multiprocess vs ~1 s
           in process on this hardware. Sensors run by default.
``k8s``    one pod per step (``k8s_job_executor``) so GPU op_tags reach the pods;
           storage on PostgreSQL and MLflow at a tracking server come from the
           Helm values and environment (see deploy/ and docs/deploy.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from mlcicd_dagster import settings
from mlcicd_dagster.platform.deploy_targets import K8sDeployTarget, LocalDeployTarget
from mlcicd_dagster.platform.resources import MlcicdResource

ENV_VAR = "MLCICD_ENV"
DEFAULT_ENV = "local"


@dataclass(frozen=True)
class Environment:
    name: str
    executor: Callable[[], dg.ExecutorDefinition]
    resources: Callable[[], dict[str, Any]]
    sensors_running: bool


def _local_resources() -> dict[str, Any]:
    return {
        "mlcicd": MlcicdResource(
            home_dir=dg.EnvVar("MLCICD_HOME"),
            tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
        ),
        "deploy_target": LocalDeployTarget(),
    }


def _k8s_resources() -> dict[str, Any]:
    return {
        "mlcicd": MlcicdResource(
            home_dir=dg.EnvVar("MLCICD_HOME"),
            tracking_uri=dg.EnvVar("MLFLOW_TRACKING_URI"),
            colocated_steps=False,  # one pod per step
        ),
        "deploy_target": K8sDeployTarget(),
    }


def _k8s_executor() -> dg.ExecutorDefinition:
    # Imported here: dagster_k8s costs ~1 s of import and the local env never needs it.
    from mlcicd_dagster.platform.k8s import k8s_executor

    return k8s_executor()


ENVIRONMENTS: dict[str, Environment] = {
    "local": Environment(
        name="local",
        executor=lambda: dg.in_process_executor,
        resources=_local_resources,
        sensors_running=True,
    ),
    "k8s": Environment(
        name="k8s",
        executor=_k8s_executor,
        resources=_k8s_resources,
        sensors_running=True,
    ),
}


def current_environment() -> Environment:
    """The environment named by ``MLCICD_ENV`` (default ``local``); unknown names fail loudly."""
    name = settings.get(ENV_VAR) or DEFAULT_ENV
    try:
        return ENVIRONMENTS[name]
    except KeyError:
        raise ValueError(
            f"{ENV_VAR}={name!r} is not a known environment; choose one of {sorted(ENVIRONMENTS)}"
        ) from None
