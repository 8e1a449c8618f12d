"""The served model, watched: the time-partitioned ``monitoring`` asset and its checks.

One partition per window of served traffic (hourly by default; the spec or
``MLCICD_MONITORING_WINDOW_MINUTES`` shorten it, e.g. for the demo). The asset
joins the prediction log with the feedback labels and reports live metrics with
intervals and drift; its checks turn those into WARN/ERROR results in the UI.
"""

import datetime as dt

import dagster as dg

from mlcicd_dagster import settings
from mlcicd_dagster.pipeline.presigned import presigned
from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.resources import MlcicdResource

WINDOW_ENV = "MLCICD_MONITORING_WINDOW_MINUTES"
WINDOW_FMT = "%Y-%m-%d-%H:%M"

MONITORING_CHECKS: dict[str, str] = {
    "live_performance": "Label-confirmed live AUC / log-loss not worse than at deployment "
    "(confidence interval).",
    "feature_drift": "Per-feature drift vs the training reference (Holm-corrected, "
    "effect-size floor).",
    "prediction_drift": "Shift of the served score distribution vs the training reference.",
    "label_coverage": "Enough served predictions received their feedback label.",
}


def window_minutes(spec: PipelineSpec) -> int:
    minutes = settings.get_int(WINDOW_ENV, spec.monitoring_window_minutes)
    if minutes < 1 or (minutes < 60 and 60 % minutes) or (minutes >= 60 and minutes % 60):
        raise ValueError(
            f"monitoring window of {minutes} min must divide an hour or be whole hours"
        )
    return minutes


def windows_start(spec: PipelineSpec, now: dt.datetime | None = None) -> str | dt.datetime:
    """The first window the UI lists: the pipeline's ``monitoring.start`` when set, else
    the start of the UTC day ``monitoring.history_days`` ago (older traffic is not shown).
    Day-aligned, so every process that loads the code location on the same day agrees.
    The default is a datetime: Dagster parses a string start with strptime (whose module
    import and format compile cost ~1 ms in every process that loads)."""
    if spec.monitoring_start:
        return spec.monitoring_start
    now = now or dt.datetime.now(dt.UTC)
    day = (now - dt.timedelta(days=spec.monitoring_history_days)).date()
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def monitoring_partitions(spec: PipelineSpec) -> dg.TimeWindowPartitionsDefinition:
    minutes = window_minutes(spec)
    if minutes < 60:
        cron = f"*/{minutes} * * * *"
    else:
        cron = "0 * * * *" if minutes == 60 else f"0 */{minutes // 60} * * *"
    return dg.TimeWindowPartitionsDefinition(
        start=windows_start(spec), cron_schedule=cron, fmt=WINDOW_FMT, timezone="UTC"
    )


def build_monitoring_assets(spec: PipelineSpec):
    partitions = monitoring_partitions(spec)
    specs = [
        dg.AssetCheckSpec(name, asset=dg.AssetKey(spec.key("monitoring")), description=text)
        for name, text in MONITORING_CHECKS.items()
    ]

    @dg.asset(
        key=dg.AssetKey(spec.key("monitoring")),
        op_tags=spec.op_tags("monitoring"),
        deps=[dg.AssetKey(spec.key("deployment"))],
        partitions_def=partitions,
        group_name=spec.dataset,
        owners=list(spec.owners),
        kinds={"duckdb"},
        check_specs=specs,
        description="Live metrics (with intervals), label coverage and drift per window.",
    )
    @presigned
    def monitoring(context: dg.AssetExecutionContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.monitoring_policy import materialize_window

        yield from materialize_window(spec, mlcicd, context.partition_time_window, context.log)

    return partitions, [monitoring], []
