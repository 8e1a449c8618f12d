"""Sensors of a dataset pipeline: landing zone, monitoring windows, retraining policy, alerts.

All sensors are idempotent so that ``mlcicd cycle`` and the daemon may both
evaluate them: a landed file already known as a partition is never requested
again, and each monitoring window and retrain cause carries a run key.
"""

import datetime as dt

import dagster as dg

from mlcicd_dagster.pipeline.factory import PipelineDefs
from mlcicd_dagster.pipeline.presigned import presigned
from mlcicd_dagster.platform.deploy_targets import DeployTargetResource
from mlcicd_dagster.platform.resources import MlcicdResource

LANDING_INTERVAL_S = 5  # a dropped file is picked up within seconds in `make ui`
MONITORING_INTERVAL_S = 30
ORPHANS_INTERVAL_S = 10  # a killed run's work is redone within seconds (one runs query)


def build_sensors(p: PipelineDefs, *, running: bool) -> list[dg.SensorDefinition]:
    status = dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED
    return [
        _landing_sensor(p, status),
        _training_sensor(p, status),
        _bisect_sensor(p, status),
        _monitoring_sensor(p, status),
        _retrain_sensor(p, status),
        _failure_sensor(p, status),
        _orphans_sensor(p, status),
        _rollout_controller_sensor(p, status),
    ]


def _rollout_controller_sensor(
    p: PipelineDefs, status: dg.DefaultSensorStatus
) -> dg.SensorDefinition:
    spec = p.spec

    @dg.sensor(
        name=f"{spec.dataset}_rollout_controller",
        minimum_interval_seconds=max(1, int(spec.rollout.poll_interval_s)),
        default_status=status,
        description="Moves the rollout in flight on by one tick: advance a canary step, "
        "promote, roll back or hold (what it waits for is in `mlcicd status`).",
    )
    @presigned
    def rollout_controller(
        context: dg.SensorEvaluationContext,
        mlcicd: MlcicdResource,
        deploy_target: DeployTargetResource,
    ):
        from mlcicd_dagster.pipeline.rollout_controller import controller_tick

        report = controller_tick(spec, mlcicd, deploy_target)
        if report.outcome not in ("idle", "holding"):
            context.log.info(report.message)
        return dg.SkipReason(f"{report.outcome}: {report.message}")

    return rollout_controller


def _orphans_sensor(p: PipelineDefs, status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    spec = p.spec
    job_names = {j.name for j in p.jobs}

    @dg.sensor(
        name=f"{spec.dataset}_orphaned_runs",
        jobs=p.jobs,
        minimum_interval_seconds=ORPHANS_INTERVAL_S,
        default_status=status,
        description="Runs whose process died are failed with the reason and run again.",
    )
    @presigned
    def orphaned_runs(context: dg.SensorEvaluationContext):
        from mlcicd_dagster.pipeline.orphans import orphans_tick

        return orphans_tick(context.instance, job_names)

    return orphaned_runs


def _landing_sensor(p: PipelineDefs, status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    spec = p.spec

    @dg.sensor(
        name=f"{spec.dataset}_landing",
        job_name=p.job_name("ingest"),
        minimum_interval_seconds=LANDING_INTERVAL_S,
        default_status=status,
        description=f"One partition and one run per file landed in landing/{spec.dataset}/.",
    )
    @presigned
    def landing(context: dg.SensorEvaluationContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.landing import landing_tick

        return landing_tick(p, mlcicd.home, context)

    return landing


def _training_sensor(p: PipelineDefs, status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    spec = p.spec

    @dg.sensor(
        name=f"{spec.dataset}_training",
        job_name=p.job_name("retrain"),
        minimum_interval_seconds=LANDING_INTERVAL_S,
        default_status=status,
        description="One training on all validated, unrevoked batches once their data gates "
        "are done (a burst of batches trains once); again after a revoke or restore.",
    )
    @presigned
    def training(context: dg.SensorEvaluationContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.training import training_tick

        return training_tick(p, mlcicd.home, context)

    return training


def _bisect_sensor(p: PipelineDefs, status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    spec = p.spec

    @dg.sensor(
        name=f"{spec.dataset}_data_bisect",
        job_name=p.job_name("data_bisect"),
        minimum_interval_seconds=LANDING_INTERVAL_S,
        default_status=status,
        description="After a candidate fails on the golden set: find the new batch to blame "
        "(retrains on subsets) and, by the pipeline's policy, revoke it.",
    )
    @presigned
    def data_bisect(context: dg.SensorEvaluationContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.bisect import bisect_tick

        return bisect_tick(p, mlcicd.home, context)

    return data_bisect


def _monitoring_sensor(p: PipelineDefs, status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    spec = p.spec

    @dg.sensor(
        name=f"{spec.dataset}_monitoring",
        job_name=p.job_name("monitor"),
        minimum_interval_seconds=MONITORING_INTERVAL_S,
        default_status=status,
        description="Materializes each finished monitoring window once traffic was served in it.",
    )
    @presigned
    def monitoring(context: dg.SensorEvaluationContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.monitoring_policy import monitoring_tick

        return monitoring_tick(p, mlcicd.home, context, now=dt.datetime.now(dt.UTC))

    return monitoring


def _retrain_sensor(p: PipelineDefs, status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    spec = p.spec

    @dg.sensor(
        name=f"{spec.dataset}_retraining_policy",
        job_name=p.job_name("retrain"),
        minimum_interval_seconds=MONITORING_INTERVAL_S,
        default_status=status,
        description="Turns monitoring results into retraining runs (cool-down, de-dup, budget).",
    )
    @presigned
    def retraining(context: dg.SensorEvaluationContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.monitoring_policy import retrain_tick

        return retrain_tick(p, mlcicd.home, context, now=dt.datetime.now(dt.UTC))

    return retraining


def _failure_sensor(p: PipelineDefs, status: dg.DefaultSensorStatus) -> dg.SensorDefinition:
    spec = p.spec

    @dg.run_failure_sensor(
        name=f"{spec.dataset}_run_failure_alert",
        default_status=status,
        description="Every failed run (a gate saying no included) becomes a structured alert.",
    )
    @presigned
    def failure_alert(context: dg.RunFailureSensorContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.platform.alerts import send_alert

        run = context.dagster_run
        send_alert(
            mlcicd.home,
            "run_failure",
            f"{run.job_name} failed",
            {
                "run_id": run.run_id,
                "job": run.job_name,
                "partition": run.tags.get("dagster/partition"),
                "message": context.failure_event.message,
            },
        )

    return failure_alert
