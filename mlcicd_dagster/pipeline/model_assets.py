"""Where models are made and judged: ``training_set`` -> ``model`` + blocking gates.

Each model gate (the ones the pipeline's gates config names, from the gate registry)
is its own blocking asset check, so the UI shows which gate said no and why. A
*rejection* is a failed check of WARN severity (the run stays green): ``deployment``
still runs, sees the rejection on the version's tags and records "rejected, still
serving vN". Only a gate that could not judge (an error) fails with ERROR severity,
failing the run and stopping ``deployment``.

A gates config whose design would fail an equally good model too often is refused
here, when the code location loads, with the fix.
"""

import dagster as dg

from mlcicd_dagster.pipeline.presigned import presigned
from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.resources import MlcicdResource


def model_gates_of(spec: PipelineSpec) -> dict[str, str]:
    """The pipeline's gates (name -> description), after checking the config's design;
    remembered by the files' bytes (``platform.load_cache``) unless the config imports
    gate modules of its own (their code is not part of the key)."""
    from mlcicd_dagster.platform.load_cache import remembered

    def check() -> dict[str, object]:
        from mlcicd_dagster.models.gates import gates_of
        from mlcicd_dagster.pipeline.model_gate import checked_gate_config

        cfg = checked_gate_config(spec)
        gates = {g.name: g.description for g in gates_of(cfg)}
        return {"gates": gates, "own_modules": bool(cfg.gate_modules)}

    files = [spec.gates_path, spec.golden_path, spec.behavioral_path]
    args = {"label": spec.label, "task": str(spec.task)}
    found = remembered("model_gates", files, args, check)
    if found["own_modules"]:
        found = check()
    return dict(found["gates"])  # type: ignore[call-overload]


def build_model_assets(spec: PipelineSpec):
    validated_key = dg.AssetKey(spec.key("validated_batch"))

    @dg.asset(
        key=dg.AssetKey(spec.key("training_set")),
        op_tags=spec.op_tags("training_set"),
        deps=[validated_key],
        group_name=spec.dataset,
        owners=list(spec.owners),
        kinds={"parquet"},
        # No automation condition: the training sensor coalesces a burst of batches
        # into one training (pipeline/training.py).
        description="All validated, unrevoked batches, with a stable hash-based holdout split.",
    )
    @presigned
    def training_set(context: dg.AssetExecutionContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.model_gate import build_training_set

        return build_training_set(spec, mlcicd.home, context.log)

    @dg.asset(
        key=dg.AssetKey(spec.key("model")),
        op_tags=spec.op_tags("model"),
        deps=[training_set],
        group_name=spec.dataset,
        owners=list(spec.owners),
        kinds={"mlflow", spec.trainer},
        description=f"{spec.trainer} model trained, tracked and registered as "
        f"'{spec.model_name}' in MLflow. Unchanged inputs do not retrain.",
    )
    @presigned
    def model(context: dg.AssetExecutionContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.model_gate import train_candidate
        from mlcicd_dagster.platform.faults import point

        point("training")  # fault tests only (MLCICD_FAULT)
        return train_candidate(spec, mlcicd, context.run.run_id, context.log)

    gate_specs = [
        dg.AssetCheckSpec(name, asset=model, blocking=True, description=text)
        for name, text in model_gates_of(spec).items()
    ]

    # One step for all gates: each model is scored once and the scores are shared
    # (GateInputs); each gate is still its own blocking check in the UI.
    @dg.multi_asset_check(
        specs=gate_specs,
        name=f"{spec.dataset}__model_gates",
        description="The model gates, judged together on shared scores.",
    )
    @presigned
    def model_gates(context: dg.AssetCheckExecutionContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.model_gate import judge_all
        from mlcicd_dagster.platform.faults import point

        point("gates")  # fault tests only (MLCICD_FAULT)
        yield from judge_all(spec, mlcicd, context.run.run_id, context.log)

    return [training_set, model], [model_gates]
