"""The gates' error rates on real data, by simulation, at fast settings, for every
shipped pipeline and task (credit_default: binary sklearn; digits: multiclass torch;
diabetes: regression).

Each pipeline's gates config states its design rates (an equally good model fails
with probability <= 10% for the whole set, a clearly worse one is caught with >= 95%);
here repeated honest retrains on resampled real batches must pass, and retrains on a
batch with corrupted labels must be caught, at rates not incompatible with those
(one-sided binomial, p < 0.001, so the test is not flaky). Full-size runs with
intervals: ``python -m bench.bench_gate_simulation`` (docs/benchmarks.md).
"""

from __future__ import annotations

import pandas as pd
import pytest
from scipy.stats import binom
from tests_support import ROOT

from mlcicd_dagster.component import load_spec
from mlcicd_dagster.models import simulation
from mlcicd_dagster.models.gates import DesignSizes, design_report
from mlcicd_dagster.pipeline.model_gate import checked_gate_config

FAST = {
    # pipeline: (replicates, champion rows, new rows, trainer overrides)
    "credit_default": (10, 4000, 2000, {"max_iter": 40}),
    "digits": (6, 500, 300, {}),  # the shipped trainer: ~1 s a fit
    "diabetes": (12, 180, 130, {}),
}


def _compatible_with_at_least(k: int, n: int, p: float) -> bool:
    return binom.cdf(k, n, p) >= 0.001


@pytest.mark.parametrize("name", sorted(FAST))
def test_the_shipped_design_meets_the_goals_at_the_pipeline_sizes(name):
    spec = load_spec(ROOT / "assets" / name)
    cfg = checked_gate_config(spec)
    golden = len(pd.read_csv(spec.golden_path))
    report = design_report(cfg, DesignSizes(cfg.design.holdout_rows, golden, spec.task))
    assert report["false_rejection"] <= 0.05, report
    assert report["power"] >= 0.95, report
    assert set(report["gates"]) == {
        "non_inferiority", "slices", "behavioral", "serving_budget", "infra_validation"
    }  # fmt: skip


@pytest.fixture(scope="module", params=sorted(FAST))
def power_report(request):
    spec = load_spec(ROOT / "assets" / request.param)
    reps, champion_rows, batch_rows, fast = FAST[request.param]
    report = simulation.simulate(
        pd.read_csv(spec.sample_path),
        pd.read_csv(spec.golden_path),
        label=spec.label,
        fit=simulation.spec_fit(spec, **fast),
        config=checked_gate_config(spec),
        settings=simulation.spec_settings(
            spec, reps=reps, champion_rows=champion_rows, batch_rows=batch_rows, seed=7
        ),
    )
    return request.param, report


def test_honest_retrains_on_real_batches_pass(power_report):
    name, report = power_report
    for gate, rate in report.honest_pass.items():
        assert _compatible_with_at_least(rate.k, rate.n, 0.95), f"{name} {gate}: {rate.text()}"
    # every paired behavioral test was measured on each honest retrain
    assert report.behavioral_diffs and all(
        len(v) == report.honest_pass["all"].n for v in report.behavioral_diffs.values()
    )
    assert report.row_sd


def test_retrains_on_corrupted_labels_are_caught(power_report):
    name, report = power_report
    caught = report.bad_caught["all"]
    assert _compatible_with_at_least(caught.k, caught.n, 0.95), f"{name}: {caught.text()}"
    # and the corrupted models are clearly worse on the trusted golden set
    assert min(report.bad_loss_change) > 0, name
