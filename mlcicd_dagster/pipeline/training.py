"""Coalesced training: one training on every batch that passed its data gate.

Each landed file gets its own ingest run (its data gate); training is not part of
it. The training sensor asks for one ``retrain`` run (training set -> model ->
gates -> deployment) once no data gate and no training is in flight, on exactly
the batches then in the lake minus the revoked ones. A burst of N files thus gets
N data gates, one training and one rollout, not N trainings in series.

A steady trickle of landings never starves training: once the oldest batch not yet
trained on has waited ``MLCICD_TRAINING_MAX_WAIT_S`` (600 s by default) the sensor
trains on the batches validated so far, even with data gates still running; the
batches those gates pass go into the next training.

The run key is a hash of the batches' *contents* and of the revocation history
(:meth:`Lake.content_key`): the same lake never trains twice (the daemon and
``mlcicd cycle`` both honour run keys), a copied home finds its keys already run,
and a revoke or a restore always asks for a new model.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from mlcicd_dagster import settings
from mlcicd_dagster.platform.home import Home

if TYPE_CHECKING:
    from mlcicd_dagster.pipeline.factory import PipelineDefs

RUN_KEY_TAG = "dagster/run_key"
MAX_WAIT_ENV = "MLCICD_TRAINING_MAX_WAIT_S"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def training_run_key(content_key: str) -> str:
    return f"train-{content_key[:24]}"


def _in_flight(instance: dg.DagsterInstance, job_name: str) -> int:
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1000
    )
    return len(runs)


def training_tick(
    p: PipelineDefs,
    home: Home,
    context: dg.SensorEvaluationContext,
    *,
    now: dt.datetime | None = None,
) -> dg.SensorResult | dg.SkipReason:
    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.pipeline.model_gate import waiting_for_rows

    spec = p.spec
    instance = context.instance
    lake = Lake(home.lake(spec.dataset))
    active = lake.active_keys()
    gates_in_flight = _in_flight(instance, p.job_name("ingest"))
    if gates_in_flight:
        max_wait = settings.get_float(MAX_WAIT_ENV, 600.0)
        waited = _waited_s(lake, active, now or dt.datetime.now(dt.UTC))
        if waited is None or waited < max_wait:
            since = "" if waited is None else f"; the oldest new batch waited {waited:.0f} s"
            return dg.SkipReason(
                f"waiting for {gates_in_flight} data gate run(s): then one training on all "
                f"batches (at most {max_wait:.0f} s{since})"
            )
    if not active:
        return dg.SkipReason("no validated batch to train on")
    run_key = training_run_key(lake.content_key(active))
    waiting = waiting_for_rows(spec, lambda: lake.read_validated(active))
    if waiting:
        return dg.SkipReason(waiting)
    if instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1):
        return dg.SkipReason(f"already trained on exactly these {len(active)} batch(es)")
    training_in_flight = _in_flight(instance, p.job_name("retrain"))
    if training_in_flight:
        return dg.SkipReason("a training is in flight: the next one waits for it")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run_key,
                job_name=p.job_name("retrain"),
                tags=_tags(p, home, lake, active),
            )
        ]
    )


def _waited_s(lake: object, active: list[str], now: dt.datetime) -> float | None:
    """Seconds since the oldest active batch that no training used yet was validated."""
    from mlcicd_dagster.data.lake import Lake

    assert isinstance(lake, Lake)
    trained = set(_trained_batches(lake))
    times = []
    for key in active:
        if key in trained:
            continue
        try:
            t = dt.datetime.fromisoformat(str(lake.batch_meta(key).get("written_at")))
        except (TypeError, ValueError, OSError):
            continue
        times.append(t if t.tzinfo else t.replace(tzinfo=dt.UTC))
    return max(0.0, (now - min(times)).total_seconds()) if times else None


def _trained_batches(lake: object) -> list[str]:
    from mlcicd_dagster.data.lake import Lake

    assert isinstance(lake, Lake)
    if not lake.has_training_set():
        return []
    try:
        return list(lake.read_training_manifest().get("batches") or [])
    except (OSError, ValueError):
        return []


def _tags(p: PipelineDefs, home: Home, lake: object, active: list[str]) -> dict[str, str]:
    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.pipeline.monitoring_policy import trigger_tags_for

    assert isinstance(lake, Lake)
    spec = p.spec
    previous = _trained_batches(lake)
    new = [k for k in active if k not in previous]
    dropped = [k for k in previous if k not in active]
    tags: dict[str, str] = {
        "mlcicd/trigger": "new_data" if new else "revocation" if dropped else "retrain",
        "mlcicd/batches": str(len(active)),
    }
    if new:
        tags["mlcicd/new_batches"] = ", ".join(new)[:255]
    if dropped:
        tags["mlcicd/dropped_batches"] = ", ".join(dropped)[:255]
    for key in new:  # a batch exported by the retraining policy carries its cause
        source = lake.batch_meta(key).get("source_file")
        if source:
            tags.update(trigger_tags_for(home, spec, str(source)))
    return tags
