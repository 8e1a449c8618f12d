"""One pass of the loop without the daemon (``mlcicd cycle``), for cron and CI systems.

Each sensor of the code location is evaluated once against the real Dagster
instance, its dynamic-partition requests are applied, and every run it asks for
is executed to completion in this process through the same job definitions the
daemon would launch. Sensor cursors are kept in the instance's key-value store
under ``mlcicd/cycle/<sensor>``, apart from the daemon's own, which is safe
because the sensors are idempotent (a landed file already known as a partition
is never requested again).

A run in which a gate said no is the system doing its job (``outcome = "rejected"``;
the run itself is green: a rejection is a failed check with ``outcome: rejected``, and
the gate has already alerted with its reason); any failure of the run is an error.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

CURSOR_PREFIX = "mlcicd/cycle/"
RUN_KEY_TAG = "dagster/run_key"  # the tag the daemon puts on sensor-launched runs
# A sensor may ask again for work that its own runs produced (a retrain after a
# monitoring pass, a feedback batch landing): a few passes settle it, a bound
# keeps a misbehaving sensor from looping forever.
MAX_PASSES = 3


@dataclass
class RunOutcome:
    sensor: str
    job: str
    run_id: str
    partition_key: str | None
    outcome: str  # success | rejected | error
    seconds: float
    tags: dict[str, str]
    failed_checks: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class CycleReport:
    runs: list[RunOutcome] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.outcome != "error" for r in self.runs)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "runs": [asdict(r) for r in self.runs], "skipped": self.skipped}


def run_cycle(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    sensor_names: list[str] | None = None,
    max_passes: int = MAX_PASSES,
    quiet: bool = True,
) -> CycleReport:
    """Evaluate sensors and run their requests until none asks for more (bounded)."""
    report = CycleReport()
    sensors = [
        s
        for s in defs.sensors or []
        if not isinstance(s, dg.RunStatusSensorDefinition)
        and (sensor_names is None or s.name in sensor_names)
    ]
    for _ in range(max_passes):
        requested = 0
        for sensor in sensors:
            requested += _evaluate_once(defs, instance, sensor, report, quiet)
        if not requested:
            break
    return report


def _evaluate_once(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    sensor: dg.SensorDefinition,
    report: CycleReport,
    quiet: bool,
) -> int:
    key = CURSOR_PREFIX + sensor.name
    cursor = instance.run_storage.get_cursor_values({key}).get(key)
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        sensor_name=sensor.name,
        resources=defs.resources,
    )
    result = sensor(context)
    run_requests, new_cursor, skip = _unpack(result, context)
    for req in _dynamic_requests(result):
        if isinstance(req, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        elif isinstance(req, dg.DeleteDynamicPartitionsRequest):
            for pk in req.partition_keys:
                instance.delete_dynamic_partition(req.partitions_def_name, pk)
    if skip:
        report.skipped[sensor.name] = skip
    for rr in run_requests:
        if rr.run_key and _already_ran(instance, rr.run_key):
            continue  # the daemon (or an earlier cycle) already launched this request
        job_name = rr.job_name or _sensor_job_name(sensor)
        outcome = _execute(defs, instance, sensor.name, job_name, rr, quiet)
        report.runs.append(outcome)
        if outcome.outcome == "error":  # a rejection was alerted by its gate, with the reason
            _alert(outcome)
    if new_cursor is not None and new_cursor != cursor:
        instance.run_storage.set_cursor_values({key: new_cursor})
    return len(run_requests)


def _already_ran(instance: dg.DagsterInstance, run_key: str) -> bool:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: run_key}), limit=1)
    return bool(runs)


def _alert(outcome: RunOutcome) -> None:
    """The run-failure sensor does not see cycle's runs until the daemon runs: alert here."""
    from mlcicd_dagster.platform.alerts import send_alert
    from mlcicd_dagster.platform.home import Home

    title = f"{outcome.job} {'rejected by a gate' if outcome.outcome == 'rejected' else 'failed'}"
    send_alert(Home.from_env(), f"run_{outcome.outcome}", title, asdict(outcome))


def _unpack(result: Any, context: Any) -> tuple[list[dg.RunRequest], str | None, str | None]:
    if result is None:
        return [], context.cursor, None
    if isinstance(result, dg.SkipReason):
        return [], context.cursor, result.skip_message
    if isinstance(result, dg.RunRequest):
        return [result], context.cursor, None
    if isinstance(result, dg.SensorResult):
        skip = result.skip_reason.skip_message if result.skip_reason else None
        cursor = result.cursor if result.cursor is not None else context.cursor
        return list(result.run_requests or []), cursor, skip
    items = list(result)
    return [r for r in items if isinstance(r, dg.RunRequest)], context.cursor, None


def _dynamic_requests(result: Any) -> list[Any]:
    if isinstance(result, dg.SensorResult):
        return list(result.dynamic_partitions_requests or [])
    return []


def _sensor_job_name(sensor: dg.SensorDefinition) -> str:
    targets = sensor.targets
    if len(targets) != 1:
        raise ValueError(f"sensor {sensor.name} has no single job; run requests must name one")
    return targets[0].job_name


def _execute(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    sensor_name: str,
    job_name: str,
    rr: dg.RunRequest,
    quiet: bool,
) -> RunOutcome:
    job = defs.resolve_job_def(job_name)
    run_config = dict(rr.run_config or {})
    if quiet:  # events still go to the instance (the UI); only the console is spared
        run_config.setdefault("loggers", {"console": {"config": {"log_level": "CRITICAL"}}})
    tags = {**(rr.tags or {}), "dagster/sensor_name": sensor_name, "mlcicd/via": "cycle"}
    if rr.run_key:
        tags[RUN_KEY_TAG] = rr.run_key
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=instance,
        partition_key=rr.partition_key,
        tags=tags,
        run_config=run_config or None,
        asset_selection=list(rr.asset_selection) if rr.asset_selection else None,
        raise_on_error=False,
    )
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and (e.severity == dg.AssetCheckSeverity.ERROR or _rejection(e))
    ]
    if result.success:
        outcome, error = ("rejected" if failed_checks else "success"), None
    elif failed_checks and not _non_check_failures(result):
        outcome, error = "rejected", None
    else:
        outcome, error = "error", _first_error(result)
    return RunOutcome(
        sensor=sensor_name,
        job=job_name,
        run_id=result.run_id,
        partition_key=rr.partition_key,
        outcome=outcome,
        seconds=round(time.perf_counter() - started, 2),
        tags={k: str(v) for k, v in tags.items()},
        failed_checks=failed_checks,
        error=error,
    )


def _rejection(evaluation: Any) -> bool:
    """A failed check that is a gate's rejection (``outcome: rejected`` metadata)."""
    value = (evaluation.metadata or {}).get("outcome")
    return getattr(value, "value", value) == "rejected"


def _non_check_failures(result: dg.ExecuteInProcessResult) -> list[Any]:
    """Step failures that are not the engine's 'blocking check failed' error."""
    failures = []
    for e in result.all_events:
        if e.event_type_value != "STEP_FAILURE":
            continue
        err = e.step_failure_data.error
        if err is None or "DagsterAssetCheckFailedError" not in (err.cls_name or ""):
            failures.append(e)
    return failures


def _first_error(result: dg.ExecuteInProcessResult) -> str:
    for e in _non_check_failures(result):
        err = e.step_failure_data.error
        if err is not None:
            while err.cause is not None:  # the user code's exception, not Dagster's wrapper
                err = err.cause
            return f"{e.step_key}: {err.cls_name}: {err.message.strip()[:500]}"
    return "run failed"
