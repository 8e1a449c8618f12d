"""The rollout controller sensor's body: one reconciling tick of a pipeline's rollout.

The sensor runs under the daemon and in every ``mlcicd cycle`` (both call
``controller_tick``; the deployment lease makes them take turns). A tick never
launches a run and never waits for traffic: it moves the rollout at most one step
(``rollout.controller.tick``), keeps the last rollout's decisions for the
deployment checks and ``mlcicd status``, and alerts on a rollback.
"""

from __future__ import annotations

import logging
from typing import Any

from mlcicd_dagster.pipeline import records
from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.resources import MlcicdResource

log = logging.getLogger(__name__)


def controller_tick(spec: PipelineSpec, mlcicd: MlcicdResource, deploy_target: Any = None) -> Any:
    """Reconcile once; returns the ``TickReport``."""
    from mlcicd_dagster.pipeline.deploy_ops import (
        canary_config,
        label_scale,
        last_rollout_path,
        make_target,
        shadow_config,
    )
    from mlcicd_dagster.rollout import controller
    from mlcicd_dagster.rollout.evidence import LogEvidenceSource

    target = make_target(spec, mlcicd, deploy_target)
    try:
        from mlcicd_dagster.models.registry import client

        registry = client(mlcicd.setup_mlflow())
    except Exception as exc:  # noqa: BLE001 - traffic decisions go on; aliases next tick
        log.warning("registry unavailable for this tick: %r", exc)
        registry = None
    scale = None
    if spec.task == "regression":  # the analysis' margin is in the label's units
        state = target.read_state()
        candidate = state.canary or state.shadow
        scale = label_scale(spec, registry, candidate.run_id if candidate else None)
    report = controller.tick(
        target,
        evidence=LogEvidenceSource(mlcicd.home, spec.model_name, task=spec.task_type),
        canary_config=canary_config(spec, scale),
        shadow_config=shadow_config(spec, scale),
        registry=registry,
    )
    if report.decisions:
        _record(spec, mlcicd, report, last_rollout_path(spec, mlcicd.home))
    return report


def _record(spec: PipelineSpec, mlcicd: MlcicdResource, report: Any, path: Any) -> None:
    from mlcicd_dagster.platform.atomic import atomic_write_json

    rollout_id = report.result.rollout_id if report.result else None
    last = records.read_json(path) or {}
    if last.get("rollout_id") != rollout_id:
        last = {"rollout_id": rollout_id, "decisions": []}
    decisions = [*last.get("decisions", []), *(d.to_dict() for d in report.decisions)]
    cand = next((d.get("version") for d in reversed(decisions) if d.get("version")), None)
    last.update(
        outcome=report.outcome if report.outcome != "advanced" else "in_progress",
        version=last.get("version") or cand,
        strategy=last.get("strategy") or report.state.strategy,
        why=report.message,
        decisions=decisions,
        serving=report.state.serving_versions(),
        revision=report.state.revision,
    )
    atomic_write_json(path, last)
    if report.outcome in ("rolled_back", "reverted"):
        from mlcicd_dagster.platform.alerts import send_alert

        send_alert(
            mlcicd.home,
            "rollout_rolled_back",
            f"{spec.model_name} v{last.get('version')} {report.outcome.replace('_', ' ')}",
            {"message": report.message, "decisions": [d.to_dict() for d in report.decisions]},
        )
