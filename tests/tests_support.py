"""Small helpers shared by test folders (importable as ``tests_support``)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "assets" / "credit_default" / "data"


def scoped_environ(env: Mapping[str, str]) -> AbstractContextManager[None]:
    """``env`` set for the block, with the embedded MLflow store (``MLFLOW_TRACKING_URI``
    unset); on exit, a failed setup included, every variable it touched is as before."""
    from mlcicd_dagster.platform.environ import scoped_environ as scoped

    return scoped(env, unset=["MLFLOW_TRACKING_URI"], restore=["DAGSTER_HOME"])
