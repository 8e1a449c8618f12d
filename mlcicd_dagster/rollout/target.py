"""The one interface rollout strategies drive: a ``DeployTarget``.

Strategies (blue-green, canary, shadow) decide *what* should serve; a target
makes the serving infrastructure match. The local target drives the embedded
model server through the deployment state file; the Kubernetes target drives a
cluster. Both keep the deployment state JSON (``rollout.state``) as the record of
intent, so ``mlcicd status``, resume-after-crash and alias sync read one thing.

Contract every implementation keeps
  * ``transition`` is the only way a strategy changes what serves. It records the
    new state atomically first (old or new, never half), then calls ``apply``.
  * ``apply(state)`` is idempotent: applying the same state twice converges to the
    same serving infrastructure. ``resume_or_revert`` re-applies the recorded state
    after a crash, which is what makes "record, then apply" safe.
  * ``wait_until_serving(revision)`` returns True only once the infrastructure
    answers with that state revision (or a later one) loaded on every track.
  * ``smoke(track, rows)`` scores rows on exactly that track (``stable``,
    ``canary``, ``shadow`` or ``previous``) and returns P(positive) per row.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.rollout import state as st

TRACKS = ("stable", "canary", "shadow", "previous")


class DeployTargetError(RuntimeError):
    """The target could not do what was asked (not ready, smoke failed, unreachable)."""


class DeployTarget(abc.ABC):
    """Serving infrastructure for one registered model, driven by its deployment state."""

    #: short name shown in ``describe()`` and decision records ("local", "k8s", ...)
    kind: str = "abstract"

    def __init__(self, model_name: str, state_path: Path) -> None:
        self.model_name = model_name
        self.state_path = Path(state_path)

    # -- the record of intent (shared by all targets) -------------------------
    def read_state(self) -> st.DeploymentState:
        """The recorded deployment state (empty/idle when nothing was ever deployed)."""
        return st.read_state(self.state_path, self.model_name)

    def transition(
        self,
        event: str,
        change: Callable[[st.DeploymentState], dict[str, Any]],
    ) -> st.DeploymentState:
        """Record ``change`` atomically (``rollout.state.transition``), then ``apply`` it."""
        new = st.transition(self.state_path, self.model_name, event, change)
        self.apply(new)
        return new

    # -- what each target implements ----------------------------------------
    @abc.abstractmethod
    def apply(self, state: st.DeploymentState) -> None:
        """Make the serving infrastructure match ``state``. Idempotent; returns at once
        (use ``wait_until_serving`` to wait for it to take effect)."""

    @abc.abstractmethod
    def wait_until_serving(self, revision: int, timeout_s: float) -> bool:
        """True once the infrastructure serves state ``revision`` (or later); False on timeout."""

    @abc.abstractmethod
    def smoke(self, track: str, rows: pd.DataFrame) -> np.ndarray:
        """Score ``rows`` on ``track`` only; P(positive) per row. Raises DeployTargetError."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able facts for logs and decision records (kind, address, what serves)."""


def check_track(track: str) -> str:
    if track not in TRACKS:
        raise DeployTargetError(f"unknown track {track!r}; expected one of {TRACKS}")
    return track


def check_scores(scores: Any, n_rows: int, where: str) -> np.ndarray:
    """Scores must be one finite number per row (``models.tasks.one_score_per_row``: a
    probability for a classifier, a value for a regression); anything else fails the
    smoke test. Comparing with the scores the gates saw is the smoke test's real check."""
    from mlcicd_dagster.models.tasks import one_score_per_row

    arr = one_score_per_row(np.asarray(scores, dtype=float))
    if arr.shape[0] != n_rows:
        raise DeployTargetError(f"{where}: {arr.shape[0]} scores for {n_rows} rows")
    if not np.all(np.isfinite(arr)):
        raise DeployTargetError(f"{where}: scores are not finite numbers")
    return arr
