"""Where monitoring results live between runs: one JSON per window under ``Home.monitoring``.

The ``monitoring`` asset saves each window's result; the retraining sensor reads the
recent ones back for the policy; ``mlcicd status --json`` shows :func:`monitoring_status`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlcicd_dagster.monitoring.policy import load_state
from mlcicd_dagster.monitoring.result import MonitoringResult
from mlcicd_dagster.platform.atomic import atomic_write_json
from mlcicd_dagster.platform.home import Home

STATUS_TRIGGERS_SHOWN = 10


def results_dir(home: Home, model_name: str) -> Path:
    return home.monitoring / model_name / "windows"


def save_result(home: Home, result: MonitoringResult) -> Path:
    """Write (atomically, replacing a previous computation of the same window)."""
    path = results_dir(home, result.model_name) / f"{result.window_key}.json"
    atomic_write_json(path, result.to_dict())
    return path


def load_results(home: Home, model_name: str, last: int | None = None) -> list[MonitoringResult]:
    """Saved results in window order (the ``last`` most recent when given)."""
    folder = results_dir(home, model_name)
    if not folder.is_dir():
        return []
    paths = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    if last is not None:
        paths = paths[-last:] if last > 0 else []
    out = []
    for p in paths:
        try:
            out.append(MonitoringResult.from_dict(json.loads(p.read_text())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"cannot read monitoring result {p}: {exc}") from exc
    return out


def monitoring_status(home: Home, model_name: str) -> dict[str, Any]:
    """The ``monitoring`` part of ``mlcicd status --json``: latest window, retrains and why."""
    latest = load_results(home, model_name, last=1)
    state = load_state(home, model_name)
    return {
        "latest": latest[0].to_dict() if latest else None,
        "retraining": {
            "triggers": list(state.triggers[-STATUS_TRIGGERS_SHOWN:]),
            "suppressed": list(state.suppressed[-STATUS_TRIGGERS_SHOWN:]),
            "active_causes": {k: v.get("reason") for k, v in state.active.items()},
            "drift_streaks": dict(state.drift_streaks),
            "labels_since_retrain": state.labels_since_retrain,
            "updated_at": state.updated_at,
        },
    }
