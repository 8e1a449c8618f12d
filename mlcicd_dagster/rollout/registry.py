"""Registry aliases follow what serves; decisions are written on the model version.

The deployment state is the truth about what serves; MLflow aliases are the
registry's view of it: ``champion`` = the stable track, ``challenger`` = the
candidate under evaluation (canary, else shadow). ``sync_aliases`` moves the
registry to match the state (after every transition, and again at the start of
the next run in case a crash fell between the two); ``alias_mismatches`` is what
``mlcicd status`` shows when they disagree.

``client`` is an ``mlflow.MlflowClient`` (duck-typed: only the alias and tag
methods are used), so this module imports no MLflow itself.
"""

from __future__ import annotations

import json
from typing import Any

from mlcicd_dagster.rollout.state import DeploymentState

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_PREFIX = "mlcicd.rollout"
TAG_VALUE_MAX = 5000  # MLflow's limit on a model version tag value


def expected_aliases(state: DeploymentState) -> dict[str, str | None]:
    """Alias -> the version it must point at (None: the alias must not exist)."""
    candidate = state.canary or state.shadow
    return {
        CHAMPION: state.stable.version if state.stable else None,
        CHALLENGER: candidate.version if candidate else None,
    }


def current_aliases(client: Any, model_name: str) -> dict[str, str]:
    """Alias -> version in the registry ({} when the model is not registered)."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(model_name)
    except MlflowException:
        return {}
    return {str(k): str(v) for k, v in (rm.aliases or {}).items()}


def alias_mismatches(state: DeploymentState, client: Any) -> list[str]:
    """Human-readable disagreements between the registry and what serves ([] when in sync)."""
    have = current_aliases(client, state.model_name)
    out = []
    for alias, want in expected_aliases(state).items():
        got = have.get(alias)
        track = "stable" if alias == CHAMPION else "canary/shadow"
        if got != want:
            out.append(
                f"alias {alias!r} of {state.model_name} points at "
                f"{'version ' + got if got else 'nothing'} but {track} serves "
                f"{'version ' + want if want else 'nothing'}"
            )
    return out


def sync_aliases(state: DeploymentState, client: Any) -> list[str]:
    """Move/delete aliases so the registry matches ``state``; returns the changes made."""
    from mlflow.exceptions import MlflowException

    have = current_aliases(client, state.model_name)
    changes = []
    for alias, want in expected_aliases(state).items():
        got = have.get(alias)
        if got == want:
            continue
        if want is None:
            try:
                client.delete_registered_model_alias(state.model_name, alias)
            except MlflowException:  # already gone: the goal is reached
                pass
            changes.append(f"{alias}: {got} -> (none)")
        else:
            client.set_registered_model_alias(state.model_name, alias, want)
            changes.append(f"{alias}: {got or '(none)'} -> {want}")
    return changes


def compact_json(record: dict[str, Any], limit: int = TAG_VALUE_MAX) -> str:
    """JSON that fits a tag value: drop the bulkiest parts first rather than cut mid-way."""
    text = json.dumps(record, sort_keys=True, default=str, separators=(",", ":"))
    if len(text) <= limit:
        return text
    slim = {k: v for k, v in record.items() if k != "details"}
    details = record.get("details")
    if isinstance(details, dict):
        keep = {k: v for k, v in details.items() if k not in ("config", "descriptive", "window")}
        slim["details"] = keep
    text = json.dumps(slim, sort_keys=True, default=str, separators=(",", ":"))
    if len(text) <= limit:
        return text
    slim.pop("details", None)
    slim["truncated"] = True
    return json.dumps(slim, sort_keys=True, default=str, separators=(",", ":"))[:limit]


def tag_version(client: Any, model_name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value[:TAG_VALUE_MAX])
