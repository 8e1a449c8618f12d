"""Monitoring windows and the retraining policy (bodies of the monitoring asset and sensors).

The loop closes here: a window's results feed the policy; a trigger turns the
labelled production rows since the last export into a batch file in the landing
zone, so that retraining data goes through the same data gate as any landed
file (never a side door), and the ingest run of that batch carries the trigger's
cause and reason in its tags (see ``landing.landing_tick``).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from logging import Logger
from typing import TYPE_CHECKING, Any

import dagster as dg

from mlcicd_dagster.pipeline import records
from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.platform.resources import MlcicdResource

if TYPE_CHECKING:
    from mlcicd_dagster.pipeline.factory import PipelineDefs

BASELINE_METRICS = {
    "auc": "holdout_auc",
    "log_loss": "holdout_log_loss",
    "accuracy": "holdout_accuracy",
    "mae": "holdout_mae",
    "rmse": "holdout_rmse",
}
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _triggers_path(home: Home, spec: PipelineSpec):
    return records.monitoring_dir(home, spec) / "triggers.jsonl"


# -- the monitoring asset --------------------------------------------------------


def materialize_window(
    spec: PipelineSpec, mlcicd: MlcicdResource, window: Any, log: Logger
) -> Iterator[Any]:
    from mlcicd_dagster.monitoring.store import save_result
    from mlcicd_dagster.monitoring.window import compute_window
    from mlcicd_dagster.pipeline.data_gate import reference_profile
    from mlcicd_dagster.platform.atomic import atomic_write_json

    home = mlcicd.home
    uri = mlcicd.setup_mlflow()
    now = dt.datetime.now(dt.UTC)
    end = min(window.end, now)
    versions = _served_versions(home, spec)
    result = compute_window(
        home,
        spec.model_name,
        window.start,
        end,
        reference=reference_profile(spec, home),
        numeric=spec.numeric_features,
        categorical=spec.categorical_features,
        reference_predictions={
            v: _reference_scores(spec.model_name, spec.golden_path, uri, v) for v in versions
        },
        baseline={v: _baseline(spec.model_name, uri, v) for v in versions},
        task=spec.task_type,
    )
    save_result(home, result)
    summary = _summary(result)
    atomic_write_json(
        records.monitoring_dir(home, spec) / "latest.json",
        {"window": result.window_key, "summary": summary, "result": result.to_dict()},
    )
    log.info(summary)
    yield dg.MaterializeResult(metadata={**_metadata(result.to_metadata()), "summary": summary})
    for check in result.checks():
        yield dg.AssetCheckResult(
            check_name=check.name,
            passed=check.passed,
            severity=dg.AssetCheckSeverity(check.severity),
            description=check.description[:1000],
            metadata=_metadata(check.metadata),
        )


def _metadata(raw: Any) -> dict[str, Any]:
    """Dagster metadata from the library's: containers become JSON values."""
    import json

    out: dict[str, Any] = {}
    for k, v in dict(raw).items():
        if not isinstance(v, dg.MetadataValue) and isinstance(v, tuple | list | dict):
            out[k] = dg.MetadataValue.json(json.loads(json.dumps(v, default=str)))
        else:
            out[k] = v
    return out


def _summary(result: Any) -> str:
    d = result.to_dict()
    parts = [f"window {result.window_key}"]
    for v in result.versions:
        vd = v.to_dict() if hasattr(v, "to_dict") else {}
        parts.append(
            f"v{vd.get('version')}: {vd.get('n_predictions', vd.get('n', '?'))} predictions, "
            f"{vd.get('n_labeled', '?')} labelled"
        )
    fd = d.get("feature_drift") or {}
    if fd:
        parts.append(f"drifted features: {', '.join(fd.get('drifted', []) or []) or 'none'}")
    return "; ".join(parts)


def _served_versions(home: Home, spec: PipelineSpec) -> list[str]:
    from mlcicd_dagster.rollout.state import read_state

    state = read_state(home.deployment_state(spec.model_name), spec.model_name)
    return sorted({ref.version for ref in (state.stable, state.canary, state.shadow) if ref})


@functools.lru_cache(maxsize=16)
def _reference_scores(model_name: str, golden_path: Any, uri: str, version: str) -> Any:
    """The version's scores on the golden rows: the yardstick of prediction drift."""
    import pandas as pd

    from mlcicd_dagster.models.loading import load_predictor

    golden = pd.read_csv(golden_path)
    predictor = load_predictor(f"models:/{model_name}/{version}", tracking_uri=uri)
    from mlcicd_dagster.models.tasks import one_score_per_row

    out = predictor.predict(golden)
    if out.ndim == 2 and out.shape[1] > 2:  # multiclass: the class probabilities, as logged
        return out
    return one_score_per_row(out)  # one number per row, as the prediction log keeps it


@functools.lru_cache(maxsize=16)
def _baseline(model_name: str, uri: str, version: str) -> dict[str, float]:
    """The version's holdout metrics at training time (what 'degraded' is measured from)."""
    from mlcicd_dagster.models.registry import client as registry_client

    client = registry_client(uri)
    run_id = client.get_model_version(model_name, version).run_id
    metrics = client.get_run(run_id).data.metrics if run_id else {}
    return {k: float(metrics[m]) for k, m in BASELINE_METRICS.items() if m in metrics}


# -- the monitoring sensor ---------------------------------------------------------


def monitoring_tick(
    p: PipelineDefs, home: Home, context: dg.SensorEvaluationContext, now: dt.datetime
) -> dg.SensorResult | dg.SkipReason:
    """Request the last finished window once, if any traffic was served in it."""
    parts = p.monitoring_partitions
    last = parts.get_last_partition_window()  # the last *finished* window
    key = parts.get_partition_key_for_timestamp(last.start.timestamp()) if last else None
    if key is None or key == context.cursor:
        return dg.SkipReason("no newly finished monitoring window")
    window = parts.time_window_for_partition_key(key)
    if not _traffic_since(home.predictions(p.spec.model_name), window.start):
        return dg.SensorResult(cursor=key, skip_reason=f"no traffic in window {key}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"monitor-{key}",
                partition_key=key,
                tags={"mlcicd/trigger": "monitoring_window"},
            )
        ],
        cursor=key,
    )


def _traffic_since(folder: Any, start: dt.datetime) -> bool:
    if not folder.is_dir():
        return False
    floor = start.timestamp()
    return any(p.stat().st_mtime >= floor for p in folder.glob("part-*.parquet"))


# -- the retraining policy sensor --------------------------------------------------


def retrain_tick(
    p: PipelineDefs, home: Home, context: dg.SensorEvaluationContext, now: dt.datetime
) -> dg.SensorResult | dg.SkipReason:
    """Evaluate the policy on saved windows; a trigger exports labelled rows as a batch."""
    from mlcicd_dagster.monitoring.policy import RetrainPolicy, evaluate, load_state, save_state
    from mlcicd_dagster.monitoring.store import load_results

    spec = p.spec
    results = load_results(home, spec.model_name, last=24)
    if not results:
        return dg.SkipReason("no monitoring results yet")
    state = load_state(home, spec.model_name)
    triggers, new_state = evaluate(RetrainPolicy(), state, results, now)
    fired = [_act_on(spec, home, t, now) for t in triggers]
    save_state(home, new_state)  # after acting: a crash before this re-evaluates, not loses
    if not fired:
        return dg.SkipReason("no retraining cause active")
    return dg.SensorResult(
        skip_reason="labelled traffic exported as batches: the landing sensor ingests them "
        + ", ".join(f["batch_file"] or "(none)" for f in fired)
    )


def _act_on(spec: PipelineSpec, home: Home, trigger: Any, now: dt.datetime) -> dict[str, Any]:
    from mlcicd_dagster.monitoring.feedback_batch import export_feedback_batch
    from mlcicd_dagster.platform.alerts import send_alert

    path = _triggers_path(home, spec)
    previous = records.read_jsonl(path)
    since = max(
        (
            dt.datetime.fromisoformat(r["exported_until"])
            for r in previous
            if r.get("exported_until")
        ),
        default=EPOCH,
    )
    batch = export_feedback_batch(
        home,
        spec.model_name,
        spec.dataset,
        since,
        now,
        features=list(spec.features),
        label=spec.label,
        id_column=spec.id_column,
        dtypes=_dataset_dtypes(spec.golden_path),
        task=spec.task_type,
    )
    record = {
        "at": now.isoformat(),
        "trigger_id": trigger.trigger_id,
        "cause": trigger.cause,
        "reason": trigger.reason,
        "window": trigger.window,
        "batch_file": batch.path.name if batch.created and batch.path else None,
        "rows": batch.n_rows,
        "hard_examples": batch.n_hard,
        "exported_until": now.isoformat() if batch.created else None,
        "tags": trigger.run_tags(),
    }
    if not batch.created:
        record["deferred"] = f"no new labelled rows to retrain on ({batch.reason})"
    records.append_jsonl(path, record)
    send_alert(
        home,
        f"monitoring_{trigger.cause}",
        f"{spec.model_name}: retraining triggered ({trigger.cause})",
        {k: record[k] for k in ("reason", "window", "batch_file", "rows")},
    )
    return record


@functools.lru_cache(maxsize=4)
def _dataset_dtypes(golden_path: Any) -> dict[str, Any]:
    """The dataset's column types (from its golden rows): a feedback batch must match them,
    or the data gate rightly rejects integer codes that come back as floats."""
    import pandas as pd

    return pd.read_csv(golden_path, nrows=200).dtypes.to_dict()


def trigger_tags_for(home: Home, spec: PipelineSpec, file_name: str) -> dict[str, str]:
    """Tags of the retraining trigger that exported ``file_name`` (empty if none did)."""
    for rec in reversed(records.read_jsonl(_triggers_path(home, spec))):
        if rec.get("batch_file") == file_name:
            tags = {k: str(v)[:255] for k, v in (rec.get("tags") or {}).items()}
            tags["mlcicd/retrain_reason"] = str(rec.get("reason"))[:255]
            return tags
    return {}
