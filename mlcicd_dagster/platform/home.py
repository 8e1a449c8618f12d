"""The on-disk layout of one mlcicd installation (``MLCICD_HOME``).

Everything the embedded default keeps lives under one folder so that deleting it
resets the system. Every other module asks this class for a path instead of
joining strings of its own, so the layout is written down exactly once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlcicd_dagster import settings

HOME_ENV = "MLCICD_HOME"
DEFAULT_HOME_NAME = ".mlcicd"
DEPLOYMENT_STATE_DIR_ENV = "MLCICD_DEPLOYMENT_STATE_DIR"  # server pods on Kubernetes only


@dataclass(frozen=True)
class Home:
    """Paths of one installation. Creating a ``Home`` touches nothing; ``ensure`` does."""

    root: Path

    @classmethod
    def from_env(cls) -> Home:
        """``$MLCICD_HOME``, else ``.mlcicd/`` in the current directory (the repo root)."""
        raw = settings.get(HOME_ENV)
        root = Path(raw) if raw else Path.cwd() / DEFAULT_HOME_NAME
        return cls(root.expanduser().resolve())

    # -- data ---------------------------------------------------------------
    def landing(self, dataset: str) -> Path:
        """Users drop batch files here; the system never edits or deletes them."""
        return self.root / "landing" / dataset

    def quarantine(self, dataset: str) -> Path:
        """Byte-identical copies of rejected batches, each with a ``.reason.json``."""
        return self.root / "quarantine" / dataset

    def staging(self, dataset: str) -> Path:
        """Parsed landed batches awaiting their gate: never part of the lake."""
        return self.root / "staging" / dataset

    def lake(self, dataset: str) -> Path:
        """Parquet data lake: validated batches and the training set."""
        return self.root / "lake" / dataset

    # -- models -------------------------------------------------------------
    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI`` when set (it wins), else the embedded SQLite store."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.mlflow_db}"

    # -- serving ------------------------------------------------------------
    def predictions(self, model_name: str) -> Path:
        """Prediction log: Parquet parts written by the model server."""
        return self.root / "predictions" / model_name

    def feedback(self, model_name: str) -> Path:
        """Feedback labels (request id -> label): Parquet parts written by the server."""
        return self.root / "feedback" / model_name

    def deployment_state(self, model_name: str) -> Path:
        """The deployment state file the server follows (see ``rollout.state``).

        ``MLCICD_DEPLOYMENT_STATE_DIR``, when set, holds it instead: a model server pod on
        Kubernetes shares the home (logs) but follows its own per-version state, mounted
        from a ConfigMap by ``rollout.k8s_target``. Unset everywhere else.
        """
        override = settings.get(DEPLOYMENT_STATE_DIR_ENV)
        if override:
            return Path(override) / f"{model_name}.json"
        return self.root / "deployment" / f"{model_name}.json"

    @property
    def server_file(self) -> Path:
        """Where a running local model server writes its address (host, port, pid)."""
        return self.root / "deployment" / "server.json"

    # -- platform -----------------------------------------------------------
    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def alerts(self) -> Path:
        return self.root / "alerts.jsonl"

    def lease(self, name: str) -> Path:
        """A lease lock file (``platform.lease``): one writer of deployments, one runner
        of each sensor request, however many processes (daemon, cycles) run."""
        return self.root / "locks" / f"{name}.lease"

    @property
    def monitoring(self) -> Path:
        """Monitoring results and retraining-policy state."""
        return self.root / "monitoring"

    def ensure(self, *datasets: str) -> Home:
        """Create the folders (idempotent) and return self."""
        for path in (
            self.mlflow_artifacts,
            self.dagster_home,
            self.root / "deployment",
            self.monitoring,
        ):
            path.mkdir(parents=True, exist_ok=True)
        for ds in datasets:
            for path in (self.landing(ds), self.quarantine(ds), self.lake(ds)):
                path.mkdir(parents=True, exist_ok=True)
        return self
