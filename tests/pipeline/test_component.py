"""The MLPipeline component: YAML in, definitions out; bad fields refused by name."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests_support import ROOT

from mlcicd_dagster.errors import ConfigError, MlcicdError

CREDIT = ROOT / "assets" / "credit_default"
_names = itertools.count()


def _attrs(**over) -> dict:
    attrs = yaml.safe_load((CREDIT / "defs.yaml").read_text())["attributes"]
    # the shipped files, by absolute path, so a copy of the instance loads anywhere
    for key in ("golden", "sample", "suite", "gates", "behavioral"):
        attrs[key] = str(CREDIT / attrs[key])
    attrs.update(over)
    return attrs


def _location_dir(tmp_path: Path, pipelines: dict[str, dict]) -> Path:
    """A defs folder (importable package, unique name) with one defs.yaml per pipeline."""
    package = f"mlcicd_test_defs_{next(_names)}"
    folder = tmp_path / package
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name, attrs in pipelines.items():
        (folder / name).mkdir()
        doc = {"type": "mlcicd_dagster.MLPipeline", "attributes": attrs}
        (folder / name / "defs.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def _load(tmp_path: Path, pipelines: dict[str, dict]):
    from mlcicd_dagster.location import load_location

    return load_location(_location_dir(tmp_path, pipelines))


def _error_text(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return "\n".join(parts)


def test_shipped_instance_resolves_to_the_spec(home_dir):
    from mlcicd_dagster.component import load_spec

    spec = load_spec(CREDIT)
    assert spec.dataset == spec.model_name == "credit_default"
    assert spec.task == "binary" and spec.label == "default.payment.next.month"
    assert spec.behavioral_path == CREDIT / "behavioral.yaml"
    assert spec.golden_path == CREDIT / "data" / "golden.csv.gz"
    assert len(spec.features) == 23 and spec.owners == ("team:credit-risk",)
    assert spec.monitoring_start is None  # relative to today, not a fixed date
    assert (spec.rollout.alpha_rollback, spec.rollout.alpha_promote) == (0.01, 0.05)


def test_declared_error_rates_reach_the_canary_and_the_shadow_analysis(home_dir):
    from dataclasses import replace

    from mlcicd_dagster.component import load_spec
    from mlcicd_dagster.pipeline.deploy_ops import canary_config, shadow_config

    spec = load_spec(CREDIT)
    for config in (canary_config(spec), shadow_config(spec)):
        assert config.analysis.alpha_rollback == 0.01
        assert config.analysis.alpha_promote == 0.05
        assert config.analysis.metrics[0].name == "log_loss"
    # a regression is judged on its absolute error, in a canary and in a shadow alike
    regression = replace(spec, task="regression")
    for config in (canary_config(regression, 30.0), shadow_config(regression, 30.0)):
        assert config.analysis.metrics[0].name == "abs_error"
        assert config.analysis.metrics[0].margin == 3.0
        assert config.analysis.alpha_rollback == 0.01


def test_two_pipelines_in_one_location_each_with_its_assets_owners_and_sensors(home_dir, tmp_path):
    loc = _load(tmp_path, {"alpha": _attrs(), "beta": _attrs(owners=["ml@example.com"])})
    assert sorted(loc.pipelines) == ["alpha", "beta"]
    specs = {s.key.to_user_string(): s for s in loc.defs.resolve_all_asset_specs()}
    for name in ("alpha", "beta"):
        for asset in ("raw_batch", "validated_batch", "training_set", "model", "deployment"):
            assert f"{name}/{asset}" in specs
    assert specs["alpha/model"].owners == ["team:credit-risk"]
    assert specs["beta/deployment"].owners == ["ml@example.com"]
    sensors = {s.name for s in loc.defs.sensors}
    assert {"alpha_landing", "beta_landing", "beta_run_failure_alert"} <= sensors
    assert [s.name for s in loc.pipeline("beta").sensors][0] == "beta_landing"
    with pytest.raises(ConfigError, match="several pipelines .*--pipeline NAME"):
        loc.pipeline(None)
    with pytest.raises(ConfigError, match="no pipeline 'gamma' here"):
        loc.pipeline("gamma")
    import dagster as dg

    dg.Definitions.validate_loadable(loc.defs)


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ({"task": "ranking"}, "task", "binary"),
        ({"label": "no_such_column"}, "label", "not a column of the golden set"),
        ({"id_column": "NOPE"}, "id_column", "not a column of the golden set"),
        ({"features": {"numeric": ["AGE", "SALARY"]}}, "features", "SALARY"),
        ({"golden": "missing.csv"}, "golden", "file not found"),
        (
            {"training": {"factory": "no_such_package.models:make"}},
            "training.factory",
            "does not import",
        ),
        (
            {"training": {"factory": "mlcicd_dagster.errors:make_model"}},
            "training.factory",
            "defines no 'make_model'",
        ),
        ({"rollout": {"canary_steps": [0.5, 0.25]}}, "rollout.canary_steps", "increasing"),
        ({"rollout": {"alpha_rollback": 0.0}}, "rollout.alpha_rollback", "not in (0, 0.5]"),
        ({"rollout": {"alpha_promote": 0.9}}, "rollout.alpha_promote", "not in (0, 0.5]"),
        ({"monitoring": {"window_minutes": 7}}, "monitoring.window_minutes", "divide an hour"),
        ({"owners": ["bob"]}, "owners", "team:name"),
        ({"colour": "blue"}, "colour", "xtra"),
    ],
)
def test_bad_fields_are_refused_when_the_location_loads_naming_the_field(
    home_dir, tmp_path, override, field, message
):
    with pytest.raises(Exception) as info:
        _load(tmp_path, {"bad": _attrs(**override)})
    text = _error_text(info.value)
    assert field in text and message in text, text


def test_factory_is_checked_without_importing_it(tmp_path, monkeypatch):
    from mlcicd_dagster.component import _factory_problem

    pkg = tmp_path / "userpkg_factory_check"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("raise SystemExit('imported!')\ndef make(): ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _factory_problem("userpkg_factory_check.models:make") is None
    assert _factory_problem("userpkg_factory_check.models.make") is None
    assert "defines no 'other'" in (_factory_problem("userpkg_factory_check.models:other") or "")
    assert "userpkg_factory_check.models" not in sys.modules


def test_errors_share_one_base_class():
    from mlcicd_dagster.cli import CliError

    assert issubclass(ConfigError, MlcicdError) and issubclass(ConfigError, ValueError)
    assert issubclass(CliError, MlcicdError)


def _dg(*args: str, cwd: Path = ROOT, timeout: int = 240) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("dg")
    env = {**os.environ, "PATH": f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_dg_checks_and_lists_the_repo_definitions(home_dir):
    out = _dg("check", "defs")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    out = _dg("list", "defs", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    listed = json.loads(out.stdout[out.stdout.index("{") :])
    assets = {a["asset_key"]: a for a in listed["assets"]}
    assert "credit_default/model" in assets and "credit_default/monitoring" in assets
    assert assets["credit_default/model"]["owners"] == [{"team": "credit-risk"}]
    assert assets["credit_default/model"]["source"].startswith("assets/credit_default/defs.yaml")


def test_dg_scaffold_without_data_writes_a_template_naming_every_field(tmp_path):
    project = tmp_path / "project"
    (project / "assets").mkdir(parents=True)
    (project / "assets" / "__init__.py").write_text("")
    shutil.copy(ROOT / "pyproject.toml", project / "pyproject.toml")
    out = _dg("scaffold", "defs", "mlcicd_dagster.MLPipeline", "churn", cwd=project)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    doc = yaml.safe_load((project / "assets" / "churn" / "defs.yaml").read_text())
    from mlcicd_dagster.component import MLPipeline

    assert doc["type"] == "mlcicd_dagster.MLPipeline"
    assert set(doc["attributes"]) <= set(MLPipeline.model_fields)
    MLPipeline.resolve_from_dict(doc["attributes"])  # the template is a valid instance


def test_dg_scaffold_writes_an_instance_that_loads(home_dir, tmp_path):
    """``dg scaffold defs mlcicd_dagster.MLPipeline NAME`` in a copy of the project."""
    pytest.importorskip("mlcicd_dagster.init.scaffold")
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "definitions.py"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "sensors", project / "sensors")
    (project / "assets").mkdir()
    (project / "assets" / "__init__.py").write_text("")
    data = tmp_path / "churn.csv"
    import pandas as pd

    # init sizes the gates at the file's size: 5,000 credit rows are about the fewest
    # at which an equally good model passes with an AUC margin under 0.1 (fewer: refused)
    pd.read_csv(CREDIT / "data" / "pool.csv.gz").head(5000).to_csv(data, index=False)
    params = json.dumps({"data": str(data), "label": "default.payment.next.month"})
    out = _dg(
        "scaffold", "defs", "mlcicd_dagster.MLPipeline", "churn", "--json-params", params,
        cwd=project,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    defs_yaml = project / "assets" / "churn" / "defs.yaml"
    doc = yaml.safe_load(defs_yaml.read_text())
    assert doc["type"] == "mlcicd_dagster.MLPipeline"
    assert doc["attributes"]["label"] == "default.payment.next.month"
    out = _dg("check", "defs", cwd=project)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_dg_launch_runs_an_asset_through_the_code_location(home_dir):
    """``dg launch --assets`` from the repo root executes the real step: with an empty
    lake the training step fails, and says why."""
    env_home = {"MLCICD_HOME": str(home_dir), "DAGSTER_HOME": str(home_dir)}
    exe = Path(sys.executable).with_name("dg")
    env = {**os.environ, **env_home, "PATH": f"{exe.parent}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(
        [str(exe), "launch", "--assets", "credit_default/training_set"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode != 0 or "Materialization failed" in text
    assert "no validated batch" in text, text[-3000:]


def test_the_pipelines_behavioral_file_is_the_one_the_gate_reads(tmp_path):
    from mlcicd_dagster.component import load_spec
    from mlcicd_dagster.pipeline.model_gate import _gate_config

    spec = load_spec(CREDIT)
    assert _gate_config(spec.gates_path, spec.behavioral_path).behavioral_path == (
        CREDIT / "behavioral.yaml"
    )
    other = tmp_path / "other.yaml"
    other.write_text("invariance: []\n")
    assert _gate_config(spec.gates_path, other).behavioral_path == other
