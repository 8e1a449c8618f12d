"""Nothing orphaned: runs whose process died are failed with a reason and redone.

Every run this package executes in a process of its own making (``mlcicd cycle``,
the deploy job an operator runs) carries the process's pid and host as tags
(``process_tags``). A run still ``STARTING``/``STARTED`` whose process no longer
exists on this host was killed (``kill -9``, OOM, a lost node): ``reap`` marks it
failed with the reason and a tag; a run interrupted by SIGTERM/SIGINT gets the same
tag from ``mark_interrupted``. ``redo_requests`` then asks for each such run again
(same job, partition, config and assets; run key ``redo:<run id>``, so the redo
happens once whoever evaluates the sensor: the daemon or any cycle).

Runs the daemon launches name their worker process too (``MlcicdResource`` tags the run
when it starts executing), so ``reap`` finds a killed worker. Dagster may get there
first: the code server that launched the worker fails the run when the worker dies
("Run execution process for <id> was terminated by signal 9"), and run monitoring fails
a run that never started. ``adopt_crashed`` tags such runs like ours, so they are redone
the same way; one that Dagster's own run retries already re-executed is left to them.
A run failed or adopted here is tagged ``dagster/max_retries=0`` so that Dagster's run
retries do not re-execute it beside the redo.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

import dagster as dg

PID_TAG = "mlcicd/pid"
HOST_TAG = "mlcicd/host"
ORPHAN_TAG = "mlcicd/orphaned"  # why the run was failed by us; its work is redone
REDO_OF_TAG = "mlcicd/redo_of"
REDO_PREFIX = "redo:"
HOST = socket.gethostname()
LIVE = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
RECENT = 200  # how many recent failed runs a tick looks at for work to redo
CHECKED_TAG = "mlcicd/failure_checked"  # a failed run looked at by ``adopt_crashed``
ADOPT_WINDOW = dt.timedelta(hours=6)  # failures older than this are not looked at again
# How Dagster words the failure of a run whose worker died or never started (the code
# server's ``get_run_crash_explanation``; run monitoring's start timeout and health check).
CRASH_MARKERS = (
    "Run execution process for ",
    "Detected run worker status",
    "Run timed out due to taking longer than",
)
# Tags a redo must not copy from the dead run (Dagster's bookkeeping, our process tags).
_NOT_COPIED = ("dagster/run_key", "dagster/sensor_name", "dagster/tick", "dagster/max_retries",
               PID_TAG, HOST_TAG, ORPHAN_TAG, CHECKED_TAG, "mlcicd/claim", ".dagster/")  # fmt: skip


def process_tags() -> dict[str, str]:
    """Tags naming the process that executes a run here (for orphan detection)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: HOST}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_reason(run: dg.DagsterRun) -> str | None:
    """Why ``run`` (live by its status) is an orphan, or None when its process lives."""
    if run.status not in LIVE:
        return None
    pid, host = run.tags.get(PID_TAG), run.tags.get(HOST_TAG)
    if not pid or host != HOST:
        return None  # not ours, or another host's: its own monitor judges it
    try:
        alive = _pid_alive(int(pid))
    except ValueError:
        return None
    return None if alive else f"process {pid} on {host} died while the run was {run.status.value}"


def reap(instance: dg.DagsterInstance, job_names: set[str] | None = None) -> list[dict[str, str]]:
    """Fail every live-looking run whose process is dead; returns what was reaped."""
    out = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(LIVE))):
        if job_names is not None and run.job_name not in job_names:
            continue
        reason = dead_reason(run)
        if reason is None:
            continue
        mark_failed(instance, run, reason)
        out.append({"run_id": run.run_id, "job": run.job_name, "reason": reason})
    return out


def mark_failed(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> None:
    """Tag ``run`` as orphaned (its work is redone) and fail it if it still looks live."""
    # max_retries 0: the redo is ours (``redo_requests``); the daemon's run retries would
    # otherwise re-execute a run failed here a second time.
    instance.add_run_tags(run.run_id, {ORPHAN_TAG: reason[:500], "dagster/max_retries": "0"})
    fresh = instance.get_run_by_id(run.run_id) or run
    if fresh.status in LIVE or fresh.status == dg.DagsterRunStatus.NOT_STARTED:
        instance.report_run_failed(fresh, message=f"orphaned run: {reason}")


def mark_interrupted(instance: dg.DagsterInstance, run_id: str, signal_name: str) -> None:
    run = instance.get_run_by_id(run_id)
    if run is not None:
        mark_failed(instance, run, f"interrupted by {signal_name}; its work is redone next tick")


def redo_requests(
    instance: dg.DagsterInstance, job_names: set[str] | None = None
) -> list[dg.RunRequest]:
    """One request per orphaned run not yet redone (run key ``redo:<run id>``)."""
    failed = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]), limit=RECENT
    )
    requests = []
    for run in failed:
        if ORPHAN_TAG not in run.tags or (job_names is not None and run.job_name not in job_names):
            continue
        key = REDO_PREFIX + run.run_id
        if instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": key}), limit=1):
            continue
        tags = {k: v for k, v in run.tags.items() if not any(k.startswith(p) for p in _NOT_COPIED)}
        tags[REDO_OF_TAG] = run.run_id
        requests.append(
            dg.RunRequest(
                run_key=key,
                job_name=run.job_name,
                run_config=dict(run.run_config or {}),
                tags=tags,
                asset_selection=list(run.asset_selection) if run.asset_selection else None,
                partition_key=run.tags.get("dagster/partition"),
            )
        )
    return requests


def adopt_crashed(
    instance: dg.DagsterInstance, job_names: set[str] | None = None
) -> list[dict[str, str]]:
    """Tag as orphaned the recent runs Dagster failed because their worker died (or never
    started), so that ``redo_requests`` redoes them; returns what was adopted. Each failed
    run is looked at once (``CHECKED_TAG``)."""
    since = dt.datetime.now(dt.UTC) - ADOPT_WINDOW
    failed = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since),
        limit=RECENT,
    )
    out = []
    for run in failed:
        if ORPHAN_TAG in run.tags or CHECKED_TAG in run.tags:
            continue
        if job_names is not None and run.job_name not in job_names:
            continue
        retried = instance.get_runs(
            filters=dg.RunsFilter(tags={"dagster/parent_run_id": run.run_id}), limit=1
        )
        reason = None if retried else _crash_message(instance, run.run_id)
        if reason is None:
            why = "retried by Dagster" if retried else "not a crash"
            instance.add_run_tags(run.run_id, {CHECKED_TAG: why})
            continue
        instance.add_run_tags(
            run.run_id, {ORPHAN_TAG: reason[:500], CHECKED_TAG: "crash", "dagster/max_retries": "0"}
        )
        out.append({"run_id": run.run_id, "job": run.job_name, "reason": reason})
    return out


def _crash_message(instance: dg.DagsterInstance, run_id: str) -> str | None:
    records = instance.event_log_storage.get_logs_for_run(
        run_id, of_type={dg.DagsterEventType.ENGINE_EVENT}, limit=20, ascending=False
    )
    for record in records:
        message = record.message or ""
        if any(marker in message for marker in CRASH_MARKERS):
            return message
    return None


def orphans_tick(instance: dg.DagsterInstance, job_names: set[str]) -> Any:
    """The orphaned-runs sensor's body: reap, adopt Dagster's crash failures, then request
    the redos."""
    reaped = reap(instance, job_names)
    reaped += adopt_crashed(instance, job_names)
    requests = redo_requests(instance, job_names)
    if not requests:
        return dg.SkipReason(
            f"reaped {len(reaped)} orphaned run(s)" if reaped else "no orphaned runs"
        )
    return requests
