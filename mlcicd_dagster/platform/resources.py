"""Dagster resources: the one object every asset asks for paths and services.

Resources are built from ``dg.EnvVar`` in the environments table, so the same
asset code reads an embedded home on a laptop and shared services on a cluster.
"""

from __future__ import annotations

import os
from functools import cached_property

import dagster as dg

from mlcicd_dagster.platform.home import Home


class MlcicdResource(dg.ConfigurableResource):
    """Where this installation keeps its state and which MLflow it talks to.

    ``tracking_uri`` empty means: ``MLFLOW_TRACKING_URI`` if set, else the embedded
    SQLite store under the home (see ``Home.tracking_uri``).
    """

    home_dir: str
    tracking_uri: str = ""
    # The steps of a run share one process (in_process_executor): work can be started
    # early for a later step, e.g. the fresh interpreter infra validation needs.
    colocated_steps: bool = True

    @cached_property
    def home(self) -> Home:
        return Home(root=_resolve(self.home_dir))

    @property
    def mlflow_uri(self) -> str:
        return self.tracking_uri or self.home.tracking_uri

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """A run executed here names its process in its tags (``mlcicd/pid``, ``mlcicd/host``)
        unless its launcher did (``mlcicd cycle``): a run the daemon launched whose worker is
        killed is then found by the orphaned-runs sensor, failed and redone (the default
        run launcher gives Dagster's run monitoring no way to see a dead worker). Only when
        the steps share the run's process: a step pod's own process is not the run's."""
        run, instance = context.dagster_run, context.instance
        if not self.colocated_steps or run is None or instance is None:
            return
        from mlcicd_dagster.pipeline.orphans import PID_TAG, process_tags

        if PID_TAG not in run.tags:
            instance.add_run_tags(run.run_id, process_tags())

    def setup_mlflow(self) -> str:
        """Point the MLflow client at this installation's store; returns the URI."""
        import mlflow

        from mlcicd_dagster.platform.relocation import claim_embedded_store

        if not self.tracking_uri:  # the embedded store of a copied home: make it its own
            claim_embedded_store(self.home)
        uri = self.mlflow_uri
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        os.environ.setdefault("MLFLOW_TRACKING_URI", uri)
        return uri


def _resolve(raw: str):
    from pathlib import Path

    return Path(raw).expanduser().resolve()
