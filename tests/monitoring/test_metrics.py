"""Live metrics against scikit-learn, and the intervals' coverage and shape."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from mlcicd_dagster.models.stats import PROB_CLIP
from mlcicd_dagster.monitoring.metrics import (
    MetricEstimate,
    auc_delong,
    classification_metrics,
    degraded_metrics,
    wilson_interval,
)


def _data(n, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(float)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * y - 1.2)))
    if ties:
        p = np.round(p, 1)
    return y, p


@pytest.mark.parametrize("ties", [False, True])
def test_point_estimates_match_sklearn(ties):
    y, p = _data(5000, ties=ties)
    m = classification_metrics(y, p, threshold=0.5)
    assert m["auc"].value == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    # probabilities clipped by the one constant of models.stats before the log
    q = np.clip(p, PROB_CLIP, 1 - PROB_CLIP)
    assert m["log_loss"].value == pytest.approx(log_loss(y, q), rel=1e-9)
    assert m["accuracy"].value == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-12)
    for est in m.values():
        assert est.lo <= est.value <= est.hi


def _delong_brute(y, p):
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), np.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))


@pytest.mark.parametrize("ties", [False, True])
def test_delong_variance_matches_quadratic_definition(ties):
    y, p = _data(600, seed=3, ties=ties)
    auc, se = _delong_brute(y, p)
    est = auc_delong(y, p, level=0.95)
    assert est.value == pytest.approx(auc, abs=1e-12)
    assert est.se == pytest.approx(se, rel=1e-9)


def test_auc_needs_both_classes():
    assert auc_delong(np.zeros(10), np.linspace(0, 1, 10), level=0.95) is None
    m = classification_metrics(np.zeros(10), np.linspace(0, 1, 10))
    assert "auc" not in m and "accuracy" in m
    assert classification_metrics(np.array([]), np.array([])) == {}


def test_wilson_interval_known_values():
    # Reference: Newcombe (1998), 81 of 263 -> 0.2553 .. 0.3662 at 95%.
    lo, hi = wilson_interval(81, 263, 1.959964)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(0, 10, 1.96)[0] == 0.0  # never below 0, unlike Wald


def test_interval_coverage_by_simulation():
    """95% intervals cover the truth in ~95% of samples (binomial bound, not flaky)."""
    rng = np.random.default_rng(7)
    big_y, big_p = _data(400_000, seed=11)
    truth = classification_metrics(big_y, big_p)
    hits = {k: 0 for k in truth}
    reps = 300
    for _ in range(reps):
        idx = rng.integers(0, big_y.size, 800)
        m = classification_metrics(big_y[idx], big_p[idx])
        for k in hits:
            hits[k] += m[k].lo <= truth[k].value <= m[k].hi
    # P(Bin(300, 0.95) < 270) ~ 1e-4: a coverage below 90% would be a real defect.
    for k, h in hits.items():
        assert h >= 270, (k, h)


def test_degradation_rule_needs_confidence_and_margin():
    y, p = _data(3000, seed=5)
    live = classification_metrics(y, p)
    auc = live["auc"].value
    margins = {"auc": 0.02}
    # equal to baseline: no alarm; far below baseline: alarm with evidence
    assert degraded_metrics(live, {"auc": auc}, margins=margins, alpha=0.01, min_labels=100) == []
    d = degraded_metrics(live, {"auc": auc + 0.1}, margins=margins, alpha=0.01, min_labels=100)
    assert [x.metric for x in d] == ["auc"] and d[0].bound > 0.02
    # a drop smaller than the margin is not a degradation, however confident
    assert not degraded_metrics(
        live, {"auc": auc + 0.015}, margins=margins, alpha=0.01, min_labels=100
    )
    # too few labels: not judged
    assert not degraded_metrics(
        live, {"auc": auc + 0.1}, margins=margins, alpha=0.01, min_labels=10**6
    )
    # a noisy baseline (large se) widens the test
    assert not degraded_metrics(
        live,
        {"auc": {"value": auc + 0.06, "se": 0.03}},
        margins=margins,
        alpha=0.01,
        min_labels=100,
    )
    # lower-is-better metric
    ll = live["log_loss"].value
    d = degraded_metrics(
        live, {"log_loss": ll - 0.2}, margins={"log_loss": 0.03}, alpha=0.01, min_labels=1
    )
    assert [x.metric for x in d] == ["log_loss"]


def test_metric_estimate_roundtrip_and_bounds():
    y, p = _data(1000)
    m = classification_metrics(y, p)
    for est in m.values():
        again = MetricEstimate.from_dict(est.to_dict())
        assert again == est
        assert est.bound(0.001, "lower") < est.value < est.bound(0.001, "upper")
    with pytest.raises(ValueError):
        m["auc"].bound(0.05, "sideways")
