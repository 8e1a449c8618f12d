"""Where traffic is moved: the graph-backed ``deployment`` asset over deploy ops.

prepare (resume or revert an interrupted rollout, pick the newest gated version)
-> roll_out (blue-green the first time, else the spec's strategy, with canary
analysis between traffic steps) -> record (registry aliases and tags follow what
serves). The decisions are then judged by asset checks on ``deployment``.
"""

from typing import Any

import dagster as dg

from mlcicd_dagster.pipeline.data_assets import ELIGIBLE
from mlcicd_dagster.pipeline.deploy_config import DECISION_CHECKS, RolloutConfig
from mlcicd_dagster.pipeline.presigned import presigned
from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.deploy_targets import DeployTargetResource
from mlcicd_dagster.platform.resources import MlcicdResource

# One rollout per model at a time, whoever launched it (daemon, cycle, UI).
DEPLOY_CONCURRENCY_TAG = "mlcicd/deployment"


def build_deploy_assets(spec: PipelineSpec):
    tags = {DEPLOY_CONCURRENCY_TAG: spec.model_name}

    @dg.op(name=f"{spec.dataset}__prepare_rollout", tags=tags, ins={"model": dg.In(dg.Nothing)})
    @presigned
    def prepare_rollout(
        context: dg.OpExecutionContext,
        mlcicd: MlcicdResource,
        deploy_target: DeployTargetResource,
        config: RolloutConfig,
    ) -> dict:
        from mlcicd_dagster.pipeline.deploy_ops import prepare

        return prepare(spec, mlcicd, config, context.log, deploy_target)

    @dg.op(name=f"{spec.dataset}__roll_out", tags=tags)
    @presigned
    def roll_out(
        context: dg.OpExecutionContext,
        mlcicd: MlcicdResource,
        deploy_target: DeployTargetResource,
        plan: dict,
    ) -> dict:
        from mlcicd_dagster.pipeline.deploy_ops import execute_rollout

        return execute_rollout(spec, mlcicd, plan, context.run.run_id, context.log, deploy_target)

    @dg.op(name=f"{spec.dataset}__record_rollout", tags=tags)
    @presigned
    def record_rollout(context: dg.OpExecutionContext, mlcicd: MlcicdResource, outcome: dict):
        from mlcicd_dagster.pipeline.deploy_ops import record

        summary: dict[str, Any] = record(spec, mlcicd, outcome, context.log)
        yield dg.Output(summary, metadata=summary.get("metadata", {}))

    @dg.graph_asset(
        key=dg.AssetKey(spec.key("deployment")),
        ins={"model": dg.AssetIn(key=dg.AssetKey(spec.key("model")), dagster_type=dg.Nothing)},
        group_name=spec.dataset,
        owners=list(spec.owners),
        automation_condition=ELIGIBLE,
        description="What serves: stable/canary/shadow versions and weights on the deploy target.",
    )
    @presigned
    def deployment(model):
        return record_rollout(roll_out(prepare_rollout(model)))

    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(name, asset=deployment, description=text)
            for name, text in DECISION_CHECKS.items()
        ],
        name=f"{spec.dataset}__rollout_decisions",
        description="Each decision of the last rollout (inputs, statistic, threshold, verdict).",
    )
    @presigned
    def rollout_decisions(mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.deploy_ops import decision_checks

        yield from decision_checks(spec, mlcicd)

    @dg.asset_check(
        asset=deployment,
        name="aliases_match_serving",
        description="Registry aliases equal what serves: champion = stable, challenger = canary.",
    )
    @presigned
    def aliases_match_serving(mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.deploy_ops import alias_check

        return alias_check(spec, mlcicd)

    return [deployment], [rollout_decisions, aliases_match_serving]
