"""``mlcicd status``: what serves, the last gates, quarantine, monitoring, tracking URI."""

from __future__ import annotations

from typing import Any

import dagster as dg

from mlcicd_dagster.pipeline import records
from mlcicd_dagster.pipeline.factory import PipelineDefs
from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.rollout.state import read_state


def collect_status(p: PipelineDefs, instance: dg.DagsterInstance | None = None) -> dict[str, Any]:
    spec = p.spec
    home = Home.from_env()
    state = read_state(home.deployment_state(spec.model_name), spec.model_name)
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
    deployment["alias_mismatches"] = _alias_mismatches(state, home)
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
        "runs": _recent_runs(instance) if instance is not None else [],
    }


def _ref(ref: Any) -> dict[str, Any] | None:
    if ref is None:
        return None
    return {"version": ref.version, "model_uri": ref.model_uri, "weight": ref.weight}


def _alias_mismatches(state: Any, home: Home) -> list[str]:
    if state.stable is None and state.canary is None:
        return []
    try:
        from mlcicd_dagster.models.registry import client
        from mlcicd_dagster.rollout.registry import alias_mismatches

        return alias_mismatches(state, client(home.tracking_uri))
    except Exception as exc:  # status must report, not crash
        return [f"could not read registry aliases: {exc}"]


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
    for m in d["alias_mismatches"]:
        print(f"  ALIAS MISMATCH: {m}")
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
