"""The retraining policy: when monitoring results justify a retraining run, and why.

Three causes, in priority order:

``degradation``  label-confirmed: for the version serving stable traffic, a live
                 metric is worse than its deployment baseline by more than a margin,
                 at one-sided confidence ``1 - degradation_alpha`` (Bonferroni across
                 metrics; the baseline's own standard error is included), with at
                 least ``min_labels`` labelled rows in the window.
``drift``        significant and sustained: the same feature (or the prediction
                 distribution) flagged by the data gate's drift statistics in
                 ``drift_windows`` consecutive windows. With a per-window family-wise
                 rate ``a`` (Holm across features + effect-size floor), independent
                 windows give a false alarm rate of at most about ``a**2`` per window
                 for N = 2 (summing per-feature rates, which are each <= a).
``new_data``     at least ``min_new_labels`` new labelled rows since the last retrain.
                 Off by default: it fires on clean traffic by design.

Guards, applied in this order to a cause that is active and not yet answered:
``fired`` de-duplication (one retrain per cause: ``drift@<version>`` and
``degradation@<version>`` fire once until the condition clears or another version
serves), a cool-down after any retrain, and a budget of retrains per rolling 24
hours. A suppressed cause is not marked answered: it fires when the guard lifts if
it is still active. Every decision is recorded in :class:`PolicyState`, which is
persisted atomically (JSON) in ``Home.monitoring``.

:func:`evaluate` is pure (results and state in, triggers and new state out); the
I/O (state file, alerts) is in :func:`run_policy`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlcicd_dagster.monitoring.metrics import Degradation, degraded_metrics
from mlcicd_dagster.monitoring.result import MonitoringResult
from mlcicd_dagster.platform.atomic import atomic_write_json
from mlcicd_dagster.platform.home import Home

STATE_SCHEMA = 1
HISTORY_KEPT = 100  # triggers/suppressions kept in the state file: enough for `mlcicd status`
LABEL_WINDOWS_KEPT = (
    2000  # windows whose labels were counted (so a recomputation adds only new ones)
)
CAUSE_PRIORITY = ("degradation", "drift", "new_data")
PREDICTION = "__prediction__"  # streak key of prediction drift
TAG_PREFIX = "mlcicd/"


@dataclass(frozen=True)
class RetrainPolicy:
    degradation: bool = True
    degradation_alpha: float = 0.01
    degradation_margins: Mapping[str, float] = field(
        default_factory=lambda: {"auc": 0.02, "accuracy": 0.02, "log_loss": 0.03}
    )
    min_labels: int = 200
    drift: bool = True
    drift_windows: int = 2  # consecutive windows with the same feature flagged
    prediction_drift: bool = True  # sustained prediction drift counts as drift
    min_new_labels: int | None = None  # None: the new-data trigger is off
    cooldown: dt.timedelta = dt.timedelta(hours=6)
    max_per_day: int = 2

    def __post_init__(self) -> None:
        if self.drift_windows < 1:
            raise ValueError("drift_windows must be >= 1")
        if not 0 < self.degradation_alpha < 1:
            raise ValueError("degradation_alpha must be in (0, 1)")
        if self.max_per_day < 0:
            raise ValueError("max_per_day must be >= 0")
        if self.min_new_labels is not None and self.min_new_labels < 1:
            raise ValueError("min_new_labels must be >= 1 or None")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cooldown"] = self.cooldown.total_seconds()
        d["degradation_margins"] = dict(self.degradation_margins)
        return d


@dataclass(frozen=True)
class RetrainTrigger:
    """One retraining run to request, with everything needed to explain it."""

    trigger_id: str  # deterministic: a Dagster run_key, so a re-evaluated tick does not run twice
    model_name: str
    cause: str  # degradation | drift | new_data (the highest-priority active cause)
    causes: tuple[str, ...]  # cause keys this retrain answers, e.g. ("drift@3",)
    reason: str
    evidence: Mapping[str, Any]
    window: str
    at: str  # ISO time of the decision

    def run_tags(self) -> dict[str, str]:
        """Tags for the Dagster run (shown in the UI, kept by `mlcicd status`)."""
        return {
            f"{TAG_PREFIX}trigger": self.cause,
            f"{TAG_PREFIX}trigger_id": self.trigger_id,
            f"{TAG_PREFIX}trigger_causes": ",".join(self.causes),
            f"{TAG_PREFIX}trigger_window": self.window,
            f"{TAG_PREFIX}trigger_reason": self.reason[:1000],
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["causes"] = list(self.causes)
        d["evidence"] = json.loads(json.dumps(self.evidence, default=str))
        return d


@dataclass(frozen=True)
class PolicyState:
    model_name: str
    revision: int = 0
    drift_reference: str | None = None  # the version whose reference the streaks measure
    last_drift_window_end: str | None = None
    drift_streaks: Mapping[str, int] = field(default_factory=dict)
    labels_since_retrain: int = 0
    counted_labels: Mapping[str, int] = field(default_factory=dict)  # window key -> counted
    active: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # cause key -> info
    fired: Mapping[str, str] = field(default_factory=dict)  # cause key -> trigger time
    alerted: Mapping[str, str] = field(default_factory=dict)  # cause key -> alert time
    triggers: tuple[Mapping[str, Any], ...] = ()
    suppressed: tuple[Mapping[str, Any], ...] = ()
    updated_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = STATE_SCHEMA
        d["triggers"] = list(self.triggers)
        d["suppressed"] = list(self.suppressed)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PolicyState:
        try:
            return cls(
                model_name=str(d["model_name"]),
                revision=int(d.get("revision", 0)),
                drift_reference=d.get("drift_reference"),
                last_drift_window_end=d.get("last_drift_window_end"),
                drift_streaks={str(k): int(v) for k, v in d.get("drift_streaks", {}).items()},
                labels_since_retrain=int(d.get("labels_since_retrain", 0)),
                counted_labels={str(k): int(v) for k, v in d.get("counted_labels", {}).items()},
                active=dict(d.get("active", {})),
                fired=dict(d.get("fired", {})),
                alerted=dict(d.get("alerted", {})),
                triggers=tuple(d.get("triggers", ())),
                suppressed=tuple(d.get("suppressed", ())),
                updated_at=str(d.get("updated_at", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed retraining policy state: {exc!r}") from exc


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds")


def _parse(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


def _active_causes(
    policy: RetrainPolicy,
    result: MonitoringResult,
    streaks: Mapping[str, int],
    labels_since: int,
) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Active cause key -> info, and cause kinds that were judged (to re-arm cleared causes)."""
    active: dict[str, dict[str, Any]] = {}
    judged: set[str] = set()
    primary = result.primary_version
    vm = result.version(primary)
    if policy.degradation and vm is not None and vm.baseline:
        degr: list[Degradation] = degraded_metrics(
            vm.metrics,
            vm.baseline,
            margins=policy.degradation_margins,
            alpha=policy.degradation_alpha,
            min_labels=policy.min_labels,
        )
        if any(m in vm.metrics and vm.metrics[m].n >= policy.min_labels for m in vm.baseline):
            judged.add("degradation")
        if degr:
            active[f"degradation@{primary}"] = {
                "cause": "degradation",
                "reason": f"label-confirmed degradation of version {primary}: "
                + "; ".join(d.describe() for d in degr),
                "evidence": {
                    "version": primary,
                    "degraded": [d.to_dict() for d in degr],
                    "n_labeled": vm.n_labeled,
                },
            }
    if policy.drift and primary is not None:
        fd = result.feature_drift
        if fd is not None and fd.judged:
            judged.add("drift")
        sustained = {k: n for k, n in streaks.items() if n >= policy.drift_windows}
        if sustained:
            rows = {r.get("feature"): r for r in (fd.rows if fd else ())}
            feats = sorted(sustained, key=lambda k: (-sustained[k], k))
            names = [("prediction distribution" if f == PREDICTION else f) for f in feats]
            active[f"drift@{primary}"] = {
                "cause": "drift",
                "reason": f"drift sustained for >= {policy.drift_windows} windows in "
                f"{', '.join(names)} (reference: training data of version {primary})",
                "evidence": {
                    "version": primary,
                    "streaks": {f: sustained[f] for f in feats},
                    "latest": [rows[f] for f in feats if f in rows],
                },
            }
    if policy.min_new_labels is not None:
        judged.add("new_data")
        if labels_since >= policy.min_new_labels:
            active["new_data"] = {
                "cause": "new_data",
                "reason": f"{labels_since} new labelled rows since the last retrain "
                f"(threshold {policy.min_new_labels})",
                "evidence": {"labels_since_retrain": labels_since},
            }
    return active, judged


def evaluate(
    policy: RetrainPolicy,
    state: PolicyState,
    results: Sequence[MonitoringResult],
    now: dt.datetime,
) -> tuple[list[RetrainTrigger], PolicyState]:
    """Fold monitoring results into the state; return the retrains to request.

    Results may repeat windows (a sensor tick re-reading them) or recompute an
    old window with more labels: drift streaks move only on windows newer than
    any seen, labels are counted once per labelled row, and a cause fires once.
    """
    now = now.astimezone(dt.UTC) if now.tzinfo else now.replace(tzinfo=dt.UTC)
    streaks = dict(state.drift_streaks)
    counted = dict(state.counted_labels)
    labels_since = state.labels_since_retrain
    fired = dict(state.fired)
    active_all: dict[str, Mapping[str, Any]] = {}
    triggers_hist = list(state.triggers)
    suppressed_hist = list(state.suppressed)
    drift_ref = state.drift_reference
    last_end = _parse(state.last_drift_window_end) if state.last_drift_window_end else None
    decisions: list[RetrainTrigger] = []

    for result in sorted(results, key=lambda r: (r.end, r.as_of)):
        if result.model_name != state.model_name:
            raise ValueError(
                f"result for model {result.model_name!r} "
                f"given to the policy of {state.model_name!r}"
            )
        primary = result.primary_version
        # -- drift streaks (once per window, in time order) --------------------------
        # Only windows newer than any seen move the streaks: callers pass the recent
        # history on every tick, and replaying an old window must not reset them.
        if last_end is None or result.end > last_end:
            if primary is not None and primary != drift_ref:
                # Another version serves: its reference is its own training data; old
                # streaks no longer apply.
                streaks = {}
                drift_ref = primary
            fd = result.feature_drift
            if fd is not None and fd.judged:
                flagged = set(fd.drifted)
                seen = {str(r["feature"]) for r in fd.rows if r.get("feature")}
                for f in (seen | flagged | set(streaks)) - {PREDICTION}:
                    streaks[f] = streaks.get(f, 0) + 1 if f in flagged else 0
            vm = result.version(primary)
            if policy.prediction_drift and vm is not None and vm.prediction_drift is not None:
                pdr = vm.prediction_drift
                if pdr.judged:
                    streaks[PREDICTION] = streaks.get(PREDICTION, 0) + 1 if pdr.drifted else 0
            streaks = {k: v for k, v in streaks.items() if v > 0}
            last_end = result.end
        # -- new labelled rows (counted once even if the window is recomputed) --------
        n_lab = sum(v.n_labeled for v in result.versions if set(v.tracks) - {"shadow"})
        key = result.window_key
        delta = max(0, n_lab - counted.get(key, 0))
        counted[key] = max(n_lab, counted.get(key, 0))
        labels_since += delta

        active, judged = _active_causes(policy, result, streaks, labels_since)
        # re-arm answered causes whose condition has cleared in a judged window
        for ck in list(fired):
            kind = ck.split("@", 1)[0]
            if ck not in active and kind in judged:
                del fired[ck]
        active_all.update(active)
        for ck in list(active_all):
            if ck not in active and ck.split("@", 1)[0] in judged:
                del active_all[ck]
        pending = {k: v for k, v in active.items() if k not in fired}
        if not pending:
            continue
        ordered = sorted(pending, key=lambda k: CAUSE_PRIORITY.index(pending[k]["cause"]))
        head = pending[ordered[0]]
        guard = _guard(policy, triggers_hist, now)
        if guard is not None:
            entry = {
                "at": _iso(now),
                "window": key,
                "causes": ordered,
                "suppressed_by": guard,
                "reason": head["reason"],
            }
            if not suppressed_hist or {
                k: v for k, v in suppressed_hist[-1].items() if k != "at"
            } != {k: v for k, v in entry.items() if k != "at"}:
                suppressed_hist.append(entry)
            continue
        reason = " | ".join(pending[k]["reason"] for k in ordered)
        trig_id = hashlib.sha256(
            f"{state.model_name}|{','.join(ordered)}|{key}|{_iso(now)}".encode()
        ).hexdigest()[:16]
        trigger = RetrainTrigger(
            trigger_id=trig_id,
            model_name=state.model_name,
            cause=str(head["cause"]),
            causes=tuple(ordered),
            reason=reason,
            evidence={k: pending[k]["evidence"] for k in ordered},
            window=key,
            at=_iso(now),
        )
        decisions.append(trigger)
        triggers_hist.append(trigger.to_dict())
        for k in ordered:
            fired[k] = _iso(now)
        labels_since = 0

    if len(counted) > LABEL_WINDOWS_KEPT:
        counted = dict(sorted(counted.items())[-LABEL_WINDOWS_KEPT:])
    new_state = replace(
        state,
        revision=state.revision + 1,
        drift_reference=drift_ref,
        last_drift_window_end=last_end.isoformat() if last_end else None,
        drift_streaks=streaks,
        labels_since_retrain=labels_since,
        counted_labels=counted,
        active={k: dict(v) for k, v in active_all.items()} if results else dict(state.active),
        fired=fired,
        triggers=tuple(triggers_hist[-HISTORY_KEPT:]),
        suppressed=tuple(suppressed_hist[-HISTORY_KEPT:]),
        updated_at=_iso(now),
    )
    return decisions, new_state


def _guard(
    policy: RetrainPolicy, history: Sequence[Mapping[str, Any]], now: dt.datetime
) -> str | None:
    """Why a retrain may not start now (cool-down, budget), or None."""
    times = [_parse(t["at"]) for t in history if t.get("at")]
    if times:
        last = max(times)
        if now - last < policy.cooldown:
            return f"cooldown until {_iso(last + policy.cooldown)}"
    day = [t for t in times if now - t < dt.timedelta(days=1)]
    if len(day) >= policy.max_per_day:
        return f"budget: {len(day)} retrains in the last 24 h (max {policy.max_per_day})"
    return None


# -- persistence and side effects -------------------------------------------------------


def policy_state_path(home: Home, model_name: str) -> Path:
    return home.monitoring / model_name / "policy_state.json"


def load_state(home: Home, model_name: str) -> PolicyState:
    """The persisted state, or a fresh one. A corrupt file is an error, never silently reset."""
    path = policy_state_path(home, model_name)
    if not path.exists():
        return PolicyState(model_name=model_name)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read retraining policy state {path}: {exc}") from exc
    return PolicyState.from_dict(raw)


def save_state(home: Home, state: PolicyState) -> None:
    atomic_write_json(policy_state_path(home, state.model_name), state.to_dict())


def run_policy(
    home: Home,
    model_name: str,
    policy: RetrainPolicy,
    results: Sequence[MonitoringResult],
    now: dt.datetime | None = None,
    *,
    alert: bool = True,
) -> tuple[list[RetrainTrigger], PolicyState]:
    """Load the state, evaluate, persist atomically, and alert on new alarm causes.

    Degradation and sustained drift alert once per cause (also when a cool-down
    or the budget holds the retrain back); the alert is re-armed when the cause
    clears. Alerts go through ``platform.alerts.send_alert`` (never raises).
    """
    now = now or dt.datetime.now(dt.UTC)
    state = load_state(home, model_name)
    decisions, new_state = evaluate(policy, state, results, now)
    alerted = {k: v for k, v in new_state.alerted.items() if k in new_state.active}
    to_alert = [k for k in new_state.active if k not in alerted and not k.startswith("new_data")]
    for k in to_alert:
        alerted[k] = _iso(now)
    new_state = replace(new_state, alerted=alerted)
    save_state(home, new_state)
    if alert and to_alert:
        from mlcicd_dagster.platform.alerts import send_alert

        by_cause = {c: t for t in decisions for c in t.causes}
        for k in to_alert:
            info = new_state.active[k]
            trig = by_cause.get(k)
            last_supp = new_state.suppressed[-1] if new_state.suppressed else {}
            action = (
                f"retrain requested (trigger {trig.trigger_id})"
                if trig
                else f"retrain held back: {last_supp.get('suppressed_by', 'already answered')}"
            )
            send_alert(
                home,
                f"monitoring_{info['cause']}",
                f"{model_name}: {info['cause']} ({k})",
                {"reason": info["reason"], "action": action, "evidence": info["evidence"]},
            )
    return decisions, new_state
