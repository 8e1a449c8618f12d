"""The landing sensor's tick: landed files -> dynamic partitions + ingest runs.

Refused entries (a symlink out of the zone, an unsupported type) get a reason
JSON in quarantine and an alert; nothing is copied from outside the zone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from mlcicd_dagster import settings
from mlcicd_dagster.platform.home import Home

if TYPE_CHECKING:
    from mlcicd_dagster.pipeline.factory import PipelineDefs

SETTLE_ENV = "MLCICD_LANDING_SETTLE_SECONDS"


def landing_tick(
    p: PipelineDefs, home: Home, context: dg.SensorEvaluationContext
) -> dg.SensorResult:
    from mlcicd_dagster.data.landing import DEFAULT_SETTLE_SECONDS, content_run_key, scan_landing
    from mlcicd_dagster.data.quarantine import record_refusal
    from mlcicd_dagster.pipeline.monitoring_policy import trigger_tags_for

    spec = p.spec
    settle = settings.get_float(SETTLE_ENV, DEFAULT_SETTLE_SECONDS)
    scan = scan_landing(home.landing(spec.dataset), context.cursor, settle_seconds=settle)
    for refusal in scan.refused:
        record_refusal(
            refusal.name,
            home.quarantine(spec.dataset),
            {"kind": "refused", "summary": refusal.reason, "partition_key": refusal.partition_key},
            source=refusal.path,
        )
        _alert(home, spec.dataset, refusal.name, refusal.reason)

    new_keys: list[str] = []
    run_requests: list[dg.RunRequest] = []
    for f in scan.new:
        key = f.partition_key
        known = context.instance.has_dynamic_partition(spec.partitions_name, key)
        if not known and key not in new_keys:
            new_keys.append(key)
        try:
            run_key = content_run_key(f)
        except FileNotFoundError:
            continue  # deleted between the scan and now: nothing to ingest
        run_requests.append(
            dg.RunRequest(
                # From content, not file times: a copied or restored home re-ingests
                # nothing, and a file re-offered after a stalled write (new bytes) runs again.
                run_key=run_key,
                partition_key=key,
                tags={
                    "mlcicd/landed_file": f.name[:200],
                    "mlcicd/trigger": "landing",
                    **trigger_tags_for(home, spec, f.name),
                },
            )
        )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=(
            [p.partitions.build_add_request(new_keys)] if new_keys else []
        ),
        cursor=scan.cursor,
        skip_reason=None if run_requests else "no new finished files in the landing zone",
    )


def _alert(home: Home, dataset: str, name: str, reason: str) -> None:
    from mlcicd_dagster.platform.alerts import send_alert

    send_alert(home, "landing_refused", f"{dataset}: refused {name}", {"reason": reason})
