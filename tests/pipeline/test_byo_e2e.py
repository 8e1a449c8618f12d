"""Your model, end to end: two pipelines a user writes (not shipped), in one code location,
each from a landed file through the data gate, training, the model gates and blue-green
to a real model server (subprocess, loopback), then requests, feedback labels and the
monitoring asset's window, all on the production code path.

* ``zoo``: multiclass with text labels (``cat``/``dog``/``owl``), text ids, text
  categorical features with missing values and a number with missing values; the user's
  own scikit-learn Pipeline (one-hot + imputation + a random forest) from a factory named
  in the pipeline, with the skops type it needs declared in the pipeline
  (``training.trusted_types``). Feedback sends the labels as text.
* ``gauge``: regression with the user's own torch module (raw outputs; the trainer adds
  the task's head), text ids. Trained on the CPU here (no GPU on the test machine): the
  trainer's CPU fallback is what runs.

Tiny data and few trees/epochs keep it to about a minute per pipeline.
"""

from __future__ import annotations

import datetime as dt
import os
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from tests_support import scoped_environ

pytestmark = pytest.mark.slow
CLASSES = ["cat", "dog", "owl"]

MODEL_PY = """
def forest(feature_names, n_estimators=30, seed=0):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    text = ["habitat", "diet"]
    numbers = [n for n in feature_names if n not in text]
    prep = ColumnTransformer([
        ("text", make_pipeline(SimpleImputer(strategy="constant", fill_value="unknown"),
                               OneHotEncoder(handle_unknown="ignore")), text),
        ("num", SimpleImputer(strategy="median"), numbers),
    ])
    return make_pipeline(prep, RandomForestClassifier(
        n_estimators=n_estimators, min_samples_leaf=3, random_state=seed, n_jobs=1))


def mlp(n_features, n_outputs, hidden=16):
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(n_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_outputs)
    )
"""


def _zoo(n: int, rng: np.random.Generator) -> pd.DataFrame:
    animal = rng.choice(CLASSES, n)
    weight = np.select([animal == "cat", animal == "dog"], [4.0, 20.0], 1.5)
    weight = weight * rng.lognormal(0, 0.3, n)
    length = np.select([animal == "cat", animal == "dog"], [45.0, 80.0], 30.0)
    length = length + rng.normal(0, 8, n)
    habitat_p = {"cat": [0.6, 0.3, 0.1], "dog": [0.5, 0.4, 0.1], "owl": [0.1, 0.1, 0.8]}
    habitat = np.array([rng.choice(["house", "farm", "forest"], p=habitat_p[a]) for a in animal],
                       dtype=object)  # fmt: skip
    diet = np.where(animal == "owl", "mice", rng.choice(["meat", "kibble"], n)).astype(object)
    frame = pd.DataFrame({"animal_id": [f"a-{i:05d}" for i in range(n)], "weight": weight.round(2),
                          "length": length.round(1), "habitat": habitat, "diet": diet,
                          "animal": animal})  # fmt: skip
    frame.loc[rng.random(n) < 0.06, "habitat"] = None  # missing text the suite allows
    frame.loc[rng.random(n) < 0.04, "weight"] = None  # a missing number too
    return frame


def _gauge(n: int, rng: np.random.Generator) -> pd.DataFrame:
    x = rng.normal(0, 1, (n, 3))
    y = 50 + 12 * x[:, 0] - 7 * x[:, 1] + 4 * np.tanh(x[:, 2]) + rng.normal(0, 2, n)
    return pd.DataFrame({"reading_id": [f"r-{i:05d}" for i in range(n)],
                         "x0": x[:, 0].round(3), "x1": x[:, 1].round(3), "x2": x[:, 2].round(3),
                         "level": y.round(2)})  # fmt: skip


def _suite(name: str, label: str, id_column: str, columns: list[str], extra: list[dict]) -> dict:
    return {
        "name": name,
        "meta": {"mlcicd": {"extra_columns": "warn", "label": label, "id_column": id_column}},
        "expectations": [
            {"type": "expect_table_columns_to_match_set",
             "kwargs": {"column_set": columns, "exact_match": False}, "severity": "critical"},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": id_column},
             "severity": "critical"},
            {"type": "expect_column_values_to_be_unique", "kwargs": {"column": id_column},
             "severity": "critical"},
            *extra,
        ],
    }  # fmt: skip


def _write_pipeline(folder, name: str, attrs: dict, golden, pool, suite, gates) -> None:
    (folder / name / "data").mkdir(parents=True)
    golden.to_csv(folder / name / "data" / "golden.csv", index=False)
    pool.to_csv(folder / name / "data" / "pool.csv", index=False)
    (folder / name / "expectations.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    (folder / name / "gates.yaml").write_text(yaml.safe_dump(gates, sort_keys=False))
    (folder / name / "model.py").write_text(MODEL_PY)
    (folder / name / "__init__.py").write_text("")
    doc = {"type": "mlcicd_dagster.MLPipeline", "attributes": {
        **attrs, "golden": "data/golden.csv", "sample": "data/pool.csv",
        "suite": "expectations.yaml", "gates": "gates.yaml",
        "monitoring": {"window_minutes": 60}, "owners": ["team:test"]}}  # fmt: skip
    (folder / name / "defs.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


GATES = {"alpha": 0.05, "serving_max_ratio": 2.0}
# Margins and the design that sizes them (checked at load), as the shipped pipelines do:
# multiclass like digits, regression like diabetes (docs/models.md).
ZOO_GATES = {"loss_margin": 0.15, "error_margin": 0.09,
             "design": {"holdout_rows": 100, "sd_per_row": {"loss": 0.45, "error": 0.25},
                        "worse_by": {"loss": 0.5, "error": 0.2}}}  # fmt: skip
GAUGE_GATES = {"relative_margin": 0.5, "relative_error_margin": 0.28,
               "design": {"holdout_rows": 80, "sd_per_row": {"loss": 1.0, "error": 0.55},
                          "worse_by": {"loss": 1.0, "error": 0.6}}}  # fmt: skip


@pytest.fixture(scope="module")
def location(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    folder = root / "byo_defs"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    rng = np.random.default_rng(11)
    zoo = _zoo(900, rng)
    _write_pipeline(
        folder, "zoo",
        {"task": "multiclass", "classes": CLASSES, "label": "animal", "id_column": "animal_id",
         "features": {"numeric": ["weight", "length"], "categorical": ["habitat", "diet"]},
         "training": {"trainer": "sklearn", "factory": ".model:forest",
                      "model_params": {"n_estimators": 30},
                      # what skops must trust to load it, reviewed with the pipeline
                      "trusted_types": ["sklearn.tree._tree.Tree", "numpy.dtype"]},
         "rollout": {"strategy": "canary", "canary_steps": [0.5, 1.0]}},
        zoo.iloc[:300], zoo.iloc[300:],
        _suite("zoo", "animal", "animal_id", list(zoo.columns), [
            {"type": "expect_column_values_to_be_in_set",
             "kwargs": {"column": "habitat", "value_set": ["house", "farm", "forest"],
                        "mostly": 0.85}, "severity": "critical"},
            {"type": "expect_column_values_to_be_between",
             "kwargs": {"column": "weight", "min_value": 0, "max_value": 200, "mostly": 0.9},
             "severity": "critical"}]),
        {"label": "animal", **GATES, **ZOO_GATES},
    )  # fmt: skip
    gauge = _gauge(700, rng)
    _write_pipeline(
        folder, "gauge",
        {"task": "regression", "label": "level", "id_column": "reading_id",
         "features": {"numeric": ["x0", "x1", "x2"], "categorical": []},
         "training": {"trainer": "torch", "factory": ".model:mlp", "model_params": {"hidden": 16},
                      "params": {"max_epochs": 40, "batch_size": 32, "lr": 0.01, "patience": 5}},
         "rollout": {"strategy": "canary", "canary_steps": [0.5, 1.0]}},
        gauge.iloc[:200], gauge.iloc[200:],
        _suite("gauge", "level", "reading_id", list(gauge.columns), [
            {"type": "expect_column_values_to_be_between",
             "kwargs": {"column": "x0", "min_value": -10, "max_value": 10},
             "severity": "critical"}]),
        {"label": "level", **GATES, **GAUGE_GATES},
    )  # fmt: skip

    (root / "definitions.py").write_text(  # the user's code location, as `mlcicd init` writes
        "from pathlib import Path\n"
        "from mlcicd_dagster.location import load_location\n"
        "location = load_location(Path(__file__).parent / 'byo_defs')\n"
        "defs = location.defs\n"
        "pipelines = location.pipelines\n"
    )
    home_root = root / "home"
    env = {"MLCICD_HOME": str(home_root), "MLCICD_LANDING_SETTLE_SECONDS": "0"}
    with scoped_environ(env):
        from mlcicd_dagster.cli import dagster_instance
        from mlcicd_dagster.location import load_location

        loc = load_location(folder)
        instance = dagster_instance()
        try:
            yield {"loc": loc, "instance": instance, "env": env, "root": root,
                   "data": {"zoo": zoo, "gauge": gauge}}  # fmt: skip
        finally:
            instance.dispose()


def _score(url: str, rows: pd.DataFrame) -> httpx.Response:
    body = {"dataframe_split": rows.to_dict(orient="split")}
    body["dataframe_split"].pop("index")
    body["dataframe_split"]["data"] = [  # NaN is not JSON: a missing value is null
        [None if isinstance(v, float) and v != v else v for v in row]
        for row in body["dataframe_split"]["data"]
    ]
    return httpx.post(f"{url}/invocations", json=body, timeout=30)


def _serve(location, home, name: str):
    """`mlcicd serve --pipeline NAME` from the user's code location, as a user starts it
    (the pipeline's declared skops types come with its config)."""
    import json
    import subprocess
    import sys

    home.server_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "mlcicd_dagster.cli", "serve", "--pipeline", name,
           "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=location["root"], env={**os.environ, **location["env"]},
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlcicd serve exited with {proc.returncode}"
        try:
            doc = json.loads(home.server_file.read_text())
            if doc.get("pid") == proc.pid:
                return proc, f"http://{doc['host']}:{doc['port']}"
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise TimeoutError("mlcicd serve did not start")


def _land_and_serve(location, name: str, rows: int):
    from mlcicd_dagster.demo.landing import land_frame
    from mlcicd_dagster.pipeline.cycle import run_cycle
    from mlcicd_dagster.platform.home import Home

    loc = location["loc"]
    spec = loc.pipeline(name).spec
    home = Home.from_env().ensure(name)
    pool = location["data"][name].iloc[300 if name == "zoo" else 200 :]
    land_frame(home.landing(name), "first batch.csv", pool.head(rows))
    report = run_cycle(loc.defs, location["instance"], sensor_names=[
        s.name for s in loc.defs.sensors if s.name.startswith(f"{name}_")])  # fmt: skip
    runs = [r for r in report.runs if r.job == f"{name}_ingest"]
    assert [r.outcome for r in runs] == ["success"], report
    server, url = _serve(location, home, name)
    return spec, home, server, url, pool.iloc[rows:]


def _wait_for(url: str, rows: pd.DataFrame) -> httpx.Response:
    deadline = time.monotonic() + 90
    while True:
        r = _score(url, rows)
        if r.status_code != 503 or time.monotonic() > deadline:  # 503: still loading
            return r
        time.sleep(0.5)


def _monitor(location, spec, home, n_labeled: int):
    """The monitoring asset's body for the current window (the production path)."""
    import json
    import logging

    import dagster as dg

    from mlcicd_dagster.pipeline import records
    from mlcicd_dagster.pipeline.monitoring_policy import materialize_window
    from mlcicd_dagster.platform.resources import MlcicdResource

    mlcicd = MlcicdResource(home_dir=str(home.root))
    deadline = time.monotonic() + 30
    while True:  # the server writes its logs in micro-batches
        now = dt.datetime.now(dt.UTC)
        window = dg.TimeWindow(now - dt.timedelta(minutes=30), now + dt.timedelta(minutes=30))
        events = list(materialize_window(spec, mlcicd, window, logging.getLogger("test")))
        latest = json.loads((records.monitoring_dir(home, spec) / "latest.json").read_text())
        (version,) = latest["result"]["versions"] or [None]
        if version and version["n_labeled"] >= n_labeled or time.monotonic() > deadline:
            return events, version
        time.sleep(1)


def test_user_estimator_text_categoricals_missing_values_and_text_labels(location):
    spec, home, server, url, rest = _land_and_serve(location, "zoo", 500)
    try:  # 240 requests: prediction drift is judged from 200 rows on
        data = location["data"]["zoo"]
        rows = pd.concat([rest, data.iloc[:140]]).reset_index(drop=True)
        features = rows[list(spec.features)]
        assert features["habitat"].isna().any() and features["weight"].isna().any()
        r = _wait_for(url, features)
        assert r.status_code == 200, r.text
        assert r.headers["X-Model-Version"] == "1"
        preds = np.asarray(r.json()["predictions"], dtype=float)
        assert preds.shape == (240, 3)  # class probabilities in the declared order
        np.testing.assert_allclose(preds.sum(axis=1), 1.0, atol=1e-6)
        truth = spec.task_type.encode(rows["animal"])
        assert np.mean(preds.argmax(axis=1) == truth) > 0.8
        ids = r.headers["X-Request-Id"].split(",")
        labels = [{"request_id": i, "label": a} for i, a in zip(ids, rows["animal"], strict=True)]
        fb = httpx.post(f"{url}/feedback", json=labels, timeout=30)
        assert fb.status_code == 200, fb.text
        bad = httpx.post(f"{url}/feedback", json={"request_id": ids[0], "label": ""}, timeout=30)
        assert bad.status_code == 400
    finally:
        server.terminate()
        server.wait(timeout=30)
    events, version = _monitor(location, spec, home, 240)
    assert version["n_labeled"] == 240 and version["n_invalid_labels"] == 0, version
    metrics = version["metrics"]
    assert set(metrics) == {"log_loss", "accuracy"}, metrics
    acc = metrics["accuracy"]
    assert acc["lo"] <= acc["value"] <= acc["hi"] and acc["value"] > 0.8, acc
    assert metrics["log_loss"]["value"] < np.log(3), metrics  # better than a uniform guess
    drift = version["prediction_drift"]  # the same traffic as the golden rows: no drift
    assert {r["feature"] for r in drift["features"]} == {"prediction", "predicted_class"}, drift
    assert drift["drifted"] == [], drift

    # the labelled traffic as a landed batch for retraining (what a trigger exports)
    from mlcicd_dagster.monitoring.feedback_batch import export_feedback_batch

    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    batch = export_feedback_batch(
        home, spec.model_name, spec.dataset, now - dt.timedelta(hours=1), now,
        features=list(spec.features), label=spec.label, id_column=spec.id_column,
        dtypes=pd.read_csv(spec.golden_path, nrows=200).dtypes.to_dict(), task=spec.task_type,
    )  # fmt: skip
    assert batch.created and batch.n_rows > 0, batch
    landed = pd.read_parquet(batch.path)
    assert batch.path.parent == home.landing("zoo")
    assert list(landed.columns) == ["animal_id", *spec.features, "animal"]
    assert set(landed["animal"]) <= set(CLASSES) and landed["habitat"].isna().any()


def test_user_torch_module_regression(location):
    spec, home, server, url, rest = _land_and_serve(location, "gauge", 400)
    try:
        rows = rest.head(50).reset_index(drop=True)
        r = _wait_for(url, rows[list(spec.features)])
        assert r.status_code == 200, r.text
        preds = np.asarray(r.json()["predictions"], dtype=float)
        assert preds.shape == (50,)
        mae = float(np.mean(np.abs(preds - rows["level"].to_numpy())))
        assert mae < 6.0, mae  # the label's spread is ~14; noise 2
        ids = r.headers["X-Request-Id"].split(",")
        labels = [{"request_id": i, "label": float(v)} for i, v in zip(ids, rows["level"],
                                                                          strict=True)]  # fmt: skip
        assert httpx.post(f"{url}/feedback", json=labels, timeout=30).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=home.tracking_uri).get_model_version("gauge", "1")
    assert run.tags.get("gates.decision") == "PASS", run.tags
    _, version = _monitor(location, spec, home, 50)
    assert set(version["metrics"]) == {"mae", "rmse"}, version
    assert version["metrics"]["mae"]["value"] == pytest.approx(mae, rel=1e-6)
