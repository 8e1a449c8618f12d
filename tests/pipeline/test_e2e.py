"""End to end on the embedded defaults: a landed file becomes the serving model.

One home for the module: the landing sensor and the ingest job run through
``run_cycle`` on a real Dagster instance and MLflow store; a real model server
(subprocess, loopback) follows the blue-green switch; then `mlcicd status`,
`mlcicd ci` and `mlcicd cycle` are exercised as a user would.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from tests_support import DATA, ROOT, scoped_environ

pytestmark = pytest.mark.slow
LABEL = "default.payment.next.month"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home_root = tmp_path_factory.mktemp("e2e") / "home"
    env = {
        "MLCICD_HOME": str(home_root),
        "MLCICD_LANDING_SETTLE_SECONDS": "0",
    }
    with scoped_environ(env):
        import definitions
        from mlcicd_dagster.cli import dagster_instance
        from mlcicd_dagster.demo.landing import land_frame
        from mlcicd_dagster.pipeline.cycle import run_cycle
        from mlcicd_dagster.platform.home import Home
        from mlcicd_dagster.serving import start_subprocess

        module = importlib.reload(definitions)
        home = Home.from_env().ensure("credit_default")
        server, url = start_subprocess(home, "credit_default", port=0, env=env)
        pool = pd.read_csv(DATA / "pool.csv.gz")
        land_frame(home.landing("credit_default"), "first batch.csv", pool.head(4000))
        instance = dagster_instance()
        report = run_cycle(module.defs, instance)
        try:
            yield {"home": home, "url": url, "report": report, "pool": pool, "env": env}
        finally:
            server.terminate()
            server.wait(timeout=30)
            instance.dispose()


def _score(url: str, rows: pd.DataFrame) -> httpx.Response:
    body = {"dataframe_split": rows.drop(columns=[LABEL]).to_dict(orient="split")}
    body["dataframe_split"].pop("index")
    return httpx.post(f"{url}/invocations", json=body, timeout=10)


def test_landed_file_becomes_the_serving_model(served):
    (run,) = [r for r in served["report"].runs if r.job == "credit_default_ingest"]
    assert run.outcome == "success", run
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = _score(served["url"], served["pool"].tail(5))
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    assert r.headers["X-Model-Version"] == "1"
    preds = r.json()["predictions"]
    # class probabilities per row, as the logged pyfunc (and mlflow models serve) answer
    assert len(preds) == 5 and all(len(row) == 2 and abs(sum(row) - 1) < 1e-9 for row in preds)
    assert len(r.headers["X-Request-Id"].split(",")) == 5
    ids = r.headers["X-Request-Id"].split(",")
    fb = httpx.post(
        f"{served['url']}/feedback", json={"request_id": ids[0], "label": 1}, timeout=10
    )
    assert fb.status_code == 200
    unknown = httpx.post(
        f"{served['url']}/feedback", json={"request_id": "nope", "label": 1}, timeout=10
    )
    assert unknown.status_code == 404


def _cli(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mlcicd")
    full_env = {**os.environ, **env}
    full_env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [str(exe), *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def test_status_json_names_the_serving_version_and_tracking_uri(served):
    out = _cli("status", "--json", "--pipeline", "credit_default", env=served["env"])
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["deployment"]["stable"]["version"] == "1"
    assert status["deployment"]["alias_mismatches"] == []
    assert status["mlflow_tracking_uri"].startswith("sqlite:///")
    assert str(served["home"].root) in status["mlflow_tracking_uri"]
    assert set(status["gates"]) == {
        "non_inferiority",
        "slices",
        "behavioral",
        "serving_budget",
        "infra_validation",
    }
    assert all(g["passed"] for g in status["gates"].values())


def test_cycle_with_nothing_new_exits_zero_and_says_so(served):
    out = _cli("cycle", env=served["env"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Nothing to do" in out.stdout


def test_defective_batch_is_rejected_and_cycle_still_exits_zero(served):
    from mlcicd_dagster.demo.landing import land_frame

    bad = served["pool"].iloc[4000:4300].copy()
    bad[LABEL] = 7
    land_frame(served["home"].landing("credit_default"), "broken.csv", bad)
    out = _cli("cycle", "--json", env=served["env"])
    assert out.returncode == 0, out.stdout + out.stderr  # a gate that rejects did its job
    report = json.loads(out.stdout[out.stdout.index("{") :])
    (run,) = [r for r in report["runs"] if r["job"] == "credit_default_ingest"]
    assert run["outcome"] == "rejected"
    assert "credit_default/raw_batch:data_suite" in run["failed_checks"]
    reason = json.loads(
        (served["home"].quarantine("credit_default") / "broken.csv.reason.json").read_text()
    )
    assert LABEL in json.dumps(reason)


def test_mlcicd_ci_judges_a_code_change_against_the_champion(served, tmp_path):
    report = tmp_path / "ci.md"
    out = _cli(
        "ci",
        "--pipeline",
        "credit_default",
        "--report",
        str(report),
        "--sample-rows",
        "5000",
        env=served["env"],
    )
    text = report.read_text()
    assert "non_inferiority" in text and "infra_validation" in text
    assert "champion" in text.lower()
    # the scratch run never touched the production store: still one registered version
    status = json.loads(
        _cli("status", "--json", "--pipeline", "credit_default", env=served["env"]).stdout
    )
    assert status["deployment"]["stable"]["version"] == "1"
    assert out.returncode in (0, 1)
    assert ("PASS" in text) == (out.returncode == 0)


@pytest.mark.timeout(1800)  # a retrain, the gates and a rollout decision on a busy machine
def test_a_rejected_model_is_a_green_run_that_says_what_still_serves(served):
    """A poisoned batch (valid data, inverted labels): the model gates reject its model.
    A rejection is not an error: the run is green, the gates' checks say `rejected`
    with the reason, `deployment` records that v1 still serves, the alert's kind is
    `rejected`, and nothing is deployed."""
    import dagster as dg

    from mlcicd_dagster.cli import dagster_instance
    from mlcicd_dagster.demo.landing import land_frame

    home = served["home"]
    poisoned = served["pool"].iloc[5000:9000].copy()
    poisoned[LABEL] = 1 - poisoned[LABEL]
    land_frame(home.landing("credit_default"), "poisoned.csv", poisoned)
    out = _cli("cycle", "--json", env=served["env"], timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout[out.stdout.index("{") :])
    # the batch itself is valid (ingest succeeds); the retrain it triggers is rejected
    (run,) = [r for r in report["runs"] if "model:non_inferiority" in str(r["failed_checks"])]
    assert run["job"] == "credit_default_retrain" and run["outcome"] == "rejected", run
    assert "credit_default/model:non_inferiority" in run["failed_checks"]

    instance = dagster_instance()
    try:
        assert instance.get_run_by_id(run["run_id"]).status == dg.DagsterRunStatus.SUCCESS
        records = instance.fetch_materializations(
            dg.AssetKey(["credit_default", "deployment"]), limit=20
        ).records
        (event,) = [r for r in records if r.run_id == run["run_id"]]  # the retrain's own
        meta = event.asset_materialization.metadata
        assert meta["outcome"].value == "rejected"
        assert meta["still_serving"].value == "v1"
        (evaluation,) = [
            e.dagster_event.event_specific_data
            for e in instance.all_logs(
                run["run_id"], of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
            )
            if e.dagster_event.event_specific_data.check_name == "non_inferiority"
        ]  # the retrain's own verdict (a later bisect may retrain without the bad batch)
        assert not evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
        assert evaluation.metadata["outcome"].value == "rejected"
        assert "design_false_rejection" in evaluation.metadata
    finally:
        instance.dispose()
    alerts = [json.loads(x) for x in home.alerts.read_text().splitlines()]
    rejected = [a for a in alerts if a["kind"] == "rejected" and "model" in a["title"]]
    assert rejected and "non_inferiority" in rejected[-1]["details"]["reason"]
    assert rejected[-1]["details"]["still_serving"] == "v1"
    assert not [a for a in alerts if a["kind"] in ("run_failure", "run_error", "run_rejected")]
