"""Deploy targets as Dagster resources, one per environment (``MLCICD_ENV``).

The environments table (``platform.environments``) gives each environment its
``deploy_target`` resource beside ``mlcicd``: the embedded local server for ``local``,
Kubernetes Deployments and Services for ``k8s``. The deployment asset's ops and the
rollout-controller sensor ask for it by name (``deploy_target``) and get the pipeline's
target from it, so which target a run drives is the code location's resource binding,
visible in the UI, not a string the code compares. A resource of its own, not nested
in ``mlcicd``: ``dg.build_sensor_context(resources=defs.resources)`` then needs no
``with`` block.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from mlcicd_dagster.platform.resources import MlcicdResource


class DeployTargetResource(dg.ConfigurableResource):
    """Where a pipeline's models are deployed; subclasses say how."""

    def target(self, spec: Any, mlcicd: MlcicdResource) -> Any:
        """The pipeline's target (``rollout.target.Target``): its state and tracks."""
        raise NotImplementedError


class LocalDeployTarget(DeployTargetResource):
    """The model server on this machine (``mlcicd serve`` reads the state file)."""

    def target(self, spec: Any, mlcicd: MlcicdResource) -> Any:
        from mlcicd_dagster.rollout.local_target import LocalTarget

        return LocalTarget(mlcicd.home, spec.model_name, tracking_uri=mlcicd.mlflow_uri)


class K8sDeployTarget(DeployTargetResource):
    """Kubernetes: one Deployment per track, the Service's weights (namespace, image and
    API access from the environment: see docs/deploy.md)."""

    def target(self, spec: Any, mlcicd: MlcicdResource) -> Any:
        from mlcicd_dagster.rollout.k8s_target import K8sTarget

        return K8sTarget.from_env(mlcicd.home, spec.model_name)
