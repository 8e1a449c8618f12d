"""Dagster's storage on a real PostgreSQL: runs, events, asset checks, multi-process steps.

The instance is loaded from a dagster.yaml written by
``platform.k8s_storage.dagster_instance_config`` (credentials by env reference, as in
the cluster), and a small asset job with a blocking check runs on it, its steps in
separate processes that all write to the same database.
"""

import dagster as dg
import pytest
import yaml

from mlcicd_dagster.platform.k8s_storage import dagster_instance_config, write_dagster_yaml

pytestmark = pytest.mark.postgres


class BatchConfig(dg.Config):
    rows: int


@dg.asset
def batch(config: BatchConfig) -> list[int]:
    return list(range(config.rows))


@dg.asset_check(asset=batch, blocking=True)
def batch_not_empty(batch: list[int]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=len(batch) > 0, metadata={"rows": len(batch)})


@dg.asset
def total(batch: list[int]) -> int:
    return sum(batch)


pg_job = dg.define_asset_job("pg_job", selection=[batch, total])
defs = dg.Definitions(
    assets=[batch, total],
    asset_checks=[batch_not_empty],
    jobs=[pg_job],
    executor=dg.multiprocess_executor.configured({"max_concurrent": 2}),
)


def get_pg_job() -> dg.JobDefinition:
    return defs.get_job_def("pg_job")


@pytest.fixture
def pg_instance(postgres, tmp_path, monkeypatch):
    postgres.create_database("dagster")
    for key, value in postgres.env("dagster").items():
        monkeypatch.setenv(key, value)  # step subprocesses inherit them, as pods get the secret
    home = tmp_path / "dagster_home"
    path = write_dagster_yaml(home, dagster_instance_config(max_concurrent_runs=None))
    assert "password" in path.read_text() and "DAGSTER_PG_PASSWORD" in path.read_text()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = dg.DagsterInstance.get()
    yield instance
    instance.dispose()


def _run_config(rows: int) -> dict:
    return {"ops": {"batch": {"config": {"rows": rows}}}}


def test_instance_storage_is_postgres(pg_instance):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)


def test_multiprocess_run_with_checks_lands_in_postgres(pg_instance, postgres):
    with dg.execute_job(
        dg.reconstructable(get_pg_job), pg_instance, run_config=_run_config(4)
    ) as result:
        assert result.success
        run_id = result.run_id
        step_pids = {
            e.pid for e in result.all_events if e.event_type_value == "STEP_START" and e.pid
        }
    assert len(step_pids) >= 2  # steps ran in their own processes, all writing to Postgres
    runs = postgres.query("dagster", f"SELECT status FROM runs WHERE run_id = '{run_id}'")
    assert runs == [("SUCCESS",)]
    mat = pg_instance.get_latest_materialization_event(dg.AssetKey("total"))
    assert mat is not None and mat.run_id == run_id
    check = pg_instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("batch"), "batch_not_empty"), limit=1
    )
    assert check[0].run_id == run_id
    assert check[0].status.value == "SUCCEEDED"
    n_events = postgres.query(
        "dagster", f"SELECT count(*) FROM event_logs WHERE run_id = '{run_id}'"
    )[0][0]
    assert n_events > 10


def test_failed_blocking_check_stops_downstream_and_is_recorded(pg_instance, postgres):
    result = get_pg_job().execute_in_process(
        run_config=_run_config(0), instance=pg_instance, raise_on_error=False
    )
    assert not result.success
    assert pg_instance.get_latest_materialization_event(dg.AssetKey("total")) is None
    check = pg_instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("batch"), "batch_not_empty"), limit=1
    )
    assert check[0].run_id == result.run_id
    assert check[0].status.value == "FAILED"
    runs = postgres.query("dagster", f"SELECT status FROM runs WHERE run_id = '{result.run_id}'")
    assert runs == [("FAILURE",)]


def test_instance_yaml_has_no_secret_and_queues_runs():
    config = dagster_instance_config(max_concurrent_runs=5)
    text = yaml.safe_dump(config)
    assert "DAGSTER_PG_PASSWORD" in text
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == 5
    assert config["run_retries"] == {"enabled": True, "max_retries": 2}
