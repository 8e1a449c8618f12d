"""Gate rules are checked when the pipeline loads, and drift blocking rules work.

* a gates config whose design would reject an equally good model > 10% of the time is
  refused at load, with the fix (a margin, or how many rows);
* a malformed drift rule is refused at load, naming the key or column;
* drift in a ``block_on`` column rejects the batch on a real Dagster instance: green
  run, the ``drift`` check failed on the batch's partition with ``outcome: rejected``,
  the file quarantined with the reason, ``validated_batch`` not built.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from tests_support import ROOT

from mlcicd_dagster.models.config import GateConfigError

ASSETS = ROOT / "assets" / "credit_default"
LABEL = "default.payment.next.month"


@pytest.fixture
def spec():
    from mlcicd_dagster.component import load_spec

    return load_spec(ASSETS)


def _gates_yaml(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((ASSETS / "gates.yaml").read_text())
    raw.update(changes)
    raw["behavioral_path"] = str(ASSETS / "behavioral.yaml")
    out = tmp_path / f"gates{len(list(tmp_path.glob('gates*.yaml')))}.yaml"  # configs are cached
    out.write_text(yaml.safe_dump(raw))
    return out


def test_a_design_that_rejects_equal_models_is_refused_at_load_with_the_fix(spec, tmp_path):
    from mlcicd_dagster.pipeline.model_assets import build_model_assets

    narrow = dataclasses.replace(
        spec, gates_path=_gates_yaml(tmp_path, auc_margin=0.02, logloss_margin=0.01)
    )
    with pytest.raises(GateConfigError) as err:
        build_model_assets(narrow)
    text = str(err.value)
    assert "equally good model" in text and "> 10%" in text
    assert "use a margin >=" in text and "rows" in text
    # the shipped config loads, and its checks are the registered gates it names
    assets, (checks,) = build_model_assets(spec)
    names = {key.name for key in checks.check_keys}
    assert names == {
        "non_inferiority", "slices", "behavioral", "serving_budget", "infra_validation"
    }  # fmt: skip
    only = dataclasses.replace(
        spec, gates_path=_gates_yaml(tmp_path, gates=["non_inferiority", "infra_validation"])
    )
    _, (checks,) = build_model_assets(only)
    assert {key.name for key in checks.check_keys} == {"non_inferiority", "infra_validation"}
    with pytest.raises(GateConfigError, match="unknown gate"):
        build_model_assets(dataclasses.replace(spec, gates_path=_gates_yaml(tmp_path, gates=["x"])))


def _suite_with(tmp_path: Path, drift: dict) -> Path:
    raw = yaml.safe_load((ASSETS / "expectations.yaml").read_text())
    raw["meta"]["mlcicd"]["drift"] = drift
    out = tmp_path / f"suite{len(list(tmp_path.glob('suite*.yaml')))}.yaml"  # suites are cached
    out.write_text(yaml.safe_dump(raw))
    return out


def test_bad_drift_rules_are_refused_at_load(spec, tmp_path):
    from mlcicd_dagster.data.suite import SuiteError
    from mlcicd_dagster.pipeline.data_assets import build_data_assets

    parts = dg.DynamicPartitionsDefinition(name="x")
    for drift, message in (
        ({"block_on": ["NOPE"]}, "NOPE"),
        ({"blockon": [LABEL]}, "unknown key"),
        ({"block_on": LABEL}, "list"),
        ({"alpha": 2}, "alpha"),
    ):
        bad = dataclasses.replace(spec, suite_path=_suite_with(tmp_path, drift))
        with pytest.raises(SuiteError, match=message):
            build_data_assets(bad, parts)


def test_drift_in_a_blocking_column_rejects_the_batch(spec, tmp_path, home_dir, instance):
    from mlcicd_dagster.pipeline import build_pipeline
    from mlcicd_dagster.platform.environments import current_environment

    blocking = dataclasses.replace(
        spec, suite_path=_suite_with(tmp_path, {"block_on": [LABEL], "alpha": 0.01})
    )
    p = build_pipeline(blocking)
    defs = dg.Definitions(
        assets=p.assets,
        asset_checks=p.asset_checks,
        jobs=p.jobs,
        resources=current_environment().resources(),
    )
    rows = pd.read_csv(ASSETS / "data" / "pool.csv.gz").head(600)
    flipped = rows.copy()
    flipped[LABEL] = 1 - flipped[LABEL]  # valid data, labels inverted: the label drifts
    landing = home_dir / "landing" / "credit_default"
    landing.mkdir(parents=True)
    outcomes = {}
    for name, frame in (("fine.csv", rows), ("flipped.csv", flipped)):
        frame.to_csv(landing / name, index=False)
        past = time.time() - 5
        os.utime(landing / name, (past, past))
        from mlcicd_dagster.data.landing import partition_key_for

        key = partition_key_for(name)
        instance.add_dynamic_partitions(blocking.partitions_name, [key])
        outcomes[name] = (key, defs.resolve_job_def(p.job_name("ingest")).execute_in_process(
            instance=instance,
            partition_key=key,
            asset_selection=[
                dg.AssetKey(blocking.key("raw_batch")),
                dg.AssetKey(blocking.key("validated_batch")),
            ],
            raise_on_error=False,
        ))  # fmt: skip
    key, result = outcomes["flipped.csv"]
    assert result.success  # a rejection, not an error
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    drift = checks["drift"]
    assert not drift.passed and drift.metadata["outcome"].value == "rejected"
    assert drift.partition == key and LABEL in drift.description
    assert checks["data_suite"].passed  # the data itself is valid
    assert not [
        m for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey(blocking.key("validated_batch"))
    ]  # fmt: skip
    reason = json.loads(
        (home_dir / "quarantine" / "credit_default" / "flipped.csv.reason.json").read_text()
    )
    assert reason["kind"] == "drift"
    _, fine = outcomes["fine.csv"]
    assert fine.success
    assert {e.check_name: e.passed for e in fine.get_asset_check_evaluations()}["data_suite"]
    assert [
        m for m in fine.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey(blocking.key("validated_batch"))
    ]  # fmt: skip
