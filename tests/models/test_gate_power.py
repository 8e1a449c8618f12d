"""The gates' error rates on real data, by simulation, at fast settings.

The shipped pipeline's gates config states its design rates (an equally good model
fails with probability <= 5%, a clearly worse one is caught with >= 95%); here
repeated honest retrains on resampled real batches must pass, and retrains on a
batch with corrupted labels must be caught, at rates not incompatible with those
(one-sided binomial, p < 0.001, so the test is not flaky). Full-size runs with
intervals: ``python -m bench.bench_gate_simulation``.
"""

from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binom
from tests_support import DATA, ROOT

from mlcicd_dagster.models import simulation
from mlcicd_dagster.models.config import load_gate_config
from mlcicd_dagster.models.gates import DesignSizes, design_report

LABEL = "default.payment.next.month"
GATES = ROOT / "assets" / "credit_default" / "gates.yaml"
REPS = 10


def _compatible_with_at_least(k: int, n: int, p: float) -> bool:
    return binom.cdf(k, n, p) >= 0.001


def test_the_shipped_design_meets_the_goals_at_the_pipeline_sizes():
    cfg = load_gate_config(GATES)
    golden = len(pd.read_csv(DATA / "golden.csv.gz"))
    report = design_report(cfg, DesignSizes(cfg.design.holdout_rows, golden))
    assert report["false_rejection"] <= 0.05, report
    assert report["power"] >= 0.95, report
    assert set(report["gates"]) == {
        "non_inferiority", "slices", "behavioral", "serving_budget", "infra_validation"
    }  # fmt: skip


@pytest.fixture(scope="module")
def power_report():
    pool = pd.read_csv(DATA / "pool.csv.gz")
    golden = pd.read_csv(DATA / "golden.csv.gz")
    features = [c for c in pool.columns if c not in ("ID", LABEL)]
    pay = [f"PAY_{i}" for i in (0, 2, 3, 4, 5, 6)]
    # fast settings: fewer boosting rounds than the shipped trainer's 100
    fit = simulation.pipeline_fit(
        "sklearn",
        {"monotonic_increase": pay, "max_iter": 40, "early_stopping": False},
        features,
        LABEL,
    )
    settings = simulation.Settings(reps=REPS, champion_rows=4000, batch_rows=2000, seed=7)
    return simulation.simulate(
        pool, golden, label=LABEL, fit=fit, config=load_gate_config(GATES), settings=settings
    )


def test_honest_retrains_on_real_batches_pass(power_report):
    for name, rate in power_report.honest_pass.items():
        assert _compatible_with_at_least(rate.k, rate.n, 0.95), f"{name}: {rate.text()}"


def test_retrains_on_corrupted_labels_are_caught(power_report):
    caught = power_report.bad_caught["all"]
    assert _compatible_with_at_least(caught.k, caught.n, 0.95), caught.text()
    # and the corrupted models are clearly worse on the trusted golden set
    assert max(power_report.bad_auc_change) < 0
