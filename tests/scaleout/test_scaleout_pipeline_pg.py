"""End to end on the scale-out configuration: `mlcicd cycle` (the real CLI, in a
subprocess) runs the credit_default pipeline with Dagster's storage on PostgreSQL and
MLflow at a tracking server whose backend store is PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlcicd_dagster.platform.k8s_storage import dagster_instance_config, write_dagster_yaml

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "assets" / "credit_default" / "data"
CYCLE_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    from conftest_mlflow import running_mlflow_server

    with running_mlflow_server(postgres, tmp_path_factory.mktemp("mlflow-e2e"), "mlflow_e2e") as s:
        yield s


def test_cycle_runs_the_pipeline_on_postgres(postgres, mlflow_server, tmp_path):
    url, artifacts = mlflow_server
    postgres.create_database("dagster_e2e")
    home = tmp_path / "home"
    # The instance config the cluster uses (storage on PostgreSQL), put where the CLI looks.
    write_dagster_yaml(home / "dagster", dagster_instance_config(max_concurrent_runs=None))
    landing = home / "landing" / "credit_default"
    landing.mkdir(parents=True)
    pd.read_csv(DATA / "pool.csv.gz").head(3000).to_csv(landing / "batch-0001.csv", index=False)
    past = os.path.getmtime(landing / "batch-0001.csv") - 60
    os.utime(landing / "batch-0001.csv", (past, past))
    env = {
        **os.environ,
        **postgres.env("dagster_e2e"),
        "MLCICD_HOME": str(home),
        "MLFLOW_TRACKING_URI": url,
        "MLCICD_LANDING_SETTLE_SECONDS": "0",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    env.pop("DAGSTER_HOME", None)
    out = subprocess.run(
        [sys.executable, "-m", "mlcicd_dagster.cli", "cycle", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=CYCLE_TIMEOUT_S,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads(out.stdout[out.stdout.index("{") :])
    assert report["runs"], report
    run_ids = {r["run_id"] for r in report["runs"]}
    rows = dict(postgres.query("dagster_e2e", "SELECT run_id, status FROM runs"))
    assert run_ids <= set(rows)
    materialized = {
        r[0]
        for r in postgres.query(
            "dagster_e2e",
            "SELECT DISTINCT asset_key FROM event_logs "
            "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'",
        )
    }
    assert any("raw_batch" in k for k in materialized)
    assert any("validated_batch" in k for k in materialized)
    versions = postgres.query(
        "mlflow_e2e", "SELECT version FROM model_versions WHERE name = 'credit_default'"
    )
    if any("model" in k and "credit_default" in k for k in materialized):
        assert versions, "a model was materialized but nothing is registered in PostgreSQL"
        assert any(artifacts.rglob("MLmodel"))
