"""The deploy ops' bodies (called by the graph-backed ``deployment`` asset).

prepare: pick the version to roll out: the last candidate the model gates passed,
  or an explicitly named version (an operator's hotfix: rolled out with the canary
  as its only judge).
execute: *stage* it and return (``rollout.controller.begin``): blue-green the first
  time (nothing to compare a canary with) and switches at once; a canary is left at
  its first traffic step and a shadow mirroring traffic, for the rollout controller
  sensor (``pipeline.rollout_controller``) to finish tick by tick. No run waits for
  traffic.
record: keep the outcome for the deployment checks and ``mlcicd status``.
"""

from __future__ import annotations

from logging import Logger
from typing import Any

import dagster as dg

from mlcicd_dagster import settings
from mlcicd_dagster.pipeline import records
from mlcicd_dagster.pipeline.deploy_config import DECISION_CHECKS, RolloutConfig
from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.resources import MlcicdResource

SMOKE_ROWS = 64  # golden rows scored on the new track before any traffic moves
# Environment overrides of the canary's timing (the demo and tests cannot wait minutes).
CANARY_ENV = {
    "check_interval_s": "MLCICD_CANARY_CHECK_INTERVAL_S",
    "step_min_duration_s": "MLCICD_CANARY_STEP_MIN_DURATION_S",
    "step_min_samples": "MLCICD_CANARY_STEP_MIN_SAMPLES",
    "max_duration_s": "MLCICD_CANARY_MAX_DURATION_S",
}
STEPS_ENV = "MLCICD_CANARY_STEPS"  # e.g. "0.3,0.6": traffic steps instead of the spec's


def make_target(spec: PipelineSpec, mlcicd: MlcicdResource, deploy_target: Any = None) -> Any:
    """The pipeline's deploy target, from the ``deploy_target`` resource (default: the one
    the environments table gives this ``MLCICD_ENV``)."""
    if deploy_target is None:
        from mlcicd_dagster.platform.environments import current_environment

        deploy_target = current_environment().resources()["deploy_target"]
    return deploy_target.target(spec, mlcicd)


def _client(mlcicd: MlcicdResource) -> Any:
    from mlcicd_dagster.models.registry import client

    return client(mlcicd.setup_mlflow())


def prepare(
    spec: PipelineSpec,
    mlcicd: MlcicdResource,
    config: RolloutConfig,
    log: Logger,
    deploy_target: Any = None,
):
    # An interrupted rollout is the controller's to finish or revert, not this step's.
    target, client = make_target(spec, mlcicd, deploy_target), _client(mlcicd)
    state = target.read_state()
    plan: dict[str, Any] = {"forced": bool(config.version)}
    if config.version:
        mv = client.get_model_version(spec.model_name, config.version)
        version, run_id = str(mv.version), mv.run_id
    else:
        cand = records.read_candidate(mlcicd.home, spec)
        if not cand:
            return {**plan, "action": "none", "why": "no candidate model yet"}
        version, run_id = str(cand["version"]), cand.get("run_id")
        tags = client.get_model_version(spec.model_name, version).tags
        if tags.get("gates.decision") != "PASS":
            still = f"v{state.stable.version}" if state.stable is not None else "nothing"
            why = (
                f"v{version} rejected by the model gates ({tags.get('gates.failed')}); "
                f"still serving {still}"
            )
            return {**plan, "action": "none", "rejected": version, "why": why}
    if state.stable is not None and state.stable.version == version:
        return {**plan, "action": "none", "why": f"v{version} already serves as stable"}
    inflight = state.canary or state.shadow
    # (a *staged* one's stager died: ``begin`` reverts it and stages it afresh)
    if inflight is not None and inflight.version == version and state.phase != "staged":
        why = f"v{version} is already rolling out ({state.phase}); the rollout controller has it"
        return {**plan, "action": "none", "why": why}
    strategy = config.strategy or spec.rollout.strategy
    if state.stable is None:
        strategy = "blue_green"
    return {
        **plan,
        "action": "deploy",
        "version": version,
        "run_id": run_id,
        "model_uri": f"models:/{spec.model_name}/{version}",
        "strategy": strategy,
    }


def label_scale(spec: PipelineSpec, registry: Any, run_id: str | None) -> float | None:
    """A regression candidate's holdout MAE, logged at training: the unit of its canary's
    margin (None for classifiers, or when the run cannot be read)."""
    if spec.task != "regression" or not run_id or registry is None:
        return None
    try:
        value = registry.get_run(run_id).data.metrics.get("holdout_mae")
    except Exception:  # noqa: BLE001 - no scale: the analysis waits, then rolls back
        return None
    return float(value) if value else None


def analysis_config(spec: PipelineSpec, label_scale: float | None = None) -> Any:
    """The sequential analysis a canary or shadow of this pipeline runs: the task's
    metrics and the pipeline's error rates (``rollout.alpha_rollback``/``alpha_promote``).
    ``label_scale``: a regression candidate's holdout MAE (the margin's unit); without it
    a regression has no primary metric it can measure, so it waits, then rolls back."""
    from mlcicd_dagster.rollout import analysis as an

    metrics = an.DEFAULT_METRICS
    if spec.task == "regression" and label_scale:
        metrics = an.metrics_for_task(spec.task, label_scale)
    return an.AnalysisConfig(
        metrics=metrics,
        alpha_rollback=spec.rollout.alpha_rollback,
        alpha_promote=spec.rollout.alpha_promote,
    )


def canary_config(spec: PipelineSpec, label_scale: float | None = None) -> Any:
    """``label_scale``: a regression candidate's holdout MAE (the margin's unit)."""
    from mlcicd_dagster.rollout.strategies import CanaryConfig

    raw_steps = settings.get(STEPS_ENV)
    declared = (
        tuple(float(w) for w in raw_steps.split(",")) if raw_steps else spec.rollout.canary_steps
    )
    steps = tuple(w for w in declared if w < 1.0)
    values: dict[str, Any] = {
        "max_duration_s": spec.rollout.max_duration_s,
        "analysis": analysis_config(spec, label_scale),
    }
    for field, env in CANARY_ENV.items():
        if settings.get(env) is not None:
            if field == "step_min_samples":
                values[field] = settings.get_int(env, 0)
            else:
                values[field] = settings.get_float(env, 0.0)
    return CanaryConfig(steps=steps, **values)


def shadow_config(spec: PipelineSpec, label_scale: float | None = None) -> Any:
    from mlcicd_dagster.rollout.strategies import ShadowConfig

    values: dict[str, Any] = {
        "max_duration_s": spec.rollout.max_duration_s,
        "analysis": analysis_config(spec, label_scale),
    }
    for field in ("check_interval_s", "max_duration_s"):
        if settings.get(CANARY_ENV[field]) is not None:
            values[field] = settings.get_float(CANARY_ENV[field], 0.0)
    return ShadowConfig(fraction=spec.rollout.shadow_fraction, **values)


def execute_rollout(
    spec: PipelineSpec,
    mlcicd: MlcicdResource,
    plan: dict,
    run_id: str,
    log: Logger,
    deploy_target: Any = None,
) -> dict[str, Any]:
    if plan.get("action") != "deploy":
        log.info(f"nothing to roll out: {plan.get('why')}")
        return {"outcome": "unchanged", "plan": plan, "decisions": []}
    import pandas as pd

    from mlcicd_dagster.models.loading import load_predictor
    from mlcicd_dagster.rollout import controller
    from mlcicd_dagster.rollout.state import ModelRef

    target, client = make_target(spec, mlcicd, deploy_target), _client(mlcicd)
    candidate = ModelRef(
        version=plan["version"], model_uri=plan["model_uri"], run_id=plan["run_id"]
    )
    # the model's columns in its order: MLflow takes a tensor (torch) model's by position
    smoke_rows = pd.read_csv(spec.golden_path).head(SMOKE_ROWS)[list(spec.features)]
    from mlcicd_dagster.models.tasks import one_score_per_row

    expected = one_score_per_row(
        load_predictor(plan["model_uri"], tracking_uri=mlcicd.mlflow_uri).predict(smoke_rows)
    )
    strategy = plan["strategy"]
    log.info(f"staging v{candidate.version} ({strategy})")
    result = controller.begin(
        target,
        candidate,
        strategy,
        canary_config=canary_config(spec),
        shadow_config=shadow_config(spec),
        smoke_rows=smoke_rows,
        expected_scores=expected,
        registry=client,
    )
    out = result.to_dict()
    out["plan"] = plan
    out["dagster_run_id"] = run_id
    return out


def record(spec: PipelineSpec, mlcicd: MlcicdResource, outcome: dict, log: Logger) -> dict:
    from mlcicd_dagster.platform.atomic import atomic_write_json
    from mlcicd_dagster.rollout.state import read_state

    home = mlcicd.home
    state = read_state(home.deployment_state(spec.model_name), spec.model_name)
    rejected = (outcome.get("plan") or {}).get("rejected")
    summary = {
        # a gate's rejection is an outcome of its own: the champion still serves
        "outcome": "rejected" if rejected else outcome.get("outcome"),
        "version": (outcome.get("plan") or {}).get("version"),
        "strategy": (outcome.get("plan") or {}).get("strategy"),
        "why": (outcome.get("plan") or {}).get("why"),
        "decisions": outcome.get("decisions", []),
        "serving": state.serving_versions(),
        "revision": state.revision,
    }
    summary["rollout_id"] = outcome.get("rollout_id")
    if summary["outcome"] == "in_progress":
        summary["why"] = (
            f"{summary['strategy']} of v{summary['version']} staged; the rollout controller "
            "sensor moves it on as evidence arrives (`mlcicd status` says what it waits for)"
        )
    if (
        summary["outcome"] not in ("unchanged", "rejected")
        or not last_rollout_path(spec, mlcicd.home).exists()
    ):
        atomic_write_json(last_rollout_path(spec, mlcicd.home), summary)
    if summary["outcome"] == "rolled_back":
        from mlcicd_dagster.platform.alerts import send_alert

        send_alert(
            home,
            "rollout_rolled_back",
            f"{spec.model_name} v{summary['version']} rolled back",
            {k: summary[k] for k in ("version", "strategy", "decisions")},
        )
    log.info(f"rollout outcome: {summary['outcome']}; serving {summary['serving']}")
    summary["metadata"] = {
        "outcome": str(summary["outcome"]),
        "serving": dg.MetadataValue.json(summary["serving"]),
        "revision": state.revision,
        "decisions": _decisions_table(summary["decisions"]),
    }
    if summary["why"]:
        summary["metadata"]["why"] = str(summary["why"])
    if rejected:
        stable = state.stable.version if state.stable is not None else None
        summary["metadata"]["rejected_version"] = str(rejected)
        summary["metadata"]["still_serving"] = f"v{stable}" if stable else "nothing"
    return summary


def last_rollout_path(spec: PipelineSpec, home: Any) -> Any:
    return records.model_dir(home, spec) / "last_rollout.json"


def _decisions_table(decisions: list[dict]) -> dg.TableMetadataValue:
    cols = ["check", "passed", "verdict", "step", "statistic", "threshold", "reason"]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in cols])
    rows = [dg.TableRecord({c: _s(d.get(c)) for c in cols}) for d in decisions]
    return dg.MetadataValue.table(records=rows, schema=schema)


def _s(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)[:300]


def decision_checks(spec: PipelineSpec, mlcicd: MlcicdResource):
    """One check result per decision kind of the last rollout (absent kinds pass as n/a)."""
    last = records.read_json(last_rollout_path(spec, mlcicd.home)) or {}
    by_check: dict[str, list[dict]] = {}
    for d in last.get("decisions", []):
        by_check.setdefault(d["check"], []).append(d)
    for name in DECISION_CHECKS:
        ds = by_check.get(name, [])
        if not ds:
            yield dg.AssetCheckResult(
                check_name=name,
                passed=True,
                description=f"not part of the last rollout ({last.get('strategy') or 'none'})",
                metadata={"applicable": False},
            )
            continue
        final = ds[-1]
        severity = (
            dg.AssetCheckSeverity.WARN
            if last.get("outcome") == "rolled_back"
            else dg.AssetCheckSeverity.ERROR
        )
        yield dg.AssetCheckResult(
            check_name=name,
            passed=all(bool(d["passed"]) for d in ds),
            severity=severity,
            description=str(final.get("reason"))[:1000],
            metadata={
                "applicable": True,
                "verdict": str(final.get("verdict")),
                "version": str(final.get("version")),
                "decisions": _decisions_table(ds),
            },
        )


def alias_check(spec: PipelineSpec, mlcicd: MlcicdResource) -> dg.AssetCheckResult:
    from mlcicd_dagster.rollout.registry import alias_mismatches, expected_aliases
    from mlcicd_dagster.rollout.state import read_state

    state = read_state(mlcicd.home.deployment_state(spec.model_name), spec.model_name)
    mismatches = alias_mismatches(state, _client(mlcicd))
    return dg.AssetCheckResult(
        passed=not mismatches,
        description="; ".join(mismatches) or "aliases match what serves",
        metadata={"expected": dg.MetadataValue.json(expected_aliases(state))},
    )


def run_deploy_job(
    p: Any, defs: dg.Definitions, instance: dg.DagsterInstance, version: str, strategy: str = ""
):
    """Run the deploy job for one named version (what an operator does from the UI);
    ``strategy``: the spec's when empty."""
    from mlcicd_dagster.pipeline.orphans import process_tags

    job = defs.resolve_job_def(p.job_name("deploy"))
    op = f"{p.spec.dataset}__prepare_rollout"
    graph = dg.AssetKey(p.spec.key("deployment")).to_python_identifier()
    result = job.execute_in_process(
        instance=instance,
        run_config={
            "ops": {graph: {"ops": {op: {"config": {"version": version, "strategy": strategy}}}}},
            "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
        },
        tags={"mlcicd/trigger": "manual_deploy", "mlcicd/version": version, **process_tags()},
        raise_on_error=False,
    )
    return {"run_id": result.run_id, "status": "success" if result.success else "failure"}
