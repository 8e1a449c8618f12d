"""The deployment state: which model versions serve, on which track, with what weight.

One JSON document per registered model (``Home.deployment_state(name)``) is the
single source of truth that the model server follows and that ``mlcicd status``
reports. Every change goes through :func:`transition`, which re-reads the file,
applies a pure function and writes the result atomically with a bumped
``revision``: a deploy step that dies mid-rollout leaves either the old or the
new document, never half of one, and the next run can read ``phase`` to resume
or revert.

Tracks
  ``stable``   answers all traffic not routed elsewhere (registry alias ``champion``)
  ``canary``   answers ``weight`` of the traffic (alias ``challenger``)
  ``shadow``   scores a ``weight`` fraction of traffic; its answers are logged, never returned
  ``previous`` the last stable, kept warm by the server for instant rollback
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlcicd_dagster.platform.atomic import atomic_write_json

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
HISTORY_KEPT = 50  # enough to explain recent rollouts without the file growing forever

PHASES = ("idle", "staged", "canary", "shadow", "promoted", "rolled_back")


class DeploymentStateError(RuntimeError):
    """The state file exists but cannot be read as a deployment state."""


@dataclass(frozen=True)
class ModelRef:
    """One registered model version as the server loads it."""

    version: str
    model_uri: str  # e.g. "models:/credit_default/3"
    run_id: str | None = None
    weight: float = 1.0  # fraction of traffic (canary) or mirrored (shadow)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ModelRef | None:
        if not d:
            return None
        return cls(
            version=str(d["version"]),
            model_uri=str(d["model_uri"]),
            run_id=d.get("run_id"),
            weight=float(d.get("weight", 1.0)),
        )


@dataclass(frozen=True)
class DeploymentState:
    model_name: str
    revision: int = 0
    strategy: str = "none"  # blue_green | canary | shadow | none
    phase: str = "idle"  # see PHASES
    stable: ModelRef | None = None
    canary: ModelRef | None = None
    shadow: ModelRef | None = None
    previous: ModelRef | None = None
    updated_at: str = ""
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    # The rollout in progress (id, strategy, started_at, step, candidate), or None when
    # idle: what ``rollout.strategies.resume_or_revert`` reads after a crash.
    rollout: dict[str, Any] | None = None

    # -- serialisation -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = SCHEMA_VERSION
        d["history"] = list(self.history)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeploymentState:
        try:
            return cls(
                model_name=str(d["model_name"]),
                revision=int(d.get("revision", 0)),
                strategy=str(d.get("strategy", "none")),
                phase=str(d.get("phase", "idle")),
                stable=ModelRef.from_dict(d.get("stable")),
                canary=ModelRef.from_dict(d.get("canary")),
                shadow=ModelRef.from_dict(d.get("shadow")),
                previous=ModelRef.from_dict(d.get("previous")),
                updated_at=str(d.get("updated_at", "")),
                history=tuple(d.get("history", ())),
                rollout=dict(d["rollout"]) if d.get("rollout") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentStateError(f"malformed deployment state: {exc!r}") from exc

    # -- views ---------------------------------------------------------------
    def serving_versions(self) -> dict[str, str]:
        """Track -> version for every track that has a model."""
        out = {}
        for track in ("stable", "canary", "shadow", "previous"):
            ref = getattr(self, track)
            if ref is not None:
                out[track] = ref.version
        return out

    def weights(self) -> dict[str, float]:
        canary = self.canary.weight if self.canary else 0.0
        return {
            "stable": round(1.0 - canary, 6) if self.stable else 0.0,
            "canary": canary,
            "shadow": self.shadow.weight if self.shadow else 0.0,
        }

    def with_changes(self, event: str, **changes: Any) -> DeploymentState:
        """A new state with ``changes`` applied and ``event`` appended to the history."""
        now = _now()
        new = replace(self, **changes)
        entry = {
            "at": now,
            "event": event,
            "revision": self.revision + 1,
            "phase": new.phase,
            "versions": new.serving_versions(),
        }
        history = (self.history + (entry,))[-HISTORY_KEPT:]
        return replace(new, revision=self.revision + 1, updated_at=now, history=history)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def backup_path(path: Path) -> Path:
    """The last good copy of the state at ``path`` (written after every good write)."""
    path = Path(path)
    return path.with_name(path.name + ".last-good")


def lease_path(path: Path) -> Path:
    """The lease every writer of the state at ``path`` holds (``platform.lease``)."""
    path = Path(path)
    return path.with_name(path.stem + ".lease")


def _read_file(path: Path) -> DeploymentState:
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeploymentStateError(f"cannot read deployment state {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise DeploymentStateError(f"deployment state {path} is not a JSON object")
    return DeploymentState.from_dict(raw)


def read_state(path: Path, model_name: str, *, fallback: bool = True) -> DeploymentState:
    """The state at ``path``, or an empty (idle, nothing deployed) state if none yet.

    A state file that cannot be read (torn by hand, disk trouble) falls back to its last
    good copy (``backup_path``) with a warning, so a server restart still serves the
    stable model; ``DeploymentStateError`` only when neither can be read.
    """
    path = Path(path)
    if not path.exists():
        if fallback and backup_path(path).exists():
            log.warning("deployment state %s is missing; using its last good copy", path)
            return _read_file(backup_path(path))
        return DeploymentState(model_name=model_name)
    try:
        return _read_file(path)
    except DeploymentStateError as exc:
        if not fallback or not backup_path(path).exists():
            raise
        log.warning("%s; using its last good copy", exc)
        try:
            return _read_file(backup_path(path))
        except DeploymentStateError:
            raise exc from None


def state_is_corrupt(path: Path, model_name: str) -> str | None:
    """Why the state file itself cannot be read (None when it can, or is absent)."""
    path = Path(path)
    if not path.exists():
        return "missing" if backup_path(path).exists() else None
    try:
        _read_file(path)
    except DeploymentStateError as exc:
        return str(exc)
    return None


def write_state(path: Path, state: DeploymentState) -> None:
    data = state.to_dict()
    atomic_write_json(Path(path), data)
    atomic_write_json(backup_path(path), data)


def transition(
    path: Path,
    model_name: str,
    event: str,
    change: Callable[[DeploymentState], dict[str, Any]],
) -> DeploymentState:
    """Read, apply ``change`` (state -> field updates), write atomically, return the new state.

    Holds the state's lease (``lease_path``) for the read-modify-write: whoever writes
    (a deploy step, the rollout controller under the daemon or in a cycle, an operator's
    rollback), one at a time. Re-entrant: a controller tick already holding it goes on.
    """
    from mlcicd_dagster.platform.lease import Lease

    with Lease(lease_path(path), owner=f"transition {event}"):
        current = read_state(path, model_name)
        new = current.with_changes(event, **change(current))
        write_state(path, new)
    return new
