"""Rollout strategies: blue-green, canary, shadow, rollback and crash recovery.

Plain functions over a ``DeployTarget`` (the lead wraps them in the Dagster ops of
the graph-backed ``deployment`` asset). Each returns a ``RolloutResult`` whose
``decisions`` are structured records (inputs, statistic, threshold, verdict) that
become asset check results on ``deployment``; the same records are written as tags
on the candidate model version as they are made, so the registry keeps the audit
trail even when the run dies.

Safety rules
  * Every change of what serves is one atomic ``target.transition``: the state is
    either before or after it, never half. The state carries ``rollout`` (id,
    strategy, step, start) while a rollout is in flight.
  * A run that dies mid-rollout leaves ``phase`` in ``staged|canary|shadow``; the next
    run calls ``resume_or_revert`` first, which re-applies the recorded state,
    reverts the rollout (or hands back what is needed to resume a canary) and
    re-syncs the registry aliases.
  * Rollback is automatic on any failed check and restores the previous stable
    model and its ``champion`` alias.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd

from mlcicd_dagster.platform import faults
from mlcicd_dagster.platform.lease import Lease
from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout import registry as reg
from mlcicd_dagster.rollout.state import DeploymentState, ModelRef, lease_path
from mlcicd_dagster.rollout.target import DeployTarget, DeployTargetError

log = logging.getLogger(__name__)

IN_FLIGHT = ("staged", "canary", "shadow")  # phases that mean "a rollout is under way"

Clock = Callable[[], float]
Sleep = Callable[[float], None]
Now = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class RolloutError(RuntimeError):
    """A rollout cannot start (another in flight, nothing to compare with, bad config)."""


# --------------------------------------------------------------------------------------
# decisions
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """One decision, as recorded on the ``deployment`` asset and the model version.

    ``check`` names the asset check (``smoke``, ``infra``, ``canary_analysis``,
    ``shadow_analysis``, ``max_duration``, ``switch``, ``rollback``, ``resume``).
    ``passed`` is what the asset check reports; ``verdict`` the action taken or advised.
    """

    check: str
    passed: bool
    verdict: str
    reason: str
    strategy: str
    version: str | None
    rollout_id: str
    at: str
    step: float | None = None
    statistic: float | None = None
    threshold: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DecisionLog:
    """Collects decisions; writes each as a tag on the candidate version when a registry
    client is given (a registry outage is noted in the record, never blocks a rollback)."""

    def __init__(self, model_name: str, registry: Any | None, start: int = 0) -> None:
        self.model_name = model_name
        self.registry = registry
        self.start = start  # decisions already recorded by earlier ticks of this rollout
        self.decisions: list[Decision] = []

    def add(self, decision: Decision) -> Decision:
        seq = self.start + len(self.decisions)
        if self.registry is not None and decision.version is not None:
            key = f"{reg.TAG_PREFIX}.{decision.rollout_id}.{seq:03d}.{decision.check}"
            try:
                reg.tag_version(
                    self.registry,
                    self.model_name,
                    decision.version,
                    {key: reg.compact_json(decision.to_dict()), f"{reg.TAG_PREFIX}.last": key},
                )
            except Exception as exc:  # noqa: BLE001 - recorded, and the rollout goes on
                log.warning("could not tag version %s: %r", decision.version, exc)
                decision = replace(decision, details={**decision.details, "tag_error": repr(exc)})
        self.decisions.append(decision)
        return decision


@dataclass(frozen=True)
class RolloutResult:
    outcome: str  # promoted | rolled_back | unchanged | reverted | resume
    state: DeploymentState
    decisions: tuple[Decision, ...]
    rollout_id: str
    alias_changes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "rollout_id": self.rollout_id,
            "state": self.state.to_dict(),
            "decisions": [d.to_dict() for d in self.decisions],
            "alias_changes": list(self.alias_changes),
        }


class _Run:
    """Shared plumbing of one rollout: target, registry, decision log, ids, clocks."""

    def __init__(
        self,
        target: DeployTarget,
        strategy: str,
        candidate: ModelRef | None,
        registry: Any | None,
        rollout_id: str | None = None,
        now: Now = _utcnow,
        decisions_before: int = 0,
    ) -> None:
        self.target = target
        self.strategy = strategy
        self.candidate = candidate
        self.registry = registry
        self.rollout_id = rollout_id or uuid.uuid4().hex[:12]
        self.now = now
        self.log = DecisionLog(target.model_name, registry, start=decisions_before)
        self.alias_changes: list[str] = []

    @classmethod
    def of_state(
        cls, target: DeployTarget, state: DeploymentState, registry: Any | None, now: Now
    ) -> _Run:
        """The rollout recorded in ``state`` (its candidate, id and decision count), to
        carry on or wind up."""
        info = state.rollout or {}
        return cls(
            target,
            state.strategy,
            state.canary or state.shadow,
            registry,
            rollout_id=info.get("id"),
            now=now,
            decisions_before=int(info.get("decisions", 0) or 0),
        )

    def decide(self, check: str, passed: bool, verdict: str, reason: str, **kw: Any) -> Decision:
        return self.log.add(
            Decision(
                check=check,
                passed=passed,
                verdict=verdict,
                reason=reason,
                strategy=self.strategy,
                version=kw.pop("version", self.candidate.version if self.candidate else None),
                rollout_id=self.rollout_id,
                at=self.now().isoformat(timespec="milliseconds"),
                **kw,
            )
        )

    def sync(self, state: DeploymentState) -> None:
        if self.registry is None:
            return
        try:
            self.alias_changes += reg.sync_aliases(state, self.registry)
        except Exception as exc:  # noqa: BLE001 - resume_or_revert re-syncs next run
            log.warning("alias sync failed: %r", exc)
            self.alias_changes.append(f"sync failed: {exc!r}")

    def result(self, outcome: str, state: DeploymentState) -> RolloutResult:
        if self.registry is not None and self.candidate is not None and outcome != "resume":
            try:
                reg.tag_version(
                    self.registry,
                    self.target.model_name,
                    self.candidate.version,
                    {f"{reg.TAG_PREFIX}.outcome": f"{outcome} ({self.strategy})"},
                )
            except Exception as exc:  # noqa: BLE001
                log.warning("could not tag outcome: %r", exc)
        return RolloutResult(
            outcome=outcome,
            state=state,
            decisions=tuple(self.log.decisions),
            rollout_id=self.rollout_id,
            alias_changes=tuple(self.alias_changes),
        )

    def rollout_info(self, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.rollout_id,
            "strategy": self.strategy,
            "candidate": self.candidate.version if self.candidate else None,
            "started_at": self.now().isoformat(timespec="milliseconds"),
            **extra,
        }


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------
def writer(target: DeployTarget, owner: str, wait_s: float = 60.0) -> Lease:
    """The one-writer lease of ``target``'s deployment state, for a whole read-decide-write
    sequence (transitions inside take it again, re-entrantly)."""
    return Lease(lease_path(target.state_path), owner=owner, wait_s=wait_s)


F = TypeVar("F", bound=Callable[..., Any])


def one_writer(fn: F) -> F:
    """Run ``fn(target, ...)`` holding the target's deployment lease."""

    @functools.wraps(fn)
    def wrapped(target: DeployTarget, *args: Any, **kwargs: Any) -> Any:
        with writer(target, fn.__name__):
            return fn(target, *args, **kwargs)

    return cast(F, wrapped)


def _check_can_start(state: DeploymentState, candidate: ModelRef) -> None:
    if state.phase in IN_FLIGHT:
        raise RolloutError(
            f"a {state.strategy} rollout is in flight (phase {state.phase}); "
            "call resume_or_revert first"
        )
    if not candidate.version or not candidate.model_uri:
        raise RolloutError(f"candidate needs a version and a model_uri, got {candidate}")


def _stage(
    run: _Run,
    track: str,
    candidate: ModelRef,
    weight: float,
    serve_timeout_s: float,
    **extra: Any,
) -> DeploymentState | None:
    """Load the candidate on ``track`` (no traffic yet for canary) and check the infra."""
    info = run.rollout_info(step=weight if track == "shadow" else 0.0, **extra)
    phase = "shadow" if track == "shadow" else "staged"
    state = run.target.transition(
        f"{run.strategy}_staged",
        lambda s: {
            track: replace(candidate, weight=weight),
            "phase": phase,
            "strategy": run.strategy,
            "rollout": info,
        },
    )
    ok = run.target.wait_until_serving(state.revision, serve_timeout_s)
    run.decide(
        "infra",
        ok,
        "pass" if ok else "rollback",
        f"target serves revision {state.revision}" if ok else "target did not load in time",
        details={"revision": state.revision, "timeout_s": serve_timeout_s, "track": track},
    )
    return state if ok else None


def _smoke(
    run: _Run,
    track: str,
    rows: pd.DataFrame | None,
    expected: np.ndarray | None,
    tolerance: float,
) -> bool:
    """Score ``rows`` on the candidate's track; optionally compare with known scores
    (e.g. the gate's own predictions: the served model must answer as it was judged)."""
    if rows is None or len(rows) == 0:
        run.decide("smoke", True, "skipped", "no smoke rows given")
        return True
    try:
        scores = run.target.smoke(track, rows)
    except DeployTargetError as exc:
        run.decide("smoke", False, "rollback", str(exc), details={"rows": len(rows)})
        return False
    details: dict[str, Any] = {"rows": len(rows), "mean_score": float(np.mean(scores))}
    if expected is not None:
        diff = float(np.max(np.abs(np.asarray(expected, float) - scores)))
        details.update(max_abs_diff=diff, tolerance=tolerance)
        if not diff <= tolerance:
            run.decide(
                "smoke", False, "rollback", f"scores differ from expected by {diff:.3g}",
                statistic=diff, threshold=tolerance, details=details,
            )  # fmt: skip
            return False
        run.decide(
            "smoke", True, "pass", "candidate answers as judged",
            statistic=diff, threshold=tolerance, details=details,
        )  # fmt: skip
        return True
    run.decide("smoke", True, "pass", f"{len(rows)} rows scored", details=details)
    return True


def _drop_candidate(run: _Run, event: str) -> DeploymentState:
    state = run.target.transition(
        event, lambda s: {"canary": None, "shadow": None, "phase": "rolled_back", "rollout": None}
    )
    faults.point("rollback")
    run.sync(state)
    return state


def _switch(run: _Run, candidate: ModelRef, serve_timeout_s: float) -> DeploymentState:
    """Candidate becomes stable in one transition; the old stable stays warm as previous."""
    state = run.target.transition(
        f"{run.strategy}_promoted",
        lambda s: {
            "stable": replace(candidate, weight=1.0),
            "previous": s.stable if s.stable and s.stable.version != candidate.version else None,
            "canary": None,
            "shadow": None,
            "phase": "promoted",
            "rollout": None,
        },
    )
    faults.point("promotion")
    ok = run.target.wait_until_serving(state.revision, serve_timeout_s)
    run.decide(
        "switch",
        ok,
        "promote" if ok else "rollback",
        "candidate serves all traffic" if ok else "switch did not take effect in time",
        details={"revision": state.revision, "previous": state.previous and state.previous.version},
    )
    if not ok and state.previous is not None:
        return _restore_previous(run, "switch_failed")
    run.sync(state)
    return state


def _restore_previous(run: _Run, reason: str) -> DeploymentState:
    state = run.target.transition(
        f"rollback:{reason}",
        lambda s: {
            "stable": s.previous,
            "previous": None,
            "canary": None,
            "shadow": None,
            "phase": "rolled_back",
            "rollout": None,
        },
    )
    run.sync(state)
    return state


# --------------------------------------------------------------------------------------
# blue-green
# --------------------------------------------------------------------------------------
@one_writer
def blue_green(
    target: DeployTarget,
    candidate: ModelRef,
    *,
    smoke_rows: pd.DataFrame | None = None,
    expected_scores: np.ndarray | None = None,
    score_tolerance: float = 1e-6,
    registry: Any | None = None,
    serve_timeout_s: float = 120.0,
    now: Now = _utcnow,
) -> RolloutResult:
    """Load green beside blue, smoke-test it on its own track, switch all traffic in one
    atomic step, keep blue warm as ``previous`` (``rollback`` switches back instantly)."""
    current = target.read_state()
    _check_can_start(current, candidate)
    run = _Run(target, "blue_green", candidate, registry, now=now)
    if current.stable is not None and current.stable.version == candidate.version:
        run.decide("switch", True, "unchanged", f"version {candidate.version} already serves")
        return run.result("unchanged", current)
    staged = _stage(run, "canary", candidate, 0.0, serve_timeout_s)
    if staged is None or not _smoke(run, "canary", smoke_rows, expected_scores, score_tolerance):
        return run.result("rolled_back", _drop_candidate(run, "blue_green_aborted"))
    state = _switch(run, candidate, serve_timeout_s)
    return run.result(
        "promoted" if state.stable == replace(candidate, weight=1.0) else "rolled_back", state
    )


# --------------------------------------------------------------------------------------
# rollback
# --------------------------------------------------------------------------------------
@one_writer
def rollback(
    target: DeployTarget,
    *,
    reason: str = "manual",
    registry: Any | None = None,
    now: Now = _utcnow,
) -> RolloutResult:
    """Undo what serves now: drop an in-flight canary/shadow, else restore ``previous``
    (kept warm, so traffic moves back at once) and its ``champion`` alias."""
    state = target.read_state()
    bad = state.canary or state.shadow or state.stable
    rollout_id = (state.rollout or {}).get("id") or uuid.uuid4().hex[:12]
    run = _Run(target, state.strategy, bad, registry, rollout_id=rollout_id, now=now)
    if state.canary or state.shadow or state.phase in IN_FLIGHT:
        new = _drop_candidate(run, f"rollback:{reason}")
    elif state.previous is not None:
        new = _restore_previous(run, reason)
    else:
        run.decide("rollback", False, "none", "nothing to roll back to (no previous stable)")
        return run.result("unchanged", state)
    run.decide(
        "rollback", True, "rollback", reason,
        details={"from": state.serving_versions(), "to": new.serving_versions()},
    )  # fmt: skip
    return run.result("rolled_back", new)


# --------------------------------------------------------------------------------------
# canary
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CanaryConfig:
    """Traffic steps and timing. The last step is the largest share the canary takes
    before promotion (promotion itself moves it to stable; a 100% canary would leave
    no stable traffic to compare with)."""

    steps: tuple[float, ...] = (0.05, 0.25, 0.5)
    check_interval_s: float = 30.0
    step_min_duration_s: float = 60.0  # dwell at each step before moving up
    step_min_samples: int = 200  # canary requests at a step before moving up without a verdict
    max_duration_s: float = 3600.0  # then rollback, unless the evidence says promote
    serve_timeout_s: float = 120.0
    analysis: an.AnalysisConfig = field(default_factory=an.AnalysisConfig)

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < w < 1 for w in self.steps):
            raise ValueError(f"canary steps must be fractions in (0, 1), got {self.steps}")
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"canary steps must increase, got {self.steps}")
        if self.check_interval_s <= 0 or self.max_duration_s <= 0:
            raise ValueError("check_interval_s and max_duration_s must be > 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["analysis"] = self.analysis.to_dict()
        return d


def _analysis_decision(
    run: _Run, check: str, res: an.AnalysisResult, step: float | None
) -> Decision:
    primary = [m for m in res.metrics if m.role == an.PRIMARY]
    lead = next((m for m in res.metrics if m.verdict == an.ROLLBACK), primary[0])
    return run.decide(
        check,
        res.verdict != an.ROLLBACK,
        res.verdict,
        res.reason,
        step=step,
        statistic=lead.log_lr_worse,
        threshold=lead.rollback_threshold
        if lead.verdict == an.ROLLBACK
        else lead.promote_threshold,
        details=res.to_dict(),
    )


# --------------------------------------------------------------------------------------
# shadow
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ShadowConfig:
    """Mirror ``fraction`` of traffic to the candidate; its answers are logged, never
    returned. Paired evidence (same requests) decides: promote switches the candidate to
    stable (blue-green style), reject drops it. Nothing users see changes meanwhile."""

    fraction: float = 1.0
    check_interval_s: float = 30.0
    max_duration_s: float = 3600.0
    serve_timeout_s: float = 120.0
    promote: bool = True  # False: only report the verdict, leave stable as it is
    analysis: an.AnalysisConfig = field(default_factory=an.AnalysisConfig)

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"shadow fraction must be in (0, 1], got {self.fraction}")


# --------------------------------------------------------------------------------------
# crash recovery
# --------------------------------------------------------------------------------------
@one_writer
def resume_or_revert(
    target: DeployTarget,
    *,
    registry: Any | None = None,
    resume: bool = False,
    serve_timeout_s: float = 120.0,
    now: Now = _utcnow,
) -> RolloutResult:
    """Call at the start of every deployment run (runs are serialised, so an in-flight
    phase here means the last run died mid-rollout).

    Re-applies the recorded state (so a target that missed the last ``apply`` converges),
    then: nothing in flight -> ``unchanged``; an interrupted canary with ``resume=True``
    -> outcome ``resume`` (call ``canary`` again with the same candidate, it continues
    from the recorded step and evidence window); otherwise revert to stable ->
    ``reverted``. Registry aliases are re-synced in every case.
    """
    state = target.read_state()
    info = state.rollout or {}
    candidate = state.canary or state.shadow
    run = _Run(target, state.strategy, candidate, registry, rollout_id=info.get("id"), now=now)
    target.apply(state)
    if state.phase not in IN_FLIGHT:
        run.sync(state)
        return run.result("unchanged", state)
    if resume and state.phase == "canary" and candidate is not None and info.get("step"):
        ok = target.wait_until_serving(state.revision, serve_timeout_s)
        if ok:
            run.decide("resume", True, "resume", "interrupted canary can continue",
                       details={"rollout": info})  # fmt: skip
            run.sync(state)
            return run.result("resume", state)
    new = _drop_candidate(run, "reverted_after_interruption")
    run.decide(
        "resume", True, "rollback",
        f"previous run died in phase {state.phase}; reverted to stable",
        details={"rollout": info, "from": state.serving_versions(), "to": new.serving_versions()},
    )  # fmt: skip
    return run.result("reverted", new)
