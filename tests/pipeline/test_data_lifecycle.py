"""Batches over their life, on a real Dagster instance and MLflow store.

One home for the module: a first batch makes v1 champion; then a burst of three
batches (one with inverted labels) lands at once: three data gates, one training
(rejected on the golden set), a data bisect that names the poisoned batch and
revokes it, and one training without it. Revocation by the CLI and by the Dagster
job; a copied home re-ingests nothing and registers into its own artifact folder.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from tests_support import DATA, scoped_environ

# the module's fixture trains four models and bisects (about 2 minutes on an idle 2-core box)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
LABEL = "default.payment.next.month"
ENV = {
    "MLCICD_LANDING_SETTLE_SECONDS": "0",
    # no traffic in this test: a canary is judged (and rolled back) within seconds
    "MLCICD_CANARY_CHECK_INTERVAL_S": "0.5",
    "MLCICD_CANARY_STEP_MIN_DURATION_S": "1",
    "MLCICD_CANARY_MAX_DURATION_S": "3",
}


def _instance(home):
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from mlcicd_dagster.platform.dagster_home import ensure_dagster_home

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(ensure_dagster_home(home))))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifecycle")
    env = {**ENV, "MLCICD_HOME": str(root / "home")}
    with scoped_environ(env):
        import definitions
        from mlcicd_dagster.demo.landing import land_frame
        from mlcicd_dagster.pipeline.cycle import run_cycle
        from mlcicd_dagster.platform.home import Home

        module = importlib.reload(definitions)
        home = Home.from_env().ensure("credit_default")
        pool = pd.read_csv(DATA / "pool.csv.gz").sample(frac=1.0, random_state=3)
        pool = pool.reset_index(drop=True)
        land_frame(home.landing("credit_default"), "a.csv", pool.iloc[:4000])
        instance = _instance(home)
        first = run_cycle(module.defs, instance)
        poisoned = pool.iloc[4000:6500].copy()
        poisoned[LABEL] = 1 - poisoned[LABEL]
        land_frame(home.landing("credit_default"), "b.csv", pool.iloc[6500:7500])
        land_frame(home.landing("credit_default"), "p.csv", poisoned)
        land_frame(home.landing("credit_default"), "c.csv", pool.iloc[7500:8500])
        burst = run_cycle(module.defs, instance)
        try:
            yield {
                "module": module,
                "home": home,
                "instance": instance,
                "first": first,
                "burst": burst,
                "pool": pool,
                "root": root,
            }
        finally:
            instance.dispose()


def _jobs(report) -> list[tuple[str, str]]:
    return [(r.job, r.outcome) for r in report.runs]


def test_first_batch_gets_one_data_gate_and_one_training(world):
    assert _jobs(world["first"]) == [
        ("credit_default_ingest", "success"),
        ("credit_default_retrain", "success"),
    ]


def test_a_burst_gets_one_data_gate_each_and_one_training(world):
    jobs = _jobs(world["burst"])
    assert jobs[:4] == [("credit_default_ingest", "success")] * 3 + [
        ("credit_default_retrain", "rejected")
    ], jobs
    retrains = [r for r in world["burst"].runs if r.job == "credit_default_retrain"]
    assert retrains[0].tags["mlcicd/batches"] == "4"
    assert retrains[0].tags["mlcicd/new_batches"] == "b.csv, c.csv, p.csv"


def test_bisect_names_the_poisoned_batch_revokes_it_and_the_next_model_trains_without_it(world):
    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.pipeline import records
    from mlcicd_dagster.pipeline.bisect import bisect_path

    home, spec = world["home"], world["module"].location.pipeline("credit_default").spec
    jobs = _jobs(world["burst"])
    assert ("credit_default_data_bisect", "success") in jobs, jobs
    record = json.loads(bisect_path(home, spec, "2").read_text())
    assert record["verdict"] == "found", record
    assert record["culprits"] == ["p.csv"] and record["revoked"] == ["p.csv"]
    assert record["new"] == ["b.csv", "c.csv", "p.csv"] and record["base"] == ["a.csv"]
    assert record["retrains"] <= 3  # ceil(log2 3) + 1
    assert any(not t["passed"] for t in [{"passed": False}, *record["trials"]])
    mark = Lake(home.lake("credit_default")).revoked()["p.csv"]
    assert mark["by"] == "data bisect" and "v2" in mark["reason"] and mark["at"]
    assert mark["evidence"]["candidate"] == "2"
    # the lake keeps the batch, marked; the next training ran without it
    assert Lake(home.lake("credit_default")).has_validated("p.csv")
    after = [r for r in world["burst"].runs if r.job == "credit_default_retrain"][1:]
    assert after and after[0].tags["mlcicd/trigger"] == "revocation"
    assert after[0].outcome in ("success", "rejected"), (after[0].outcome, after[0].error)
    cand = records.read_candidate(home, spec)
    assert cand["batches"] == ["a.csv", "b.csv", "c.csv"]
    assert records.read_gates(home, spec, cand["version"])["non_inferiority"]["passed"]
    alerts = [json.loads(line) for line in home.alerts.read_text().splitlines()]
    assert any(a["kind"] == "data_bisect" and "p.csv" in a["title"] for a in alerts)


def _cli(*args: str) -> int:
    from mlcicd_dagster.cli import main

    return main(list(args))


def test_cli_revoke_and_restore_with_clear_errors(world, capsys):
    from mlcicd_dagster.pipeline.status import collect_status

    p = world["module"].location.pipeline("credit_default")
    assert _cli("data", "revoke", "nope", "b.csv", "--reason", "x") == 2
    assert "no pipeline 'nope'" in capsys.readouterr().err
    assert _cli("data", "revoke", "credit_default", "zzz.csv", "--reason", "x") == 2
    err = capsys.readouterr().err
    assert "no validated batch 'zzz.csv'" in err and "a.csv" in err
    assert _cli("data", "revoke", "credit_default", "p.csv", "--reason", "again") == 2
    assert "already revoked (by data bisect" in capsys.readouterr().err
    assert _cli("data", "restore", "credit_default", "b.csv") == 2
    assert "is not revoked" in capsys.readouterr().err
    assert _cli("data", "revoke", "credit_default", "b.csv", "--reason", "vendor recall") == 0
    assert "revoked b.csv of credit_default" in capsys.readouterr().out
    revoked = {r["batch"]: r for r in collect_status(p)["revoked"]}
    assert set(revoked) == {"b.csv", "p.csv"} and revoked["b.csv"]["reason"] == "vendor recall"
    assert _cli("data", "restore", "credit_default", "b.csv") == 0
    assert {r["batch"] for r in collect_status(p)["revoked"]} == {"p.csv"}


def test_dagster_job_revokes_and_the_training_sensor_asks_for_a_model_without_it(world):
    import dagster as dg

    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.pipeline.training import training_tick

    module, home, instance = world["module"], world["home"], world["instance"]
    job = module.defs.resolve_job_def("credit_default_data_revocation")
    op = "credit_default__revoke_or_restore"

    def launch(**config):
        return job.execute_in_process(
            instance=instance,
            run_config={"ops": {op: {"config": config}}},
            raise_on_error=False,
        )

    bad = launch(action="revoke", batch="c.csv")  # no reason: refused, nothing marked
    assert not bad.success and "c.csv" not in Lake(home.lake("credit_default")).revoked()
    ok = launch(action="revoke", batch="c.csv", reason="duplicate export", by="ops team")
    assert ok.success
    mark = Lake(home.lake("credit_default")).revoked()["c.csv"]
    assert mark["by"] == "ops team" and mark["reason"] == "duplicate export"
    ctx = dg.build_sensor_context(instance=instance)
    result = training_tick(module.location.pipeline("credit_default"), home, ctx)
    (request,) = result.run_requests
    assert request.tags["mlcicd/trigger"] == "revocation"
    assert request.tags["mlcicd/dropped_batches"] == "c.csv"
    assert launch(action="restore", batch="c.csv").success
    again = training_tick(module.location.pipeline("credit_default"), home, ctx)
    assert isinstance(again, dg.SkipReason) or again.run_requests  # a restore may retrain
    assert "c.csv" not in Lake(home.lake("credit_default")).revoked()


def test_a_copied_home_reingests_nothing_and_registers_into_its_own_folder(world):
    from mlcicd_dagster.demo.landing import land_frame
    from mlcicd_dagster.models.registry import client
    from mlcicd_dagster.pipeline.cycle import run_cycle
    from mlcicd_dagster.platform.home import Home

    home = world["home"]
    # settle what the earlier tests asked for (a restore's retrain) in the original first
    run_cycle(world["module"].defs, world["instance"])
    original_files = sorted(p for p in home.mlflow_artifacts.rglob("*"))
    original_versions = len(
        client(home.tracking_uri).search_model_versions("name='credit_default'")
    )
    copy = Home(world["root"] / "copy")
    shutil.copytree(home.root, copy.root, symlinks=True)
    os.environ["MLCICD_HOME"] = str(copy.root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # a run of the original set it (setdefault)
    try:
        instance = _instance(copy)
        try:
            nothing = run_cycle(world["module"].defs, instance)
            assert nothing.runs == [], _jobs(nothing)  # every landed file had its content key
            land_frame(copy.landing("credit_default"), "d.csv", world["pool"].iloc[8500:9500])
            report = run_cycle(world["module"].defs, instance)
        finally:
            instance.dispose()
    finally:
        os.environ["MLCICD_HOME"] = str(home.root)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert [j for j, _ in _jobs(report)][:2] == ["credit_default_ingest", "credit_default_retrain"]
    newest = max(
        client(copy.tracking_uri).search_model_versions("name='credit_default'"),
        key=lambda v: int(v.version),
    )
    where = client(copy.tracking_uri).get_model_version_download_uri(
        "credit_default", newest.version
    )
    assert where.startswith(copy.mlflow_artifacts.resolve().as_uri()), where
    assert any(copy.mlflow_artifacts.rglob("MLmodel"))
    # the copy's older versions load from the copy's own files too
    older = client(copy.tracking_uri).get_model_version_download_uri("credit_default", "1")
    assert older.startswith(copy.mlflow_artifacts.resolve().as_uri()), older
    # the original home got nothing: same files, same versions
    assert sorted(p for p in home.mlflow_artifacts.rglob("*")) == original_files
    versions = client(home.tracking_uri).search_model_versions("name='credit_default'")
    assert len(versions) == original_versions
    assert not Path(copy.root / "mlflow" / "mlruns").exists()
