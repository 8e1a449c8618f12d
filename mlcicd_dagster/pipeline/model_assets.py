"""Where models are made and judged: ``training_set`` -> ``model`` + blocking gates.

Each model gate is its own blocking asset check, so the UI shows which gate
said no and why; any ERROR failure stops ``deployment``.
"""

import dagster as dg

from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.resources import MlcicdResource

# In the order a reviewer reads them: quality, fairness, behaviour, speed, packaging.
MODEL_GATES: dict[str, str] = {
    "non_inferiority": "At least as good as the champion (paired CI on AUC and log-loss), "
    "on the recent holdout and the trusted golden set.",
    "slices": "No slice significantly worse than the champion (Holm); SEX TPR/FPR gap rule.",
    "behavioral": "Invariance, directional and minimum-functionality tests from the YAML.",
    "serving_budget": "p99 single-row latency and batch throughput within budget and 1.25x.",
    "infra_validation": "The registered artifact, loaded in a fresh process by the serving "
    "code, answers exactly as the in-memory model.",
}


def build_model_assets(spec: PipelineSpec):
    validated_key = dg.AssetKey(spec.key("validated_batch"))

    @dg.asset(
        key=dg.AssetKey(spec.key("training_set")),
        op_tags=spec.op_tags("training_set"),
        deps=[validated_key],
        group_name=spec.dataset,
        kinds={"parquet"},
        # No automation condition: the training sensor coalesces a burst of batches
        # into one training (pipeline/training.py).
        description="All validated, unrevoked batches, with a stable hash-based holdout split.",
    )
    def training_set(context: dg.AssetExecutionContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.model_gate import build_training_set

        return build_training_set(spec, mlcicd.home, context.log)

    @dg.asset(
        key=dg.AssetKey(spec.key("model")),
        op_tags=spec.op_tags("model"),
        deps=[training_set],
        group_name=spec.dataset,
        kinds={"mlflow", spec.trainer},
        description=f"{spec.trainer} model trained, tracked and registered as "
        f"'{spec.model_name}' in MLflow. Unchanged inputs do not retrain.",
    )
    def model(context: dg.AssetExecutionContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.model_gate import train_candidate
        from mlcicd_dagster.platform.faults import point

        point("training")  # fault tests only (MLCICD_FAULT)
        return train_candidate(spec, mlcicd, context.run.run_id, context.log)

    gate_specs = [
        dg.AssetCheckSpec(name, asset=model, blocking=True, description=text)
        for name, text in MODEL_GATES.items()
    ]

    # One step for all gates: each model is scored once and the scores are shared
    # (GateInputs); each gate is still its own blocking check in the UI.
    @dg.multi_asset_check(
        specs=gate_specs,
        name=f"{spec.dataset}__model_gates",
        description="The model gates, judged together on shared scores.",
    )
    def model_gates(context: dg.AssetCheckExecutionContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.model_gate import judge_all
        from mlcicd_dagster.platform.faults import point

        point("gates")  # fault tests only (MLCICD_FAULT)
        yield from judge_all(spec, mlcicd, context.run.run_id, context.log)

    return [training_set, model], [model_gates]
