"""The public design/power calculation (``models.stats.design_non_inferiority``)."""

from __future__ import annotations

import numpy as np
import pytest

from mlcicd_dagster.models import stats


def test_design_rates_match_a_simulated_paired_test():
    """False rejection and power from the formula agree with a simulated NI test."""
    rng = np.random.default_rng(5)
    n, sd, margin, alpha = 400, 0.3, 0.04, 0.05
    d = stats.design_non_inferiority(n=n, sd_per_row=sd, margin=margin, alpha=alpha, worse_by=0.1)
    reps = 2000

    def reject_rate(true_diff: float) -> float:
        rows = rng.normal(true_diff, sd, size=(reps, n))
        upper = rows.mean(axis=1) + stats.z_quantile(alpha) * rows.std(axis=1, ddof=1) / n**0.5
        return float((upper > margin).mean())

    assert reject_rate(0.0) == pytest.approx(d.false_rejection, abs=0.02)
    assert reject_rate(0.1) == pytest.approx(d.power, abs=0.02)


def test_rows_and_margin_needed_meet_the_target():
    d = stats.design_non_inferiority(n=200, sd_per_row=0.5, margin=0.02, target=0.05)
    assert not d.ok and "rows" in d.fix() and "margin" in d.fix()
    at_rows = stats.design_non_inferiority(n=d.rows_needed, sd_per_row=0.5, margin=0.02)
    assert at_rows.false_rejection <= 0.05 + 1e-9 and at_rows.ok
    fewer = stats.design_non_inferiority(n=d.rows_needed - 1, sd_per_row=0.5, margin=0.02)
    assert fewer.false_rejection > 0.05
    at_margin = stats.design_non_inferiority(n=200, sd_per_row=0.5, margin=d.margin_needed)
    assert at_margin.false_rejection == pytest.approx(0.05, abs=1e-9)
    assert at_margin.fix() == ""


def test_design_refuses_nonsense():
    with pytest.raises(ValueError, match="n must be"):
        stats.design_non_inferiority(n=1, sd_per_row=0.3, margin=0.01)
    with pytest.raises(ValueError, match="alpha"):
        stats.design_non_inferiority(n=100, sd_per_row=0.3, margin=0.01, alpha=0.7)


def test_per_row_sd_is_se_times_root_n():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.3).astype(int)
    a = 1 / (1 + np.exp(-(rng.normal(size=3000) + 1.5 * y)))
    b = 1 / (1 + np.exp(-(rng.normal(size=3000) + 1.5 * y)))
    est, _, _ = stats.log_loss_diff(y, a, b)
    assert stats.per_row_sd("log_loss", y, a, b) == pytest.approx(est.se * 3000**0.5)
    assert stats.per_row_sd("auc", y, a, b) > 0
    with pytest.raises(ValueError, match="metric"):
        stats.per_row_sd("f1", y, a, b)


def test_library_backed_helpers_agree_with_definitions():
    p = np.array([0.01, 0.02, 0.03, 0.5])
    rejected, adjusted = stats.holm(p, 0.05)
    assert adjusted.tolist() == pytest.approx([0.04, 0.06, 0.06, 0.5])
    assert rejected.tolist() == [True, False, False, False]
    assert np.isnan(stats.adjust_pvalues(np.array([0.01, np.nan]), "bh")[1])
    lo, hi = stats.wilson_interval(81, 263, 1.959964)
    assert (lo, hi) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert stats.psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    stat, pval, dof = stats.chi2_two_sample(np.array([50, 50]), np.array([80, 20]))
    assert dof == 1 and pval < 1e-4 and stat > 15
