"""The rollout controller: rollouts as a state machine reconciled on every tick.

No process waits for traffic. ``begin`` stages a candidate and returns at once:
blue-green switches right after its smoke test (nothing to wait for); a canary
is left at its first traffic step, a shadow mirroring traffic. From then on
``tick`` (called by the controller sensor under the Dagster daemon and in every
``mlcicd cycle``) reads the persisted deployment state and the evidence and
does at most one thing: hold, move to the next step, promote, or roll back.

Everything a tick needs is in the state file (``rollout``: id, strategy, step,
when the rollout and the step started on the wall clock, the evidence window,
the canary count at the step's start), so any process may die at any moment
and the next tick, in any process, carries on. Each tick holds the state's
lease (``rollout.state.lease_path``): one writer at a time.

What a tick saw is kept beside the state (``progress_path``) for ``mlcicd
status``: e.g. ``waiting for traffic: 12/60 samples at step 5%``.

Phases a tick finds
  idle/promoted/rolled_back  nothing in flight: re-sync registry aliases if they drifted
  staged                     the stager died before the first traffic step: revert
  canary                     judge the evidence; advance/promote/rollback/hold
  shadow                     judge paired evidence; promote/reject/hold
A state file that cannot be read is rewritten from its last good copy first.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.platform import faults
from mlcicd_dagster.platform.atomic import atomic_write_json
from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout import state as st
from mlcicd_dagster.rollout.evidence import EvidenceSource
from mlcicd_dagster.rollout.state import DeploymentState, ModelRef
from mlcicd_dagster.rollout.strategies import (
    IN_FLIGHT,
    CanaryConfig,
    Now,
    RolloutResult,
    ShadowConfig,
    _analysis_decision,
    _check_can_start,
    _drop_candidate,
    _Run,
    _smoke,
    _stage,
    _switch,
    _utcnow,
    blue_green,
    writer,
)
from mlcicd_dagster.rollout.target import DeployTarget

log = logging.getLogger(__name__)

IN_PROGRESS = "in_progress"
FINAL = ("promoted", "rolled_back", "reverted", "unchanged")


def progress_path(state_path: Path) -> Path:
    """What the last tick saw (JSON), beside the state file."""
    state_path = Path(state_path)
    return state_path.with_name(state_path.stem + ".controller.json")


def read_progress(state_path: Path) -> dict[str, Any] | None:
    import json

    try:
        data = json.loads(progress_path(state_path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class TickReport:
    """One tick: what it did (``outcome``) and, when holding, what it waits for."""

    outcome: str  # idle | holding | advanced | promoted | rolled_back | reverted | repaired
    message: str
    state: DeploymentState
    result: RolloutResult | None = None
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def decisions(self) -> tuple[Any, ...]:
        return self.result.decisions if self.result else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "message": self.message,
            "progress": self.progress,
            "revision": self.state.revision,
            "phase": self.state.phase,
            "decisions": [d.to_dict() for d in self.decisions],
        }


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def _parse(raw: Any, default: dt.datetime) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(str(raw))
    except (TypeError, ValueError):
        return default
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------------------
# begin: stage and return
# --------------------------------------------------------------------------------------
def begin(
    target: DeployTarget,
    candidate: ModelRef,
    strategy: str,
    *,
    canary_config: CanaryConfig = CanaryConfig(),
    shadow_config: ShadowConfig = ShadowConfig(),
    smoke_rows: pd.DataFrame | None = None,
    expected_scores: np.ndarray | None = None,
    score_tolerance: float = 1e-6,
    registry: Any | None = None,
    supersede: bool = True,
    now: Now = _utcnow,
) -> RolloutResult:
    """Stage ``candidate`` and return: outcome ``promoted``/``rolled_back`` (blue-green,
    or a failed smoke), ``in_progress`` (canary at its first step, shadow mirroring:
    the controller's ticks finish it) or ``unchanged`` (it already serves or rolls out).

    A rollout of another version in flight is superseded (dropped, recorded) when
    ``supersede``: the newest gated model is the one worth judging.
    """
    with writer(target, f"begin {strategy} v{candidate.version}"):
        current = target.read_state()
        if current.phase == "staged":
            # Its stager held this lease until it died mid-staging (a redo of its run is
            # usually why we are here): revert, then stage afresh.
            old = _Run.of_state(target, current, registry, now)
            _drop_candidate(old, "reverted_after_interruption")
            old.decide("resume", True, "rollback", "the stager died while staging; reverted")
            old.result("reverted", target.read_state())
            current = target.read_state()
        if current.phase in IN_FLIGHT and (current.canary or current.shadow):
            inflight = current.canary or current.shadow
            assert inflight is not None
            if inflight.version == candidate.version:
                run = _Run(
                    target,
                    current.strategy,
                    candidate,
                    registry,
                    rollout_id=(current.rollout or {}).get("id"),
                    now=now,
                )
                return run.result(IN_PROGRESS, current)
            if supersede:
                old = _Run.of_state(target, current, registry, now)
                _drop_candidate(old, f"superseded_by_v{candidate.version}")
                old.decide(
                    "rollback",
                    True,
                    "rollback",
                    f"superseded by v{candidate.version} before a verdict",
                )
                old.result("rolled_back", target.read_state())
                current = target.read_state()
        if current.stable is None or strategy == "blue_green":
            return blue_green(
                target,
                candidate,
                smoke_rows=smoke_rows,
                expected_scores=expected_scores,
                score_tolerance=score_tolerance,
                registry=registry,
                serve_timeout_s=canary_config.serve_timeout_s,
                now=now,
            )
        _check_can_start(current, candidate)
        run = _Run(target, strategy, candidate, registry, now=now)
        if current.stable.version == candidate.version:
            run.decide("switch", True, "unchanged", f"v{candidate.version} already serves")
            return run.result("unchanged", current)
        if strategy == "canary":
            return _begin_canary(
                run, candidate, canary_config, smoke_rows, expected_scores, score_tolerance
            )
        if strategy == "shadow":
            return _begin_shadow(run, candidate, shadow_config, smoke_rows)
        raise ValueError(f"unknown rollout strategy {strategy!r}")


def _begin_canary(
    run: _Run,
    candidate: ModelRef,
    cfg: CanaryConfig,
    smoke_rows: pd.DataFrame | None,
    expected: np.ndarray | None,
    tolerance: float,
) -> RolloutResult:
    staged = _stage(run, "canary", candidate, 0.0, cfg.serve_timeout_s)
    faults.point("staging")
    if staged is None or not _smoke(run, "canary", smoke_rows, expected, tolerance):
        return run.result("rolled_back", _drop_candidate(run, "canary_aborted"))
    run.sync(staged)  # challenger alias = the canary
    state = _set_step(run, candidate, cfg, 0, evidence_n=0)
    if not run.target.wait_until_serving(state.revision, cfg.serve_timeout_s):
        run.decide("infra", False, "rollback", f"step {cfg.steps[0]:g} not served in time")
        return run.result("rolled_back", _drop_candidate(run, "canary_rollback"))
    return run.result(IN_PROGRESS, state)


def _set_step(
    run: _Run, candidate: ModelRef, cfg: CanaryConfig, index: int, *, evidence_n: int
) -> DeploymentState:
    weight = cfg.steps[index]
    t = _iso(run.now())
    decisions = run.log.start + len(run.log.decisions)

    def change(s: DeploymentState) -> dict[str, Any]:
        info = dict(s.rollout or run.rollout_info())
        info.setdefault("evidence_since", t)
        info.update(
            step=weight,
            step_index=index,
            step_started_at=t,
            step_n0=evidence_n,
            decisions=decisions,
            config=cfg.to_dict(),
        )
        return {
            "canary": replace(candidate, weight=weight),
            "phase": "canary",
            "strategy": "canary",
            "rollout": info,
        }

    return run.target.transition(f"canary_step_{weight:g}", change)


def _begin_shadow(
    run: _Run, candidate: ModelRef, cfg: ShadowConfig, smoke_rows: pd.DataFrame | None
) -> RolloutResult:
    state = _stage(
        run, "shadow", candidate, cfg.fraction, cfg.serve_timeout_s, evidence_since=_iso(run.now())
    )
    if state is None or not _smoke(run, "shadow", smoke_rows, None, 0.0):
        return run.result("rolled_back", _drop_candidate(run, "shadow_aborted"))
    run.sync(state)
    decisions = run.log.start + len(run.log.decisions)
    state = run.target.transition(
        "shadow_mirroring",
        lambda s: {"rollout": {**(s.rollout or {}), "decisions": decisions}},
    )
    return run.result(IN_PROGRESS, state)


# --------------------------------------------------------------------------------------
# tick: reconcile once
# --------------------------------------------------------------------------------------
def tick(
    target: DeployTarget,
    *,
    evidence: EvidenceSource,
    canary_config: CanaryConfig = CanaryConfig(),
    shadow_config: ShadowConfig = ShadowConfig(),
    registry: Any | None = None,
    now: Now = _utcnow,
    lease_wait_s: float = 5.0,
) -> TickReport:
    """Reconcile the deployment state once (see the module docstring). Holds the state's
    lease; when another process holds it (a deploy step staging), reports ``busy``."""
    from mlcicd_dagster.platform.lease import LeaseBusy

    try:
        with writer(target, "rollout tick", wait_s=lease_wait_s):
            report = _tick(target, evidence, canary_config, shadow_config, registry, now)
    except LeaseBusy as exc:
        state = target.read_state()
        report = TickReport("busy", f"another writer is at work: {exc}", state)
    _write_progress(target, report, now)
    return report


def _tick(
    target: DeployTarget,
    evidence: EvidenceSource,
    ccfg: CanaryConfig,
    scfg: ShadowConfig,
    registry: Any | None,
    now: Now,
) -> TickReport:
    corrupt = st.state_is_corrupt(target.state_path, target.model_name)
    if corrupt is not None:
        repaired = target.transition(
            "restored_last_good_copy", lambda s: {}
        )  # read falls back to the copy; the write replaces the bad file
        log.warning(
            "deployment state was unreadable (%s); restored revision %s",
            corrupt,
            repaired.revision - 1,
        )
        return TickReport(
            "repaired",
            f"state file was unreadable ({corrupt[:200]}); restored its last "
            f"good copy (revision {repaired.revision - 1})",
            repaired,
        )
    state = target.read_state()
    target.apply(state)  # a target that missed the last apply converges
    candidate = state.canary or state.shadow
    run = _Run.of_state(target, state, registry, now)
    if state.phase not in IN_FLIGHT or candidate is None:
        if state.phase in IN_FLIGHT:  # in flight with nothing on the track: inconsistent
            new = _drop_candidate(run, "reverted_inconsistent_state")
            return TickReport("reverted", "in-flight phase without a candidate: reverted", new)
        return _idle(run, state)
    if state.phase == "staged":
        new = _drop_candidate(run, "reverted_after_interruption")
        run.decide(
            "resume",
            True,
            "rollback",
            "the deploy step died while staging; reverted (its run is redone)",
            details={"rollout": state.rollout or {}, "to": new.serving_versions()},
        )
        return TickReport(
            "reverted",
            "staging was interrupted: reverted to stable",
            new,
            run.result("reverted", new),
        )
    if state.phase == "canary" and state.canary is not None:
        return _tick_canary(run, state, state.canary, ccfg, evidence)
    if state.phase == "shadow" and state.shadow is not None:
        return _tick_shadow(run, state, state.shadow, scfg, evidence)
    new = _drop_candidate(run, "reverted_inconsistent_state")
    return TickReport("reverted", f"phase {state.phase} without its track: reverted", new)


def _idle(run: _Run, state: DeploymentState) -> TickReport:
    if run.registry is None or (state.stable is None and state.previous is None):
        return TickReport("idle", "no rollout in flight", state)
    before = list(run.alias_changes)
    run.sync(state)
    changes = run.alias_changes[len(before) :]
    if changes:
        return TickReport("repaired", f"registry aliases re-synced: {'; '.join(changes)}", state)
    return TickReport("idle", "no rollout in flight", state)


def _elapsed(run: _Run, info: dict[str, Any], key: str) -> float:
    t = run.now()
    return max(0.0, (t - _parse(info.get(key) or info.get("started_at"), t)).total_seconds())


def _tick_canary(
    run: _Run,
    state: DeploymentState,
    candidate: ModelRef,
    cfg: CanaryConfig,
    evidence: EvidenceSource,
) -> TickReport:
    info = state.rollout or {}
    steps = cfg.steps
    index = steps.index(candidate.weight) if candidate.weight in steps else 0
    weight = steps[index]
    since = _parse(info.get("evidence_since") or info.get("started_at"), run.now())
    ev = evidence.collect(state, since)
    res = an.analyse(ev, cfg.analysis)
    elapsed = _elapsed(run, info, "started_at")
    step_elapsed = _elapsed(run, info, "step_started_at")
    timed_out = elapsed >= cfg.max_duration_s
    n_step = ev.n_canary() - int(info.get("step_n0", 0) or 0)
    last = index == len(steps) - 1
    progress = {
        "step": weight,
        "step_index": index,
        "steps": list(steps),
        "samples_at_step": n_step,
        "samples_needed": cfg.step_min_samples,
        "step_elapsed_s": round(step_elapsed, 1),
        "step_min_duration_s": cfg.step_min_duration_s,
        "elapsed_s": round(elapsed, 1),
        "max_duration_s": cfg.max_duration_s,
        "verdict": res.verdict,
        "reason": res.reason,
        "labels": _labels(ev, cfg.analysis),
    }
    if res.verdict == an.ROLLBACK:
        _analysis_decision(run, "canary_analysis", res, weight)
        return _finish(run, "rolled_back", _drop_candidate(run, "canary_rollback"), progress)
    if timed_out and res.verdict != an.PROMOTE:
        _analysis_decision(run, "canary_analysis", res, weight)
        run.decide(
            "max_duration",
            False,
            "rollback",
            f"no evidence for the canary after {cfg.max_duration_s:g} s",
            step=weight,
            statistic=elapsed,
            threshold=cfg.max_duration_s,
        )
        return _finish(run, "rolled_back", _drop_candidate(run, "canary_rollback"), progress)
    if res.verdict == an.PROMOTE and (last or timed_out):
        _analysis_decision(run, "canary_analysis", res, weight)
        new = _switch(run, candidate, cfg.serve_timeout_s)
        promoted = new.stable is not None and new.stable.version == candidate.version
        return _finish(run, "promoted" if promoted else "rolled_back", new, progress)
    enough = res.verdict == an.PROMOTE or n_step >= cfg.step_min_samples
    dwell = step_elapsed >= cfg.step_min_duration_s
    if not last and dwell and enough:
        _analysis_decision(run, "canary_analysis", res, weight)
        faults.point("canary_step")
        new = _set_step(run, candidate, cfg, index + 1, evidence_n=ev.n_canary())
        if not run.target.wait_until_serving(new.revision, cfg.serve_timeout_s):
            run.decide(
                "infra",
                False,
                "rollback",
                f"step {steps[index + 1]:g} not served in time",
                step=steps[index + 1],
            )
            return _finish(run, "rolled_back", _drop_candidate(run, "canary_rollback"), progress)
        return TickReport(
            "advanced",
            f"canary v{candidate.version} moved to step {steps[index + 1]:.0%}",
            new,
            run.result(IN_PROGRESS, new),
            progress,
        )
    left = max(0.0, cfg.max_duration_s - elapsed)
    if not enough:
        why = f"waiting for traffic: {n_step}/{cfg.step_min_samples} samples at step {weight:.0%}"
    elif not dwell:
        why = f"dwelling at step {weight:.0%}: {step_elapsed:.0f}/{cfg.step_min_duration_s:.0f} s"
    else:
        why = f"waiting for evidence at step {weight:.0%}: {_evidence_wait(res, ev)}"
    message = f"canary v{candidate.version}: {why} (rolls back in {left:.0f} s without a verdict)"
    return TickReport("holding", message, state, None, progress)


def _labels(ev: an.Evidence, cfg: an.AnalysisConfig) -> dict[str, int]:
    """Labeled requests per arm: the count of the primary metric's per-request loss
    (``log_loss`` for classifiers, ``abs_error`` for a regression)."""
    name = next((m.name for m in cfg.metrics if m.role == an.PRIMARY), "log_loss")
    loss = ev.canary.get(name)
    base = ev.stable.get(name)
    paired = ev.paired.get(name)
    return {
        "canary": int(loss.n) if loss else 0,
        "stable": int(base.n) if base else 0,
        "paired": int(paired.n) if paired else 0,
    }


def _evidence_wait(res: an.AnalysisResult, ev: an.Evidence) -> str:  # noqa: ARG001
    primary = [m for m in res.metrics if m.role == an.PRIMARY]
    parts = [f"{m.metric} n={m.n_canary}/{m.n_stable}: {m.reason}" for m in primary]
    return "; ".join(parts) or res.reason


def _tick_shadow(
    run: _Run,
    state: DeploymentState,
    candidate: ModelRef,
    cfg: ShadowConfig,
    evidence: EvidenceSource,
) -> TickReport:
    info = state.rollout or {}
    since = _parse(info.get("evidence_since") or info.get("started_at"), run.now())
    ev = evidence.collect(state, since)
    res = an.analyse(ev, cfg.analysis)
    elapsed = _elapsed(run, info, "started_at")
    timed_out = elapsed >= cfg.max_duration_s
    progress = {
        "elapsed_s": round(elapsed, 1),
        "max_duration_s": cfg.max_duration_s,
        "verdict": res.verdict,
        "reason": res.reason,
        "labels": _labels(ev, cfg.analysis),
    }
    if res.verdict == an.ROLLBACK or (timed_out and res.verdict != an.PROMOTE):
        _analysis_decision(run, "shadow_analysis", res, cfg.fraction)
        if res.verdict != an.ROLLBACK:
            run.decide(
                "max_duration",
                False,
                "rollback",
                "no evidence for the shadow",
                statistic=elapsed,
                threshold=cfg.max_duration_s,
            )
        return _finish(run, "rolled_back", _drop_candidate(run, "shadow_rejected"), progress)
    if res.verdict == an.PROMOTE:
        _analysis_decision(run, "shadow_analysis", res, cfg.fraction)
        if not cfg.promote:
            return _finish(run, "unchanged", _drop_candidate(run, "shadow_accepted"), progress)
        new = _switch(run, candidate, cfg.serve_timeout_s)
        promoted = new.stable is not None and new.stable.version == candidate.version
        return _finish(run, "promoted" if promoted else "rolled_back", new, progress)
    left = max(0.0, cfg.max_duration_s - elapsed)
    message = (
        f"shadow v{candidate.version}: waiting for evidence: {_evidence_wait(res, ev)} "
        f"(rejected in {left:.0f} s without a verdict)"
    )
    return TickReport("holding", message, state, None, progress)


def _finish(
    run: _Run, outcome: str, state: DeploymentState, progress: dict[str, Any]
) -> TickReport:
    served = state.stable.version if state.stable else "-"
    cand = run.candidate.version if run.candidate else "?"
    return TickReport(
        outcome,
        f"v{cand} {outcome.replace('_', ' ')}; v{served} serves",
        state,
        run.result(outcome, state),
        progress,
    )


def _write_progress(target: DeployTarget, report: TickReport, now: Now) -> None:
    state = report.state
    doc = {
        "at": _iso(now()),
        "outcome": report.outcome,
        "message": report.message,
        "progress": report.progress,
        "revision": state.revision,
        "phase": state.phase,
        "rollout_id": (state.rollout or {}).get("id"),
    }
    try:
        atomic_write_json(progress_path(target.state_path), doc)
    except OSError as exc:  # a report, never a reason for the tick to fail
        log.warning("could not write controller progress: %r", exc)


# --------------------------------------------------------------------------------------
# blocking drivers (library users, tests and benchmarks; the pipeline never blocks)
# --------------------------------------------------------------------------------------
Clock = Callable[[], float]
Sleep = Callable[[float], None]


def _virtual_now(clock: Clock, now: Now) -> Now:
    """Wall-clock time that advances with ``clock`` (so a fake clock drives durations)."""
    t0, c0 = now(), clock()
    return lambda: t0 + dt.timedelta(seconds=clock() - c0)


def drive(
    target: DeployTarget,
    first: RolloutResult,
    *,
    interval_s: float,
    tick_fn: Callable[[Now], TickReport],
    sleep: Sleep,
    now: Now,
) -> RolloutResult:
    """Tick until the rollout begun by ``first`` is decided; all its decisions in one result."""
    decisions = list(first.decisions)
    aliases = list(first.alias_changes)
    if first.outcome != IN_PROGRESS:
        return first
    while True:
        sleep(interval_s)
        report = tick_fn(now)
        decisions += report.decisions
        if report.result is not None:
            aliases += report.result.alias_changes
        if report.outcome in FINAL:
            return RolloutResult(
                report.outcome, report.state, tuple(decisions), first.rollout_id, tuple(aliases)
            )


def canary(
    target: DeployTarget,
    candidate: ModelRef,
    *,
    evidence: EvidenceSource,
    config: CanaryConfig = CanaryConfig(),
    smoke_rows: pd.DataFrame | None = None,
    expected_scores: np.ndarray | None = None,
    score_tolerance: float = 1e-6,
    registry: Any | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    now: Now = _utcnow,
) -> RolloutResult:
    """``begin`` a canary then ``tick`` every ``check_interval_s`` until it is decided.

    Continues an interrupted canary of the same candidate from its recorded step and
    evidence window (decision ``resume``) instead of starting over; refuses to start
    over another rollout in flight (``RolloutError``).
    """
    vnow = _virtual_now(clock, now)
    current = target.read_state()
    resuming = (
        current.phase == "canary"
        and current.canary is not None
        and current.canary.version == candidate.version
        and current.rollout is not None
    )
    if resuming:
        run = _Run.of_state(target, current, registry, vnow)
        run.decide(
            "resume",
            True,
            "resume",
            f"resuming canary at step {(current.rollout or {}).get('step')}",
            details={"rollout": current.rollout},
        )
        first = replace(run.result(IN_PROGRESS, current))
    else:
        _check_can_start(current, candidate)
        first = begin(
            target,
            candidate,
            "canary",
            canary_config=config,
            smoke_rows=smoke_rows,
            expected_scores=expected_scores,
            score_tolerance=score_tolerance,
            registry=registry,
            now=vnow,
        )

    def one(n: Now) -> TickReport:
        return tick(target, evidence=evidence, canary_config=config, registry=registry, now=n)

    return drive(
        target, first, interval_s=config.check_interval_s, tick_fn=one, sleep=sleep, now=vnow
    )


def shadow(
    target: DeployTarget,
    candidate: ModelRef,
    *,
    evidence: EvidenceSource,
    config: ShadowConfig = ShadowConfig(),
    smoke_rows: pd.DataFrame | None = None,
    registry: Any | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    now: Now = _utcnow,
) -> RolloutResult:
    """``begin`` a shadow then ``tick`` every ``check_interval_s`` until it is decided."""
    from mlcicd_dagster.rollout.strategies import RolloutError

    vnow = _virtual_now(clock, now)
    current = target.read_state()
    _check_can_start(current, candidate)
    if current.stable is None:
        raise RolloutError("shadow needs a stable model to mirror traffic from")
    first = begin(
        target,
        candidate,
        "shadow",
        shadow_config=config,
        smoke_rows=smoke_rows,
        registry=registry,
        now=vnow,
    )

    def one(n: Now) -> TickReport:
        return tick(target, evidence=evidence, shadow_config=config, registry=registry, now=n)

    return drive(
        target, first, interval_s=config.check_interval_s, tick_fn=one, sleep=sleep, now=vnow
    )


__all__ = [
    "FINAL",
    "IN_PROGRESS",
    "TickReport",
    "begin",
    "canary",
    "drive",
    "progress_path",
    "read_progress",
    "shadow",
    "tick",
]
