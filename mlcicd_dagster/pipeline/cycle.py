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

One runner per request: a request with a run key is claimed with a lease in the
home (``run-<key digest>``) before the "already ran?" check, so two cycles (or a cycle
and the daemon, which records its run before launching it) never both run it.
Every run carries the pid and host of this process (``orphans.process_tags``): if
this process dies, the next cycle or the daemon fails the run and redoes its work.

SIGTERM and SIGINT stop a cycle cleanly (``stop_on_signals``): a run in progress is
interrupted through Dagster (it ends FAILURE, tagged to be redone), a sensor tick
(the rollout controller's included) is finished first, and the cycle raises
``CycleInterrupted`` (the CLI exits 128 + signal number).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

CURSOR_PREFIX = "mlcicd/cycle/"
RUN_KEY_TAG = "dagster/run_key"  # the tag the daemon puts on sensor-launched runs
# A sensor may ask again for work that its own runs produced (a retrain after a
# monitoring pass, a feedback batch landing): a few passes settle it, a bound
# keeps a misbehaving sensor from looping forever.
MAX_PASSES = 3


CLAIM_TAG = "mlcicd/claim"  # unique per executed request: finds the run if interrupted


class CycleInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGINT stopped the cycle (after finishing or interrupting what ran)."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal.Signals, self.signal_name, signal.SIGTERM))


class _Stop:
    """Signal state of this process's cycle: which signal arrived, and where we are.

    During a run Dagster installs its own SIGINT/SIGTERM handler (it interrupts the step);
    the signal number still reaches ``wakeup`` (``signal.set_wakeup_fd``), so the cycle
    learns which signal stopped it whoever handled it.
    """

    pending: str | None = None
    in_run = False
    defer = 0
    wakeup: int | None = None


def _drain_signals() -> None:
    if _Stop.wakeup is None:
        return
    try:
        data = os.read(_Stop.wakeup, 64)
    except (BlockingIOError, OSError):
        return
    for b in data:
        if b in (signal.SIGTERM, signal.SIGINT) and not _Stop.pending:
            _Stop.pending = signal.Signals(b).name


def _on_signal(signum: int, frame: Any) -> None:  # noqa: ARG001
    name = signal.Signals(signum).name
    _Stop.pending = _Stop.pending or name
    if _Stop.in_run:
        if signum != signal.SIGINT:  # Dagster interrupts the run's step on SIGINT
            os.kill(os.getpid(), signal.SIGINT)
        return
    if _Stop.defer:
        return  # raised once the tick in progress is finished
    raise CycleInterrupted(name)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Install the cycle's SIGTERM/SIGINT handlers for the block (main thread only)."""
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    _Stop.pending, _Stop.in_run, _Stop.defer = None, False, 0
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    old_fd = signal.set_wakeup_fd(w)
    _Stop.wakeup = r
    for s in old:
        signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        signal.set_wakeup_fd(old_fd)
        _Stop.wakeup = None
        os.close(r)
        os.close(w)


@contextlib.contextmanager
def _deferred() -> Iterator[None]:
    _Stop.defer += 1
    try:
        yield
    finally:
        _Stop.defer -= 1
    _check_stop()


def _check_stop() -> None:
    if _Stop.pending and not _Stop.defer:
        raise CycleInterrupted(_Stop.pending)


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
            _check_stop()
            requested += _evaluate_once(defs, instance, sensor, report, quiet)
        if not requested:
            break
    return report


CONTROLLER_SUFFIX = "_rollout_controller"  # the rollout controller sensors' names end so
UNSETTLED = ("holding", "advanced", "busy", "repaired")


def settle_rollouts(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    *,
    timeout_s: float,
    interval_s: float = 2.0,
    quiet: bool = True,
) -> CycleReport:
    """Tick the rollout controllers every ``interval_s`` until no rollout is in flight (or
    ``timeout_s``): what the demo and tests do instead of waiting for the daemon."""
    names = [s.name for s in defs.sensors or [] if s.name.endswith(CONTROLLER_SUFFIX)]
    deadline = time.monotonic() + timeout_s
    while True:
        report = run_cycle(defs, instance, sensor_names=names, max_passes=1, quiet=quiet)
        busy = [v for v in report.skipped.values() if v.split(":", 1)[0] in UNSETTLED]
        if not busy or time.monotonic() >= deadline:
            return report
        time.sleep(interval_s)


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
    with _deferred():  # a signal waits for the tick (e.g. the rollout controller's) to end
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
        _check_stop()
        with _claim(rr.run_key) as mine:
            if not mine or (rr.run_key and _already_ran(instance, rr.run_key)):
                continue  # another process runs it, or the daemon/a cycle already did
            job_name = rr.job_name or _sensor_job_name(sensor)
            outcome = _execute(defs, instance, sensor.name, job_name, rr, quiet)
        report.runs.append(outcome)
        if outcome.outcome == "error":  # a rejection was alerted by its gate, with the reason
            _alert(outcome)
        _check_stop()
    if new_cursor is not None and new_cursor != cursor:
        instance.run_storage.set_cursor_values({key: new_cursor})
    return len(run_requests)


@contextlib.contextmanager
def _claim(run_key: str | None) -> Iterator[bool]:
    """Hold the lease of ``run_key`` for the block; yields False if another process has it."""
    if not run_key:
        yield True
        return
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.platform.lease import Lease

    digest = hashlib.sha256(run_key.encode()).hexdigest()[:24]
    lease = Lease(Home.from_env().lease(f"run-{digest}"), owner=f"cycle run {run_key[:200]}")
    if not lease.try_acquire():
        yield False
        return
    try:
        yield True
    finally:
        lease.release()


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
    from mlcicd_dagster.pipeline.orphans import mark_interrupted, process_tags

    tags = {**(rr.tags or {}), "dagster/sensor_name": sensor_name, "mlcicd/via": "cycle"}
    tags.update(process_tags())
    tags[CLAIM_TAG] = uuid.uuid4().hex
    tags["dagster/max_retries"] = "0"  # redone by the orphaned-runs sensor, not retried
    if rr.run_key:
        tags[RUN_KEY_TAG] = rr.run_key
    started = time.perf_counter()
    _Stop.in_run = True
    try:
        result = job.execute_in_process(
            instance=instance,
            partition_key=rr.partition_key,
            tags=tags,
            run_config=run_config or None,
            asset_selection=list(rr.asset_selection) if rr.asset_selection else None,
            raise_on_error=False,
        )
    except KeyboardInterrupt:
        _Stop.pending = _Stop.pending or "SIGINT"
        result = None
    finally:
        _Stop.in_run = False
    _drain_signals()
    if result is not None and not result.success and _was_interrupted(result):
        _Stop.pending = _Stop.pending or "SIGINT"
    if result is None or (_Stop.pending and not result.success):
        runs = instance.get_runs(filters=dg.RunsFilter(tags={CLAIM_TAG: tags[CLAIM_TAG]}), limit=1)
        if runs:
            mark_interrupted(instance, runs[0].run_id, _Stop.pending or "SIGINT")
        raise CycleInterrupted(_Stop.pending or "SIGINT")
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


def _was_interrupted(result: dg.ExecuteInProcessResult) -> bool:
    for e in result.all_events:
        if e.event_type_value in ("STEP_FAILURE", "RUN_FAILURE"):
            text = f"{e.message or ''} {getattr(e.event_specific_data, 'error', '') or ''}"
            if "Interrupt" in text or "interrupted" in text:
                return True
    return False


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
