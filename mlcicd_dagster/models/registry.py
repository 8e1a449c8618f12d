"""Thin helpers over the MLflow model registry: aliases, version tags, look-ups.

Aliases replace stages (MLflow 3): ``champion`` is the version serving stable
traffic, ``challenger`` the one under canary. The deployment state and the
aliases must agree; the rollout code moves both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
FINGERPRINT_TAG = "mlcicd.fingerprint"
"""Version tag holding the training fingerprint (data + code + params + libraries)."""


def client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def get_alias(tracking_uri: str, model_name: str, alias: str) -> str | None:
    """The version an alias points to, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client(tracking_uri).get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def set_alias(tracking_uri: str, model_name: str, alias: str, version: str | int) -> None:
    client(tracking_uri).set_registered_model_alias(model_name, alias, str(version))


def delete_alias(tracking_uri: str, model_name: str, alias: str) -> None:
    """Remove an alias; a missing alias is not an error (idempotent)."""
    from mlflow.exceptions import MlflowException

    try:
        client(tracking_uri).delete_registered_model_alias(model_name, alias)
    except MlflowException:
        pass


def set_version_tags(
    tracking_uri: str, model_name: str, version: str | int, tags: Mapping[str, Any]
) -> None:
    c = client(tracking_uri)
    for key, value in tags.items():
        c.set_model_version_tag(model_name, str(version), key, str(value))


def get_version_tags(tracking_uri: str, model_name: str, version: str | int) -> dict[str, str]:
    return dict(client(tracking_uri).get_model_version(model_name, str(version)).tags)


def set_version_description(
    tracking_uri: str, model_name: str, version: str | int, text: str
) -> None:
    client(tracking_uri).update_model_version(model_name, str(version), description=text)


def find_version_by_fingerprint(tracking_uri: str, model_name: str, fingerprint: str) -> str | None:
    """Newest version of ``model_name`` trained from exactly these inputs, or None.

    This is what makes the model's data version real: unchanged data, code,
    parameters and libraries find the existing version instead of retraining.
    """
    from mlflow.exceptions import MlflowException

    try:
        found = client(tracking_uri).search_model_versions(
            f"name = '{model_name}' and tags.`{FINGERPRINT_TAG}` = '{fingerprint}'"
        )
    except MlflowException:
        return None
    versions = sorted((int(v.version) for v in found), reverse=True)
    return str(versions[0]) if versions else None


def latest_version(tracking_uri: str, model_name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        found = client(tracking_uri).search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return None
    versions = sorted((int(v.version) for v in found), reverse=True)
    return str(versions[0]) if versions else None


def default_artifact_location(tracking_uri: str) -> str | None:
    """For a SQLite store, artifacts live beside the database (``<db dir>/artifacts``).

    MLflow's own default is ``./mlruns`` in the current directory, which would
    scatter artifacts wherever a process happens to start.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    from pathlib import Path

    db = Path(tracking_uri[len("sqlite:///") :])
    return (db.parent / "artifacts").resolve().as_uri()


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Id of experiment ``name``, created (artifacts beside a SQLite DB) when missing."""
    c = client(tracking_uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    from mlflow.exceptions import MlflowException

    try:
        return str(
            c.create_experiment(name, artifact_location=default_artifact_location(tracking_uri))
        )
    except MlflowException:  # created concurrently by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)
