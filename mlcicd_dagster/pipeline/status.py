"""``mlcicd status``: what serves, the last gates, quarantine, monitoring, tracking URI.

Never crashes, never hangs: each backend (MLflow registry, Dagster instance) is asked
in a worker thread with a deadline (``BACKEND_TIMEOUT_S``); one that fails or does not
answer in time is named under ``backends`` and its part says so, the rest is reported.
An unreadable deployment state falls back to its last good copy (and says so).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import dagster as dg

from mlcicd_dagster.pipeline import records
from mlcicd_dagster.pipeline.factory import PipelineDefs
from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.rollout.state import (
    DeploymentState,
    DeploymentStateError,
    read_state,
    state_is_corrupt,
)

BACKEND_TIMEOUT_S = 5.0  # per backend; `status` answers within seconds when one is down
T = TypeVar("T")


class BackendDown(RuntimeError):
    def __init__(self, backend: str, why: str) -> None:
        super().__init__(f"{backend}: {why}")
        self.backend = backend
        self.why = why


def bounded(backend: str, fn: Callable[[], T], timeout_s: float = BACKEND_TIMEOUT_S) -> T:
    """``fn()`` in a daemon thread; ``BackendDown`` naming ``backend`` on error or timeout."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported, never raised raw
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True, name=f"status-{backend}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise BackendDown(backend, f"no answer within {timeout_s:g} s")
    if "error" in box:
        exc = box["error"]
        raise BackendDown(backend, f"{type(exc).__name__}: {str(exc)[:300]}")
    return box["value"]  # type: ignore[no-any-return]


def collect_status(
    p: PipelineDefs,
    instance: dg.DagsterInstance | None = None,
    backends: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec = p.spec
    home = Home.from_env()
    backends = {} if backends is None else backends
    state_path = home.deployment_state(spec.model_name)
    try:
        state = read_state(state_path, spec.model_name)
        corrupt = state_is_corrupt(state_path, spec.model_name)
        backends["deployment_state"] = (
            f"unreadable ({corrupt}); showing its last good copy" if corrupt else "ok"
        )
    except DeploymentStateError as exc:
        state = DeploymentState(model_name=spec.model_name)
        backends["deployment_state"] = f"unreadable, no good copy: {exc}"
    deployment = {
        "model_name": spec.model_name,
        "revision": state.revision,
        "strategy": state.strategy,
        "state": state.phase,
        "stable": _ref(state.stable),
        "canary": _ref(state.canary),
        "shadow": _ref(state.shadow),
        "previous": _ref(state.previous),
        "weights": state.weights(),
        "updated_at": state.updated_at,
        "last_events": list(state.history[-5:]),
    }
    deployment["rollout"] = _rollout_progress(state, state_path)
    deployment["alias_mismatches"] = _alias_mismatches(state, home, backends)
    candidate = records.read_candidate(home, spec)
    gates = records.read_gates(home, spec, candidate["version"]) if candidate else {}
    mon_dir = records.monitoring_dir(home, spec)
    return {
        "home": str(home.root),
        "mlflow_tracking_uri": home.tracking_uri,
        "deployment": deployment,
        "last_candidate": candidate,
        "gates": {
            name: {k: r.get(k) for k in ("passed", "summary", "severity")}
            for name, r in gates.items()
        },
        "quarantine": _quarantined(home, spec.dataset),
        "revoked": _revoked(p, home),
        "monitoring": {
            "latest": records.read_json(mon_dir / "latest.json"),
            "retraining_triggers": records.read_jsonl(mon_dir / "triggers.jsonl", last=10),
        },
        "runs": _runs(instance, backends),
        "backends": backends,
    }


def _rollout_progress(state: DeploymentState, state_path: Any) -> dict[str, Any] | None:
    """What the rollout in flight waits for, from the controller's last tick."""
    from mlcicd_dagster.rollout.controller import read_progress
    from mlcicd_dagster.rollout.strategies import IN_FLIGHT

    if state.phase not in IN_FLIGHT:
        return None
    last = read_progress(state_path) or {}
    info = state.rollout or {}
    waiting = last.get("message") if last.get("rollout_id") == info.get("id") else None
    return {
        "id": info.get("id"),
        "candidate": info.get("candidate"),
        "step": info.get("step"),
        "started_at": info.get("started_at"),
        "waiting_for": waiting or "the rollout controller's first tick",
        "last_tick_at": last.get("at"),
        "progress": last.get("progress") if waiting else None,
    }


def _runs(instance: dg.DagsterInstance | None, backends: dict[str, str]) -> list[dict[str, Any]]:
    if instance is None:
        return []
    try:
        runs = bounded("dagster", lambda: _recent_runs(instance))
    except BackendDown as exc:
        backends["dagster"] = exc.why
        return []
    backends["dagster"] = "ok"
    return runs


def _ref(ref: Any) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {"version": ref.version, "model_uri": ref.model_uri, "weight": ref.weight}


def _alias_mismatches(state: Any, home: Home, backends: dict[str, str]) -> list[str]:
    if state.stable is None and state.canary is None:
        return []

    def ask() -> list[str]:
        from mlcicd_dagster.models.registry import client
        from mlcicd_dagster.rollout.registry import alias_mismatches

        return alias_mismatches(state, client(home.tracking_uri))

    try:
        out = bounded("mlflow", ask)
    except BackendDown as exc:  # status must report, not crash or hang
        backends["mlflow"] = f"{exc.why} ({home.tracking_uri})"
        return []
    backends["mlflow"] = "ok"
    return out


def _quarantined(home: Home, dataset: str) -> list[dict[str, Any]]:
    """Quarantined batches and refusals, newest first (the data gate's own listing)."""
    from mlcicd_dagster.data.quarantine import list_quarantined

    return [
        {
            "file": rec.get("file"),
            "summary": rec.get("summary") or rec.get("reason") or rec.get("kind"),
            "quarantined_at": rec.get("quarantined_at"),
        }
        for rec in list_quarantined(home.quarantine(dataset))
    ]


def _revoked(p: PipelineDefs, home: Home) -> list[dict[str, Any]]:
    from mlcicd_dagster.pipeline.revocation import revoked_batches

    try:
        return revoked_batches(p.spec, home)
    except Exception as exc:  # status must report, not crash
        return [{"batch": "?", "reason": f"could not read the lake's revocations: {exc}"}]


def _recent_runs(instance: dg.DagsterInstance, limit: int = 10) -> list[dict[str, Any]]:
    out = []
    for run in instance.get_runs(limit=limit):
        out.append(
            {
                "run_id": run.run_id,
                "job": run.job_name,
                "status": run.status.value,
                "partition": run.tags.get("dagster/partition"),
                "trigger": run.tags.get("mlcicd/trigger"),
                "reason": run.tags.get("mlcicd/retrain_reason"),
            }
        )
    return out


def print_status(status: dict[str, Any]) -> None:
    d = status["deployment"]
    print(f"MLflow tracking URI: {status['mlflow_tracking_uri']}")
    print(f"Home:                {status['home']}")
    stable = d["stable"]["version"] if d["stable"] else "-"
    canary = f"{d['canary']['version']} ({d['weights']['canary']:.0%})" if d["canary"] else "-"
    shadow = d["shadow"]["version"] if d["shadow"] else "-"
    print(f"Deployment of {d['model_name']}: revision {d['revision']}, strategy {d['strategy']}")
    print(f"  state {d['state']}; stable v{stable}; canary {canary}; shadow {shadow}")
    if d.get("rollout"):
        print(f"  rollout {d['rollout']['id']}: {d['rollout']['waiting_for']}")
    for m in d["alias_mismatches"]:
        print(f"  ALIAS MISMATCH: {m}")
    for backend, health in status.get("backends", {}).items():
        if health != "ok":
            print(f"  BACKEND {backend}: {health}")
    if status["gates"]:
        cand = status["last_candidate"] or {}
        print(f"Gates of the last candidate (v{cand.get('version', '?')}):")
        for name, g in status["gates"].items():
            verdict = "pass" if g.get("passed") else "FAIL"
            print(f"  {name:<18} {verdict:<5} {g.get('summary') or ''}")
    print(f"Quarantined batches: {len(status['quarantine'])}")
    for q in status["quarantine"][:10]:
        print(f"  {q['file']}: {q['summary']}")
    revoked = status.get("revoked") or []
    print(f"Revoked batches: {len(revoked)}")
    for r in revoked:
        print(f"  {r['batch']}: by {r.get('by')} at {r.get('at')}: {r.get('reason')}")
    mon = status["monitoring"]
    if mon["latest"]:
        print(f"Monitoring: {mon['latest'].get('summary', mon['latest'].get('window'))}")
    for t in mon["retraining_triggers"][-5:]:
        print(f"  retrain trigger {t.get('at')}: {t.get('cause')} - {t.get('reason')}")
