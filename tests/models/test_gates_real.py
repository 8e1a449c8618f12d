"""Gates on real models of the shipped data, through a real MLflow store."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcicd_dagster.models.config import GateConfig, GateConfigError, load_gate_config
from mlcicd_dagster.models.gates import (
    GateInputs,
    decision_tags,
    gate_behavioral,
    gate_infra_validation,
    gate_serving_budget,
    gate_slices,
    run_all_gates,
    write_decision_tags,
)
from mlcicd_dagster.models.loading import SklearnPredictor, log_and_register
from mlcicd_dagster.models.registry import get_version_tags

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "credit_default"
LABEL = "default.payment.next.month"


@pytest.fixture(scope="module")
def cfg() -> GateConfig:
    return load_gate_config(ASSETS / "gates.yaml")


@pytest.fixture(scope="module")
def sets(pool, golden):
    return pool.iloc[15000:17000], golden


@pytest.fixture(scope="module")
def good(pool, features):
    from mlcicd_dagster.models.trainers import SklearnTrainer

    pay = [c for c in features if c.startswith("PAY_") and not c.startswith("PAY_AMT")]
    train = pool.iloc[:8000]
    return SklearnTrainer(monotonic_increase=pay, max_iter=120).fit(
        train[features], train[LABEL].to_numpy(), seed=0
    )


class Flipped:
    """A model that is wrong in the riskiest rows and reversed on payment delay."""

    def __init__(self, base):
        self.base = base
        self.feature_names = base.feature_names
        self.version = "bad"

    def predict_proba(self, features):
        p = self.base.predict_proba(features)
        return np.where(features["PAY_0"].to_numpy() >= 1, 1 - p, p)


def test_first_model_passes_all_gates_and_tags(tracking_uri, good, sets, features, cfg):
    holdout, golden = sets
    reg = log_and_register(
        good.model,
        model_name="gates_first",
        X_example=holdout[features].head(8),
        tracking_uri=tracking_uri,
    )
    results = run_all_gates(
        good.predictor,
        None,
        holdout=holdout,
        golden=golden,
        config=cfg,
        candidate_uri=reg.model_uri,
        tracking_uri=tracking_uri,
    )
    assert [r.name for r in results] == [
        "non_inferiority",
        "slices",
        "behavioral",
        "serving_budget",
        "infra_validation",
    ]
    failed = {r.name: r.summary for r in results if not r.passed}
    assert not failed, failed
    infra = results[-1]
    assert infra.numbers["max_abs_diff"] == 0.0  # bit-identical in a fresh process
    md = results[0].to_metadata()
    assert md["decision"].value == "PASS" and md["table"].records
    assert "no champion" in results[0].rule
    tags = write_decision_tags(tracking_uri, "gates_first", reg.version, results)
    stored = get_version_tags(tracking_uri, "gates_first", reg.version)
    assert stored["gates.decision"] == "PASS" == tags["gates.decision"]
    assert stored["gate.infra_validation"] == "PASS"


def test_worse_model_is_rejected_with_reasons(good, sets, cfg):
    holdout, golden = sets
    bad = Flipped(good.predictor)
    results = run_all_gates(
        bad,
        good.predictor,
        holdout=holdout,
        golden=golden,
        config=cfg,
        only=["non_inferiority", "slices", "behavioral"],
    )
    by = {r.name: r for r in results}
    assert not by["non_inferiority"].passed
    assert "AUC on holdout" in by["non_inferiority"].summary
    assert by["non_inferiority"].design["false_rejection"] < 0.05  # stated with the verdict
    assert not by["behavioral"].passed
    assert "more_payment_delay_never_lowers_risk" in by["behavioral"].summary
    tags = decision_tags(results)
    assert tags["gates.decision"] == "FAIL" and "non_inferiority" in tags["gates.failed"]
    # same model vs itself: non-inferior
    same = run_all_gates(
        good.predictor,
        good.predictor,
        holdout=holdout,
        golden=golden,
        config=cfg,
        only=["non_inferiority"],
    )[0]
    assert same.passed, same.summary


def test_slice_gate_names_the_broken_slice(good, sets, cfg):
    holdout, golden = sets

    class BrokenOnYoung:
        feature_names = good.predictor.feature_names
        version = "young"

        def predict_proba(self, features):
            p = good.predictor.predict_proba(features)
            rng = np.random.default_rng(0)
            return np.where(features["AGE"].to_numpy() < 30, rng.random(len(p)), p)

    inp = GateInputs(BrokenOnYoung(), good.predictor, holdout=holdout, golden=golden, config=cfg)
    r = gate_slices(inp)
    assert not r.passed and "AGE [0, 30)" in r.summary
    flagged = {row["slice"] for row in r.rows if row.get("decision") == "WORSE"}
    assert "AGE [0, 30)" in flagged  # overlapping slices (SEX, ...) contain young people too
    assert not flagged & {"AGE [30, 40)", "AGE [40, 50)", "AGE [50, 200)"}


def test_serving_budget_fails_a_slow_model(good, sets, cfg):
    import time

    holdout, golden = sets

    class Slow:
        feature_names = good.predictor.feature_names
        version = "slow"

        def predict_proba(self, features):
            time.sleep(0.03)
            return good.predictor.predict_proba(features)

    fast_cfg = GateConfig(
        label=LABEL, serving_single_calls=25, serving_batch_calls=5, serving_batch_rows=200
    )
    inp = GateInputs(Slow(), good.predictor, holdout=holdout, golden=golden, config=fast_cfg)
    r = gate_serving_budget(inp)
    assert not r.passed and "over budget" in r.summary
    assert r.numbers["single_ratio_lower"] > fast_cfg.serving_max_ratio


def test_infra_validation_catches_a_different_artifact(tracking_uri, good, pool, sets, features):
    from sklearn.ensemble import HistGradientBoostingClassifier

    holdout, golden = sets
    other = HistGradientBoostingClassifier(max_iter=5).fit(
        pool[features].iloc[:2000].to_numpy(), pool[LABEL].iloc[:2000]
    )
    reg = log_and_register(
        other,
        model_name="gates_swap",
        X_example=holdout[features].head(8),
        tracking_uri=tracking_uri,
    )
    cfg = GateConfig(label=LABEL, infra_rows=100)
    inp = GateInputs(
        good.predictor,
        None,
        holdout=holdout,
        golden=golden,
        config=cfg,
        candidate_uri=reg.model_uri,
        tracking_uri=tracking_uri,
    )
    r = gate_infra_validation(inp)
    assert not r.passed and r.numbers["max_abs_diff"] > 0
    inp.candidate_uri = "models:/no_such/1"
    r = gate_infra_validation(inp)
    assert not r.passed and "fresh process failed" in r.summary


def test_behavioral_spec_errors_are_clear(good, sets, cfg, tmp_path):
    holdout, golden = sets
    inp = GateInputs(good.predictor, None, holdout=holdout, golden=golden, config=cfg)
    from mlcicd_dagster.models.behavioral import BehavioralSpecError

    with pytest.raises(BehavioralSpecError, match="unknown field 'NOPE'"):
        gate_behavioral(inp, {"invariance": [{"name": "x", "change": {"NOPE": {"add": 1}}}]})
    # a gate that raises inside run_all_gates is an error (never a pass, nor a rejection)
    bad = tmp_path / "b.yaml"
    bad.write_text("invariance: [{name: x, change: {NOPE: {add: 1}}}]\n")
    cfg2 = GateConfig(label=LABEL, behavioral_path=bad)
    r = run_all_gates(
        good.predictor, None, holdout=holdout, golden=golden, config=cfg2, only=["behavioral"]
    )[0]
    assert not r.passed and r.error and r.decision == "ERROR"
    assert "BehavioralSpecError" in r.summary
    assert decision_tags([r])["gates.decision"] == "ERROR"


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(GateConfigError, match="unknown gate config key.*auc_margn"):
        GateConfig.from_dict({"label": "y", "auc_margn": 0.1})
    with pytest.raises(GateConfigError, match="label"):
        GateConfig.from_dict({"alpha": 0.1})
    with pytest.raises(GateConfigError, match="edges"):
        GateConfig.from_dict({"label": "y", "slices": [{"column": "a", "edges": [3, 1]}]})
    with pytest.raises(GateConfigError, match="wait_for_holdout_rows must be true or false"):
        GateConfig.from_dict({"label": "y", "design": {"wait_for_holdout_rows": "yes"}})
    with pytest.raises(GateConfigError, match="cannot read"):
        load_gate_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="no label column"):
        GateInputs(
            SklearnPredictor(None, ["a"]) if False else None,  # type: ignore[arg-type]
            None,
            holdout=pd.DataFrame({"a": range(30)}),
            golden=pd.DataFrame({"a": range(30)}),
            config=GateConfig(label="y"),
        )


def test_prewarmed_fresh_process_validates_the_registered_artifact(
    tracking_uri, good, sets, features
):
    # The pipeline starts the infra-validation worker when a run starts; the gate then
    # hands it the registered model. Each job runs in a new child of the worker, and the
    # worker stays for the next job.
    from mlcicd_dagster.models import gates, infra_worker

    holdout, golden = sets
    reg = log_and_register(
        good.model,
        model_name="gates_warm",
        X_example=holdout[features].head(8),
        tracking_uri=tracking_uri,
    )
    gates.prewarm_infra_validation()
    warm = infra_worker.idle_worker()
    assert warm is not None and warm.alive
    cfg = GateConfig(label=LABEL, infra_rows=100)
    inp = GateInputs(
        good.predictor,
        None,
        holdout=holdout,
        golden=golden,
        config=cfg,
        candidate_uri=reg.model_uri,
        tracking_uri=tracking_uri,
    )
    for _ in range(2):
        infra = gates._InfraRun(inp)
        assert infra.worker is warm and infra_worker.idle_worker() is None  # in use
        r = infra.finish()
        assert r.passed, r.summary
        assert infra_worker.idle_worker() is warm  # kept for the next job
    r = gate_infra_validation(inp)
    assert r.passed and "fresh process" in r.summary


def test_each_job_runs_in_a_new_process_that_never_held_a_model(
    tracking_uri, good, sets, features, tmp_path
):
    from mlcicd_dagster.models import infra_worker

    sample = sets[1][features].head(50)
    reg = log_and_register(
        good.model, model_name="gates_pid", X_example=sample, tracking_uri=tracking_uri
    )
    rows = tmp_path / "rows.parquet"
    sample.to_parquet(rows)
    worker = infra_worker.Worker()
    try:
        pids = []
        for i in range(2):
            out = str(tmp_path / f"a{i}")
            worker.submit(infra_worker.Job(reg.model_uri, tracking_uri, str(rows), out))
            assert worker.wait(120) == 0, Path(out + ".log").read_text()
            pids.append(json.loads(Path(out + ".json").read_text())["pid"])
        assert len(set(pids)) == 2 and worker.proc.pid not in pids
        # a job that cannot load fails with its reason in the child's log; the worker lives on
        out = str(tmp_path / "bad")
        worker.submit(infra_worker.Job("models:/no_such/1", tracking_uri, str(rows), out))
        assert worker.wait(120) == 1 and worker.alive
        assert "no_such" in Path(out + ".log").read_text()
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_a_dead_worker_is_reported_not_waited_for():
    from mlcicd_dagster.models import infra_worker

    worker = infra_worker.Worker()
    os.kill(worker.proc.pid, signal.SIGKILL)
    with pytest.raises(infra_worker.WorkerGone):
        worker.wait(60)


def test_unused_prewarmed_process_exits_when_its_pipe_closes():
    from mlcicd_dagster.models import gates, infra_worker

    gates.prewarm_infra_validation()
    worker = infra_worker.take()
    assert worker.proc.stdin is not None
    worker.proc.stdin.close()  # what happens when the parent exits without a model to judge
    assert worker.proc.wait(timeout=120) == 0
