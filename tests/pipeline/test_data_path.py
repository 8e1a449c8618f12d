"""Landing sensor -> raw_batch -> blocking data gate -> validated_batch, on a real instance."""

from __future__ import annotations

import importlib
import json
import os
import time

import dagster as dg
import pandas as pd
import pytest
from tests_support import DATA

DATA_ASSETS = [
    dg.AssetKey(["credit_default", "raw_batch"]),
    dg.AssetKey(["credit_default", "validated_batch"]),
]


@pytest.fixture
def location(home_dir, instance, monkeypatch):
    monkeypatch.setenv("MLCICD_LANDING_SETTLE_SECONDS", "0")
    import definitions

    module = importlib.reload(definitions)
    return module, instance


def _land(home_dir, name: str, df: pd.DataFrame) -> None:
    landing = home_dir / "landing" / "credit_default"
    landing.mkdir(parents=True, exist_ok=True)
    tmp = landing / f".{name}.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, landing / name)
    past = time.time() - 5
    os.utime(landing / name, (past, past))


def _tick(module, instance, cursor=None):
    sensor = next(s for s in module.defs.sensors if s.name == "credit_default_landing")
    ctx = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=module.defs, resources=module.defs.resources
    )
    result = sensor(ctx)
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def _run(module, instance, key):
    job = module.defs.resolve_job_def("credit_default_ingest")
    return job.execute_in_process(
        instance=instance, partition_key=key, asset_selection=DATA_ASSETS, raise_on_error=False
    )


def _rejected(result, key: str, check: str = "data_suite"):
    """A rejection, plainly: a green run, the check failed (WARN, ``outcome: rejected``)
    on the batch's own partition with its reason, and validated_batch not built."""
    assert result.success, "a rejection is not an error: the run stays green"
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == check]
    assert not evaluation.passed and evaluation.description.startswith("rejected")
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["outcome"].value == "rejected"
    assert evaluation.partition == key  # the partition view shows this batch's verdict
    built = [m for m in result.get_asset_materialization_events() if m.asset_key == DATA_ASSETS[1]]
    assert not built, "validated_batch must not be built from a rejected batch"
    return evaluation


def test_good_batch_reaches_the_lake_and_bad_batch_is_quarantined(location, home_dir):
    module, instance = location
    rows = pd.read_csv(DATA / "pool.csv.gz").head(600)
    _land(home_dir, "good batch ü.csv", rows.head(300))
    bad = rows.tail(300).copy()
    bad.loc[bad.index[:5], "AGE"] = 500
    _land(home_dir, "bad.csv", bad)

    result = _tick(module, instance)
    keys = {r.partition_key: r.tags["mlcicd/landed_file"] for r in result.run_requests}
    assert sorted(keys.values()) == ["bad.csv", "good batch ü.csv"]
    # the sensor is cursor-based: a second tick offers nothing new
    assert not _tick(module, instance, result.cursor).run_requests

    outcomes = {name: _run(module, instance, key) for key, name in keys.items()}
    assert outcomes["good batch ü.csv"].success
    good = {e.check_name: e for e in outcomes["good batch ü.csv"].get_asset_check_evaluations()}
    assert good["data_suite"].passed
    assert good["drift"].metadata["outcome"].value in ("passed", "warning")  # not blocking
    bad_key = next(k for k, n in keys.items() if n == "bad.csv")
    _rejected(outcomes["bad.csv"], bad_key)  # the blocking gate said no, plainly
    # the instance keeps each batch's verdict on its partition
    records = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(DATA_ASSETS[0], "data_suite"), limit=10
    )
    assert len(records) == 2

    lake = home_dir / "lake" / "credit_default" / "validated"
    assert len(list(lake.glob("*.parquet"))) == 1
    assert len(pd.read_parquet(next(lake.glob("*.parquet")))) == 300

    qdir = home_dir / "quarantine" / "credit_default"
    assert (qdir / "bad.csv").read_bytes() == (
        home_dir / "landing/credit_default/bad.csv"
    ).read_bytes()
    reason = json.loads((qdir / "bad.csv.reason.json").read_text())
    assert "AGE" in json.dumps(reason)
    # the landing zone is untouched
    assert sorted(p.name for p in (home_dir / "landing/credit_default").iterdir()) == [
        "bad.csv",
        "good batch ü.csv",
    ]
    alerts = [json.loads(line) for line in (home_dir / "alerts.jsonl").read_text().splitlines()]
    (alert,) = [a for a in alerts if "bad.csv" in a["title"]]
    assert alert["kind"] == "rejected" and "AGE" in alert["details"]["reason"]
    assert not [a for a in alerts if a["kind"].startswith("run_")]  # no run failure

    # the same rows landed again under another name: quarantined as a duplicate
    _land(home_dir, "again.csv", rows.head(300))
    again = _tick(module, instance, result.cursor)
    (req,) = again.run_requests
    _rejected(_run(module, instance, req.partition_key), req.partition_key)
    assert "duplicate" in (qdir / "again.csv.reason.json").read_text()


def _write(home_dir, name: str, data: bytes) -> None:
    landing = home_dir / "landing" / "credit_default"
    landing.mkdir(parents=True, exist_ok=True)
    (landing / f".{name}.tmp").write_bytes(data)
    os.replace(landing / f".{name}.tmp", landing / name)
    past = time.time() - 5
    os.utime(landing / name, (past, past))


def _bad_files() -> dict[str, bytes]:
    rows = pd.read_csv(DATA / "pool.csv.gz").head(200)
    csv = rows.to_csv(index=False)
    no_label = rows.drop(columns=["default.payment.next.month"]).to_csv(index=False)
    strings = rows.astype({"LIMIT_BAL": object})
    strings.loc[strings.index[:3], "LIMIT_BAL"] = "lots"
    return {
        "empty.csv": b"",
        "header_only.csv": csv.splitlines()[0].encode() + b"\n",
        "semicolons.csv": rows.to_csv(index=False, sep=";").encode(),
        "latin1.csv": csv.replace("ID,", "ÏD,", 1).encode("latin-1"),
        "truncated.parquet": b"PAR1" + b"\x00" * 50,
        "no_label.csv": no_label.encode(),
        "strings.csv": strings.to_csv(index=False).encode(),
    }


@pytest.mark.parametrize("name", sorted(_bad_files()))
def test_each_kind_of_bad_file_is_quarantined_with_its_reason(location, home_dir, name):
    module, instance = location
    data = _bad_files()[name]
    _write(home_dir, name, data)
    (req,) = _tick(module, instance).run_requests
    result = _run(module, instance, req.partition_key)
    _rejected(result, req.partition_key)  # the blocking data gate stopped the batch
    qdir = home_dir / "quarantine" / "credit_default"
    reason = json.loads((qdir / f"{name}.reason.json").read_text())
    assert reason.get("summary")
    if data:  # byte-identical copy, original untouched in landing
        assert (qdir / name).read_bytes() == data
    assert (home_dir / "landing" / "credit_default" / name).read_bytes() == data
    assert not list((home_dir / "lake" / "credit_default").glob("validated/*.parquet"))
