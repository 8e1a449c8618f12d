"""The error rates the non-inferiority and slice gates claim, checked by simulation.

Scores and labels are simulated directly (no model training per replicate), and
each claim is judged with a one-sided binomial bound so the test is not flaky:
it fails only when the observed rate is incompatible (p < 0.001) with the claim.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from mlcicd_dagster.models import stats
from mlcicd_dagster.models.config import GateConfig, SliceSpec
from mlcicd_dagster.models.gates import GateInputs, gate_non_inferiority, gate_slices

REPS = 300
N_HOLDOUT, N_GOLDEN = 1500, 1000
A, B = -1.6, 1.2  # logit of P(y=1) = A + B * x: ~22% positives, AUC about 0.77


class Lookup:
    """A Predictor returning precomputed scores by row id."""

    feature_names = ["rid"]

    def __init__(self, scores: np.ndarray, version: str):
        self.scores = scores
        self.version = version

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        return self.scores[features["rid"].to_numpy()]


SHARED = 0.5
"""Noise both models share: two trainings on overlapping data make correlated errors."""


def _simulate(rng, n, noise_champ, noise_cand):
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(A + B * x)))).astype(int)
    shared = rng.normal(scale=SHARED, size=n)
    champ = 1 / (1 + np.exp(-(A + B * (x + shared + rng.normal(scale=noise_champ, size=n)))))
    cand = 1 / (1 + np.exp(-(A + B * (x + shared + rng.normal(scale=noise_cand, size=n)))))
    return y, champ, cand


def _judge(rng, noise_champ, noise_cand, cfg):
    frames, cand_all, champ_all = {}, [], []
    offset = 0
    for name, n in (("holdout", N_HOLDOUT), ("golden", N_GOLDEN)):
        y, champ, cand = _simulate(rng, n, noise_champ, noise_cand)
        frames[name] = pd.DataFrame({"rid": np.arange(offset, offset + n), "y": y})
        cand_all.append(cand)
        champ_all.append(champ)
        offset += n
    inp = GateInputs(
        Lookup(np.concatenate(cand_all), "2"),
        Lookup(np.concatenate(champ_all), "1"),
        holdout=frames["holdout"],
        golden=frames["golden"],
        config=cfg,
    )
    return gate_non_inferiority(inp)


def _noise_for_auc_drop(base_noise: float, drop: float) -> float:
    """Candidate noise whose true AUC is ``drop`` below the champion's (large sample)."""
    rng = np.random.default_rng(7)
    n = 200_000
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(A + B * x)))).astype(int)
    shared = rng.normal(scale=SHARED, size=n)
    e = rng.normal(size=n)

    def auc_at(s: float) -> float:
        return stats.auc(y, x + shared + s * e)

    target = auc_at(base_noise) - drop
    lo, hi = base_noise, 5.0
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if auc_at(mid) > target else (lo, mid)
    return (lo + hi) / 2


def _not_above(k: int, n: int, p: float) -> bool:
    """False only if k/n is significantly (p < 0.001) above rate p."""
    return binom.sf(k - 1, n, p) >= 1e-3


# The shipped margins: at these set sizes the design plans an informative false-rejection rate.
CFG = GateConfig(label="y", alpha=0.05, auc_margin=0.03, logloss_margin=0.015)


def test_delong_matches_sklearn_and_holm():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y, champ, cand = _simulate(rng, 2000, 0.5, 0.8)
    cand = np.round(cand, 2)  # ties
    assert stats.auc(y, cand) == pytest.approx(roc_auc_score(y, cand), abs=1e-12)
    d, a1, a2 = stats.delong_paired(y, cand, champ)
    assert d.estimate == pytest.approx(a1 - a2) and d.lower < d.estimate < d.upper
    rejected, adj = stats.holm([0.01, 0.04, 0.03, 0.5], 0.05)
    assert rejected.tolist() == [True, False, False, False]
    assert adj.tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_holm_is_statsmodels_holm():
    """Holm's arithmetic is ours (statsmodels collects all garbage on every Holm call):
    the same rejections and adjusted p-values as statsmodels, ties and NaN included."""
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(7)
    for m in (1, 2, 5, 24, 200):
        p = rng.beta(0.3, 1.0, m)
        p[: m // 3] = np.round(p[: m // 3], 2)  # ties
        want_reject, want_adj, _, _ = multipletests(p, alpha=0.05, method="holm")
        rejected, adj = stats.holm(p, 0.05)
        assert rejected.tolist() == want_reject.tolist()
        np.testing.assert_allclose(adj, want_adj, rtol=1e-12)
        with_nan = np.append(p, np.nan)
        np.testing.assert_allclose(stats.adjust_pvalues(with_nan, "holm")[:-1], want_adj)
        assert np.isnan(stats.adjust_pvalues(with_nan, "holm")[-1])


def test_equal_models_rejected_at_most_at_planned_rate():
    rng = np.random.default_rng(1)
    rejections, planned = 0, []
    for _ in range(REPS):
        r = _judge(rng, 0.15, 0.15, CFG)
        rejections += not r.passed
        planned.append(r.numbers["design_false_rejection_total"])
    plan = float(np.mean(planned))
    assert 0.001 < plan < 0.5, plan  # the design is informative, not vacuous
    assert _not_above(rejections, REPS, plan), (rejections, REPS, plan)
    print(f"equal models: rejected {rejections}/{REPS}, planned {plan:.3f}")


def test_model_worse_by_the_margin_passes_at_most_alpha():
    """The error the gate controls: accepting a model that is worse by the margin."""
    rng = np.random.default_rng(2)
    worse_noise = _noise_for_auc_drop(0.15, CFG.auc_margin)
    passes = sum(_judge(rng, 0.15, worse_noise, CFG).passed for _ in range(REPS))
    assert _not_above(passes, REPS, CFG.alpha), (passes, REPS)


def test_clearly_worse_model_rejected_at_least_95_percent():
    rng = np.random.default_rng(3)
    worse_noise = _noise_for_auc_drop(0.15, 0.06)
    rejections = sum(not _judge(rng, 0.15, worse_noise, CFG).passed for _ in range(REPS // 2))
    assert stats.binomial_lower(rejections, REPS // 2, 0.99) >= 0.95 or rejections == REPS // 2


def test_slice_gate_family_wise_error_and_power():
    """Equal models: a slice is wrongly flagged in at most slice_alpha of runs (Holm);
    a model broken on one slice is flagged on that slice."""
    cfg = GateConfig(
        label="y",
        slices=(SliceSpec("g", groups={"a": (0,), "b": (1,), "c": (2,), "d": (3,)}),),
        min_slice_size=100,
        slice_alpha=0.05,
        slice_margin=0.03,
        fairness_column=None,
    )
    rng = np.random.default_rng(4)

    def run(broken: bool):
        frames, cand_all, champ_all, offset = {}, [], [], 0
        for name, n in (("holdout", 1200), ("golden", 800)):
            y, champ, cand = _simulate(rng, n, 0.15, 0.15)
            g = rng.integers(0, 4, size=n)
            if broken:
                cand = np.where(g == 2, rng.random(n), cand)
            frames[name] = pd.DataFrame({"rid": np.arange(offset, offset + n), "y": y, "g": g})
            cand_all.append(cand)
            champ_all.append(champ)
            offset += n
        inp = GateInputs(
            Lookup(np.concatenate(cand_all), "2"),
            Lookup(np.concatenate(champ_all), "1"),
            holdout=frames["holdout"],
            golden=frames["golden"],
            config=cfg,
        )
        return gate_slices(inp)

    false_flags = sum(not run(False).passed for _ in range(150))
    assert _not_above(false_flags, 150, cfg.slice_alpha), false_flags
    broken = run(True)
    assert not broken.passed and "g=c" in broken.summary
