"""`mlcicd ui` starts the MLflow UI on the home's store; the run links open it."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_ui_serves_the_store_the_run_links_point_into(tmp_path: Path, monkeypatch) -> None:
    import mlflow

    from mlcicd_dagster.models.tracking import run_link
    from mlcicd_dagster.platform import mlflow_ui

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("ui-test", artifact_location=(tmp_path / "a").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_metric("m", 1.0)
    proc, url = mlflow_ui.start_mlflow_ui(uri, _free_port(), log_path=tmp_path / "ui.log")
    try:
        assert mlflow_ui.wait_until_up(url, proc, timeout_s=180), (tmp_path / "ui.log").read_text()
        # The run a link names is there, through the UI's own REST API.
        r = httpx.get(
            f"{url}/api/2.0/mlflow/runs/get", params={"run_id": run.info.run_id}, timeout=60
        )
        assert r.status_code == 200 and r.json()["run"]["info"]["run_id"] == run.info.run_id
        monkeypatch.setenv(mlflow_ui.UI_URL_ENV, url)
        link = run_link(uri, exp, run.info.run_id)
        assert link == f"{url}/#/experiments/{exp}/runs/{run.info.run_id}"
        assert httpx.get(link.split("#")[0], timeout=60).status_code == 200
    finally:
        mlflow_ui.stop(proc)
    assert proc is not None and proc.poll() is not None
    # A tracking server is its own UI: nothing is started.
    monkeypatch.delenv(mlflow_ui.UI_URL_ENV)
    assert mlflow_ui.start_mlflow_ui("http://mlflow.example:5000") == (
        None,
        "http://mlflow.example:5000",
    )
