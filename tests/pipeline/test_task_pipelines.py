"""The shipped task pipelines (digits: multiclass + torch, diabetes: regression) and the
task's fields of the component: loaded, refused by field, and the data gate's label check
on a real Dagster instance."""

from __future__ import annotations

import importlib
import itertools
import json
import os
import time

import dagster as dg
import pandas as pd
import pytest
import yaml
from tests_support import ROOT

ASSETS = ROOT / "assets"
_names = itertools.count()


def _attrs(pipeline: str, **over) -> dict:
    attrs = yaml.safe_load((ASSETS / pipeline / "defs.yaml").read_text())["attributes"]
    for key in ("golden", "sample", "suite", "gates", "behavioral"):
        if attrs.get(key):
            attrs[key] = str(ASSETS / pipeline / attrs[key])
    attrs.update(over)
    return attrs


def _load(tmp_path, attrs: dict):
    from mlcicd_dagster.location import load_location

    folder = tmp_path / f"mlcicd_task_defs_{next(_names)}"
    (folder / "p").mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    doc = {"type": "mlcicd_dagster.MLPipeline", "attributes": attrs}
    (folder / "p" / "defs.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_location(folder)


def _error_text(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_shipped_pipelines_each_task_and_the_digits_model_step_asks_for_a_gpu(monkeypatch):
    from dagster_k8s.job import get_user_defined_k8s_config

    from mlcicd_dagster.component import load_spec

    monkeypatch.setenv("MLCICD_GPU_COUNT", "1")
    digits, diabetes = load_spec(ASSETS / "digits"), load_spec(ASSETS / "diabetes")
    assert digits.task_type.name == "multiclass" and len(digits.task_type.classes) == 10
    assert digits.trainer == "torch" and digits.model_factory == "assets.digits.model:small_cnn"
    assert diabetes.task_type.name == "regression" and diabetes.categorical_features == ("sex",)

    def k8s(spec, step):  # as Dagster stores op tags: JSON text
        tags = {k: json.dumps(v) for k, v in spec.op_tags(step).items()}
        return get_user_defined_k8s_config(tags).container_config["resources"]

    gpu = k8s(digits, "model")
    assert str(gpu["limits"]["nvidia.com/gpu"]) == "1"
    for spec, step in ((digits, "training_set"), (diabetes, "model")):
        res = k8s(spec, step)
        assert "nvidia.com/gpu" not in res.get("limits", {})


@pytest.mark.parametrize(
    ("pipeline", "override", "field", "message"),
    [
        ("digits", {"classes": None}, "classes", "must declare its classes"),
        ("digits", {"classes": [0, 1, 2]}, "label", "not one of the declared multiclass"),
        ("diabetes", {"classes": [1, 2, 3]}, "classes", "regression task has no classes"),
        ("diabetes", {"training": {"model_params": {"a": 1}}}, "training.model_params", "factory"),
        ("diabetes", {"label": "sex"}, "label", "also listed as a feature"),
    ],
)
def test_bad_task_config_is_refused_at_load_naming_the_field(
    home_dir, tmp_path, pipeline, override, field, message
):
    with pytest.raises(Exception) as info:
        _load(tmp_path, _attrs(pipeline, **override))
    text = _error_text(info.value)
    assert field in text and message in text, text


def _land(home_dir, pipeline: str, name: str, df: pd.DataFrame) -> None:
    landing = home_dir / "landing" / pipeline
    landing.mkdir(parents=True, exist_ok=True)
    df.to_csv(landing / f".{name}.tmp", index=False)
    os.replace(landing / f".{name}.tmp", landing / name)
    past = time.time() - 5
    os.utime(landing / name, (past, past))


def test_data_gate_quarantines_labels_that_do_not_fit_the_task(home_dir, instance, monkeypatch):
    """A digit 11 and a text progression are valid-looking rows the suite does not catch:
    the gate judges the label against the declared task and says why."""
    monkeypatch.setenv("MLCICD_LANDING_SETTLE_SECONDS", "0")
    import definitions

    module = importlib.reload(definitions)
    digits = pd.read_csv(ASSETS / "digits" / "data" / "pool.csv.gz").head(200)
    bad_digits = digits.copy()
    bad_digits.loc[bad_digits.index[:3], "digit"] = 11
    diabetes = pd.read_csv(ASSETS / "diabetes" / "data" / "pool.csv.gz").head(150)
    bad_diabetes = diabetes.copy().astype({"progression": object})
    bad_diabetes.loc[bad_diabetes.index[:2], "progression"] = "unknown"
    diabetes.loc[diabetes.index[:10], "bmi"] = None  # missing values the suite allows
    diabetes.loc[diabetes.index[10:12], "sex"] = None
    cases = {
        ("digits", "good.csv"): digits,
        ("digits", "bad.csv"): bad_digits,
        ("diabetes", "good.csv"): diabetes,
        ("diabetes", "bad.csv"): bad_diabetes,
    }
    for (pipeline, name), frame in cases.items():
        _land(home_dir, pipeline, name, frame)
    outcomes = {}
    for pipeline in ("digits", "diabetes"):
        sensor = next(s for s in module.defs.sensors if s.name == f"{pipeline}_landing")
        ctx = dg.build_sensor_context(
            instance=instance, definitions=module.defs, resources=module.defs.resources
        )
        result = sensor(ctx)
        for req in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        job = module.defs.resolve_job_def(f"{pipeline}_ingest")
        for req in result.run_requests:
            run = job.execute_in_process(
                instance=instance,
                partition_key=req.partition_key,
                asset_selection=[
                    dg.AssetKey([pipeline, "raw_batch"]),
                    dg.AssetKey([pipeline, "validated_batch"]),
                ],
                raise_on_error=False,
            )
            # a rejected batch is a green run (the gate did its job) that builds nothing downstream
            assert run.success, pipeline
            validated = dg.AssetKey([pipeline, "validated_batch"])
            outcomes[(pipeline, req.tags["mlcicd/landed_file"])] = any(
                e.asset_key == validated for e in run.get_asset_materialization_events()
            )
    assert outcomes == {
        ("digits", "good.csv"): True,
        ("digits", "bad.csv"): False,
        ("diabetes", "good.csv"): True,
        ("diabetes", "bad.csv"): False,
    }
    reason = json.loads((home_dir / "quarantine" / "digits" / "bad.csv.reason.json").read_text())
    assert reason["kind"] == "label_does_not_fit_task" and reason["rows"] == 3
    assert reason["values"] == {"11": 3} and "declared multiclass classes" in reason["summary"]
    reason = json.loads((home_dir / "quarantine" / "diabetes" / "bad.csv.reason.json").read_text())
    assert reason["kind"] == "label_does_not_fit_task" and reason["values"] == {"unknown": 2}
    lake = pd.read_parquet(next((home_dir / "lake" / "diabetes" / "validated").glob("*.parquet")))
    assert lake["bmi"].isna().sum() == 10 and lake["patient_id"].str.startswith("p-").all()
    # diabetes' gates are designed for a holdout of at least 60 rows and wait for it
    # (design.wait_for_holdout_rows): 150 patients give 33, so no model is trained yet;
    # digits sets no such minimum and trains on its 200 images
    ticks = {}
    for pipeline in ("digits", "diabetes"):
        sensor = next(s for s in module.defs.sensors if s.name == f"{pipeline}_training")
        ticks[pipeline] = sensor(
            dg.build_sensor_context(
                instance=instance, definitions=module.defs, resources=module.defs.resources
            )
        )
    assert len(ticks["digits"].run_requests) == 1, ticks["digits"]
    skip = ticks["diabetes"]
    assert isinstance(skip, dg.SkipReason), skip
    why = skip.skip_message or ""
    assert why.startswith("waiting for more rows: the 150 landed rows give a 33-row holdout")
    assert "needs 60 (design.holdout_rows in gates.yaml)" in why
