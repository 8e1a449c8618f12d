"""Behavioral tests whose assertions fit the task, paired against the champion.

Real models trained on the shipped pipelines' real data (digits: multiclass, diabetes:
regression), judged by the pipelines' own behavioral specs through the production gate
path (``models.task_gates.run_task_gates``):

* an honest retrain passes every test;
* a candidate that leans on a field the spec says must not matter (trained on rows
  where that field leaks the label) fails the invariance test, paired against the
  honest champion, and a candidate trained on shifted labels fails minimum
  functionality;
* the design states each paired test's false-rejection rate both ways (row sampling
  alone, and with the spread between honest retrains), and a margin too small for the
  stated ``retrain_sd`` is refused when the pipeline loads, with the margin that would do.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from tests_support import ROOT

from mlcicd_dagster.component import load_spec
from mlcicd_dagster.models import simulation, stats
from mlcicd_dagster.models.behavioral import BehavioralSpecError, run_behavioral
from mlcicd_dagster.models.config import GateConfigError
from mlcicd_dagster.models.gates import DesignSizes, design_report
from mlcicd_dagster.models.task_gates import run_task_gates
from mlcicd_dagster.pipeline.model_gate import _gate_config, checked_gate_config

CORNERS = ("pixel_0_0", "pixel_0_7", "pixel_7_0", "pixel_7_7")
SPECKS = {
    "invariance": [
        {
            "name": "specks_in_the_corners_do_not_matter",
            "change": {c: {"set": 8.0} for c in CORNERS},
            "margin": 0.02,
        }
    ]
}


def _pipeline(name: str, **fast):
    spec = load_spec(ROOT / "assets" / name)
    pool = pd.read_csv(spec.sample_path)
    golden = pd.read_csv(spec.golden_path)
    cfg = _gate_config(spec.gates_path, spec.behavioral_path)
    return spec, pool, golden, cfg, simulation.spec_fit(spec, **fast)


def _behavioral(results):
    (gate,) = [r for r in results if r.name == "behavioral"]
    return gate, {row["test"]: row for row in gate.rows}


@pytest.fixture(scope="module")
def digits():
    spec, pool, golden, cfg, fit = _pipeline("digits")
    half = len(pool) // 2
    champion = fit(pool.iloc[:half], 1)
    honest = fit(pool, 2)
    leaky = pool.copy()  # the blank corners leak the label: the model leans on them
    for corner in CORNERS:
        leaky[corner] = leaky[spec.label].astype(float) * 1.6
    leaning = fit(leaky, 3)
    shifted = pool.copy()
    shifted[spec.label] = (shifted[spec.label] + 1) % 10
    wrong = fit(shifted, 4)
    return spec, pool.iloc[half:], golden, cfg, champion, honest, leaning, wrong


def _judge(spec, holdout, golden, cfg, cand, champ):
    return run_task_gates(
        cand,
        champ,
        holdout=holdout,
        golden=golden,
        config=cfg,
        task=spec.task_type,
        only=["non_inferiority", "behavioral"],
    )


def test_multiclass_behavioral_tests_judge_class_probabilities(digits):
    spec, holdout, golden, cfg, champion, honest, leaning, wrong = digits
    gate, rows = _behavioral(_judge(spec, holdout, golden, cfg, honest, champion))
    assert gate.passed, gate.to_markdown()
    speck = rows["a_faint_speck_in_the_corner_does_not_matter"]
    assert "mean TV=" in speck["value"] and "champion mean TV=" in speck["value"]
    assert speck["paired_diff"] is not None and speck["se"] >= 0
    assert 0 <= speck["design_false_rejection_rows_only"] <= speck["design_false_rejection"]
    zeros = rows["labelled_zeros_are_read_as_zeros"]
    assert zeros["expectation"].startswith("P(class 0)") and zeros["rows"] > 20
    assert "false_rejection_rows_only" in gate.design

    # a candidate leaning on the blank corners: more sensitive than the champion
    (out,) = run_behavioral(leaning, golden, SPECKS, champion=champion, label=spec.label)
    assert not out.passed and out.statistic > 0.02, out
    (out,) = run_behavioral(honest, golden, SPECKS, champion=champion, label=spec.label)
    assert out.passed, out
    # a candidate trained on shifted labels reads zeros as ones
    gate, rows = _behavioral(_judge(spec, holdout, golden, cfg, wrong, champion))
    assert not rows["labelled_zeros_are_read_as_zeros"]["passed"]
    assert not rows["labelled_ones_are_read_as_ones"]["passed"]


def test_multiclass_directional_needs_a_class(digits):
    spec, holdout, golden, cfg, champion, honest, *_ = digits
    bad = {"directional": [{"name": "no_class", "change": {"pixel_3_3": {"set": 16.0}}}]}
    with pytest.raises(BehavioralSpecError, match="no_class.*give `class:`"):
        run_behavioral(honest, golden, bad, champion=champion, label=spec.label)


def test_regression_behavioral_tests_in_label_units():
    spec, pool, golden, cfg, fit = _pipeline("diabetes")
    half = len(pool) // 2
    champion, honest = fit(pool.iloc[:half], 1), fit(pool, 2)
    holdout = pool.iloc[half:]
    gate, rows = _behavioral(_judge(spec, holdout, golden, cfg, honest, champion))
    assert gate.passed, gate.to_markdown()
    assert rows["more_bmi_never_predicts_less_progression"]["paired_diff"] is not None
    assert rows["obese_patients_progress_more"]["passed"]

    leaky = pool.copy()  # blood pressure leaks the label: the model leans on it
    leaky["bp"] = leaky[spec.label] / 2.0
    leaning = fit(leaky, 3)
    spec_bp = {
        "invariance": [
            {"name": "bp_plus_10", "change": {"bp": {"add": 10.0}}, "margin": 3.0},
        ]
    }
    out = run_behavioral(leaning, golden, spec_bp, champion=champion, label=spec.label)
    assert not out[0].passed and out[0].statistic > 3.0, out[0]
    same = run_behavioral(honest, golden, spec_bp, champion=champion, label=spec.label)
    assert same[0].passed, same[0]
    # a regression invariance test must say its margin in the label's units
    with pytest.raises(BehavioralSpecError, match="needs `margin:`"):
        run_behavioral(
            honest,
            golden,
            {"invariance": [{"name": "m", "change": {"bp": {"add": 1.0}}}]},
            champion=champion,
            label=spec.label,
        )


@pytest.mark.parametrize("name", ["credit_default", "digits", "diabetes"])
def test_every_shipped_pipeline_passes_its_own_design_check(name):
    spec = load_spec(ROOT / "assets" / name)
    cfg = checked_gate_config(spec)
    assert cfg.behavioral_path is not None  # every shipped pipeline ships behavioral tests
    assert cfg.serving_p99_ms is None and cfg.serving_min_rows_per_s is None
    golden = len(pd.read_csv(spec.golden_path))
    report = design_report(cfg, DesignSizes(cfg.design.holdout_rows, golden, spec.task))
    assert report["false_rejection"] <= cfg.design.max_false_rejection
    assert report["power"] >= 0.95
    assert "behavioral" in report["gates"]


def test_a_margin_too_small_for_the_retrain_spread_is_refused_with_the_fix(tmp_path):
    spec = load_spec(ROOT / "assets" / "credit_default")
    tests = yaml.safe_load(spec.behavioral_path.read_text())
    tests["invariance"][0]["margin"] = 0.01  # the SEX swap varies by ~0.01 between retrains
    path = tmp_path / "behavioral.yaml"
    path.write_text(yaml.safe_dump(tests))
    with pytest.raises(GateConfigError, match=r"sex_swap_barely_moves_score.*margin >= 0\.0"):
        checked_gate_config(dataclasses.replace(spec, behavioral_path=path))


def test_paired_lower_false_rejection_matches_simulation():
    rng = np.random.default_rng(11)
    se, between, margin, alpha = 0.002, 0.01, 0.015, 0.05
    d = rng.normal(0, 1, 200_000) * math.hypot(se, between)
    simulated = float(np.mean(d - stats.z_quantile(alpha) * se > margin))
    stated = stats.paired_lower_false_rejection(se, margin, alpha, between)
    assert abs(simulated - stated) < 0.003, (simulated, stated)
    rows_only = stats.paired_lower_false_rejection(se, margin, alpha, 0.0)
    assert rows_only < 1e-6 < stated  # row sampling alone promises far too much
    need = stats.margin_for_paired_lower(se, alpha, between, 0.005)
    assert stats.paired_lower_false_rejection(se, need, alpha, between) == pytest.approx(0.005)


def test_a_task_pipeline_with_margins_too_small_for_its_data_is_refused(tmp_path):
    # diabetes' previous config: squared and absolute error within 10% of the champion's
    # on a ~60-row holdout failed honest retrains most of the time
    spec = load_spec(ROOT / "assets" / "diabetes")
    raw = yaml.safe_load(spec.gates_path.read_text())
    raw.update(relative_margin=0.10, relative_error_margin=None)
    path = tmp_path / "gates.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(GateConfigError, match=r"regression loss on holdout.*use a margin >= "):
        checked_gate_config(dataclasses.replace(spec, gates_path=path))
