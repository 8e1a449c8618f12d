"""The whole code location loads, in every environment of the table, with its parts."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from tests_support import ROOT

PIPELINES = ("credit_default", "diabetes", "digits")  # binary, regression, multiclass
EXPECTED_ASSETS = {
    f"{p}/{a}"
    for p in PIPELINES
    for a in ("raw_batch", "validated_batch", "training_set", "model", "deployment", "monitoring")
}


def _load():
    import definitions

    return importlib.reload(definitions).defs


def test_definitions_load_with_every_asset_check_sensor_and_job(home_dir):
    defs = _load()
    keys = {s.key.to_user_string() for s in defs.resolve_all_asset_specs()}
    assert keys == EXPECTED_ASSETS
    checks = {k.to_user_string() for k in defs.resolve_asset_graph().asset_check_keys}
    for gate in ("non_inferiority", "slices", "behavioral", "serving_budget", "infra_validation"):
        assert f"credit_default/model:{gate}" in checks
    assert "credit_default/raw_batch:data_suite" in checks
    sensors = {s.name for s in defs.sensors}
    assert {"credit_default_landing", "credit_default_run_failure_alert"} <= sensors
    for s in defs.sensors:
        assert s.default_status == dg.DefaultSensorStatus.RUNNING
    assert {j.name for j in defs.jobs} >= {"credit_default_ingest", "credit_default_retrain"}
    dg.Definitions.validate_loadable(defs)


def test_raw_batch_check_is_blocking_and_downstream_waits_for_checks(home_dir):
    defs = _load()
    graph = defs.resolve_asset_graph()
    suite = dg.AssetCheckKey(dg.AssetKey(["credit_default", "raw_batch"]), "data_suite")
    assert graph.get_check_spec(suite).blocking
    node = graph.get(dg.AssetKey(["credit_default", "validated_batch"]))
    assert "all_deps_blocking_checks_passed" in str(node.automation_condition)


def test_unknown_environment_fails_with_a_clear_error(monkeypatch):
    from mlcicd_dagster.platform.environments import current_environment

    monkeypatch.setenv("MLCICD_ENV", "moon")
    with pytest.raises(ValueError, match="MLCICD_ENV='moon' is not a known environment"):
        current_environment()


def test_k8s_environment_composes_k8s_executor(home_dir, monkeypatch):
    monkeypatch.setenv("MLCICD_ENV", "k8s")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    defs = _load()
    job = defs.resolve_job_def("credit_default_ingest")
    assert "k8s" in job.executor_def.name
    from mlcicd_dagster.platform.deploy_targets import K8sDeployTarget, LocalDeployTarget

    assert isinstance(defs.resources["deploy_target"], K8sDeployTarget)
    monkeypatch.setenv("MLCICD_ENV", "local")
    assert isinstance(_load().resources["deploy_target"], LocalDeployTarget)


def test_deploy_target_is_a_resource_of_the_environment(home_dir, tmp_path):
    """The deployment's ops and the rollout controller ask for the ``deploy_target``
    resource; the environments table binds it; a sensor context built from the
    definitions' resources (no ``with`` block) runs the controller on that target."""
    from mlcicd_dagster.platform.deploy_targets import LocalDeployTarget

    defs = _load()
    controller = next(s for s in defs.sensors if s.name == "credit_default_rollout_controller")
    assert {"mlcicd", "deploy_target"} <= controller.required_resource_keys
    job = defs.resolve_job_def("credit_default_deploy")
    used = {k for op in job.all_node_defs for k in getattr(op, "required_resource_keys", set())}
    assert "deploy_target" in used, used

    class Recording(LocalDeployTarget):
        def target(self, spec, mlcicd):
            seen.append(spec.model_name)
            return super().target(spec, mlcicd)

    seen: list[str] = []
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        ctx = dg.build_sensor_context(
            instance=instance,
            definitions=defs,
            resources={**defs.resources, "deploy_target": Recording()},
        )
        controller(ctx)  # nothing deployed yet: idle, on the bound target
    assert seen == ["credit_default"]


def test_importing_definitions_loads_no_heavy_library(home_dir):
    code = (
        "import sys, definitions; "
        "print(','.join(m for m in ('torch','mlflow','great_expectations','sklearn',"
        "'dagster_k8s','dagster_mlflow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_dagster_cli_validates_the_code_location_from_the_repo_root(home_dir):
    exe = str(Path(sys.executable).with_name("dagster"))
    out = subprocess.run([exe, "definitions", "validate"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
