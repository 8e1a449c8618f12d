"""The statistical core: verdicts, guards, and the error rates it claims (small simulation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from mlcicd_dagster.rollout import analysis as an

LOSS = an.MetricSpec("log_loss", margin=0.05, min_n=100)
CFG = an.AnalysisConfig(metrics=(LOSS,))


def _ev(n_c, mean_c, n_s, mean_s, sd=0.4, metric="log_loss"):
    return an.Evidence(
        canary={metric: an.Moments(n_c, mean_c, sd * sd)},
        stable={metric: an.Moments(n_s, mean_s, sd * sd)},
    )


def test_sprt_statistic_is_the_gaussian_log_likelihood_ratio():
    diff, var, m = 0.03, 0.0004, 0.05
    # log N(diff; m, var) - log N(diff; 0, var)
    expected = (-((diff - m) ** 2) + diff**2) / (2 * var)
    assert an.sprt_log_lr(diff, var, m) == pytest.approx(expected)


def test_clear_evidence_decides_both_ways():
    better = an.analyse(_ev(2000, 0.40, 2000, 0.45), CFG)
    assert better.verdict == an.PROMOTE
    worse = an.analyse(_ev(2000, 0.55, 2000, 0.45), CFG)
    assert worse.verdict == an.ROLLBACK
    m = worse.metrics[0]
    assert m.log_lr_worse >= m.rollback_threshold == pytest.approx(math.log(1 / 0.05))
    assert worse.to_dict()["metrics"][0]["diff"] == pytest.approx(0.10)


def test_min_sample_guard_forbids_promotion_without_evidence():
    # A huge improvement on 50 requests per arm is not allowed to promote (min_n=100)...
    res = an.analyse(_ev(50, 0.0, 50, 0.45, sd=0.01), CFG)
    assert res.verdict == an.CONTINUE and "min-sample guard" in res.metrics[0].reason
    # ...and no data at all never promotes.
    assert an.analyse(an.Evidence(), CFG).verdict == an.CONTINUE


def test_guardrails_roll_back_but_cannot_promote_alone():
    cfg = an.AnalysisConfig()
    ev = an.Evidence(
        canary={"latency": an.Moments(500, math.log(10), 0.09)},
        stable={"latency": an.Moments(5000, math.log(5), 0.09)},
    )
    res = an.analyse(ev, cfg)
    assert res.verdict == an.ROLLBACK and "latency" in res.reason
    ok = an.Evidence(
        canary={"latency": an.Moments(500, math.log(5), 0.09)},
        stable={"latency": an.Moments(5000, math.log(5), 0.09)},
    )
    assert an.analyse(ok, cfg).verdict == an.CONTINUE  # no labels yet: no promotion


def test_two_sided_shift_and_error_rate():
    shift = an.MetricSpec("prediction_shift", margin=0.1, two_sided=True, min_n=10)
    for delta in (+0.2, -0.2):
        v = an.judge_metric(
            shift, an.Moments(400, 0.22 + delta, 0.02), an.Moments(400, 0.22, 0.02),
            alpha_rollback=0.05, alpha_promote=0.05,
        )  # fmt: skip
        assert v.verdict == an.ROLLBACK
    err = an.MetricSpec("error_rate", margin=0.01, min_n=100)
    clean = an.judge_metric(
        err, an.Moments.bernoulli(0, 3000), an.Moments.bernoulli(1, 3000),
        alpha_rollback=0.05, alpha_promote=0.05,
    )  # fmt: skip
    assert clean.verdict == an.PROMOTE
    broken = an.judge_metric(
        err, an.Moments.bernoulli(30, 300), an.Moments.bernoulli(3, 3000),
        alpha_rollback=0.05, alpha_promote=0.05,
    )  # fmt: skip
    assert broken.verdict == an.ROLLBACK
    with pytest.raises(ValueError):
        an.Moments.bernoulli(5, 3)


def test_paired_shadow_evidence_is_judged_on_differences():
    spec = an.MetricSpec("log_loss", margin=0.05, min_n=100)
    v = an.judge_paired(spec, an.Moments(400, -0.02, 0.01), alpha_rollback=0.05, alpha_promote=0.05)
    assert v.paired and v.verdict == an.PROMOTE


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        an.MetricSpec("x", margin=0)
    with pytest.raises(ValueError):
        an.AnalysisConfig(metrics=(an.MetricSpec("x", 0.1, role=an.GUARDRAIL),))
    with pytest.raises(ValueError):
        an.AnalysisConfig(alpha_promote=1.5)


def _simulate(p_canary, rule, reps=300, looks=120, batch=40, p_stable=0.2, margin=0.04, seed=1):
    """Bernoulli per-request losses, ``looks`` analyses; returns (promoted, rolled back)."""
    rng = np.random.default_rng(seed)
    kc = np.zeros(reps)
    ks = np.zeros(reps)
    decided = np.zeros(reps, int)
    thr = math.log(1 / 0.05)
    for look in range(1, looks + 1):
        kc += rng.binomial(batch, p_canary, reps)
        ks += rng.binomial(batch, p_stable, reps)
        n = look * batch
        pc, ps = (kc + 0.5) / (n + 1), (ks + 0.5) / (n + 1)
        diff = kc / n - ks / n
        var = (pc * (1 - pc) + ps * (1 - ps)) / n
        if rule == "sprt":
            up = an.sprt_log_lr(diff, var, margin)
            rb, pr = up >= thr, (up <= -thr) & (n >= 100)
        else:  # fixed-horizon z-tests re-checked at every look
            z = 1.6448536
            rb = diff / np.sqrt(var) >= z
            pr = (diff - margin) / np.sqrt(var) <= -z
        und = decided == 0
        decided[und & rb] = -1
        decided[und & pr & ~rb] = 1
    return np.sum(decided == 1), np.sum(decided == -1)


def test_anytime_valid_error_rates_hold_and_naive_rule_inflates():
    """300 canaries x 120 looks each. The claim is P <= 5%; the assertion uses the binomial
    bound at 5%: P(Binom(300, .05) >= 27) < 0.2%, so a pass is not luck, and the seed is fixed."""
    limit = int(binom.ppf(0.998, 300, 0.05))
    _, false_rb = _simulate(0.20, "sprt")  # equal model
    false_pr, _ = _simulate(0.24, "sprt")  # worse by the margin
    assert false_rb <= limit and false_pr <= limit
    better_pr, _ = _simulate(0.16, "sprt")
    assert better_pr >= 285  # and it still finds the better model (power >= 95%)
    naive_pr, _ = _simulate(0.24, "naive")
    _, naive_rb = _simulate(0.20, "naive")
    # Re-checking a 5% test at every look: about 20% here (2x the bound is P < 1e-6 under 5%).
    assert naive_rb > 2 * 15 and naive_pr > 2 * 15


def test_vectorised_rule_is_the_same_rule():
    rng = np.random.default_rng(3)
    spec = an.MetricSpec("log_loss", margin=0.05, min_n=50)
    n_c, n_s = rng.integers(2, 400, 300), rng.integers(2, 400, 300)
    m_c, m_s = rng.normal(0.45, 0.06, 300), np.full(300, 0.45)
    var = 0.16 / n_c + 0.16 / n_s
    got = an.decide_arrays(spec, m_c - m_s, var, np.minimum(n_c, n_s),
                           alpha_rollback=0.05, alpha_promote=0.05)  # fmt: skip
    code = {an.ROLLBACK: -1, an.PROMOTE: 1, an.CONTINUE: 0}
    want = [
        code[an.judge_metric(spec, an.Moments(int(a), float(b), 0.16),
                             an.Moments(int(c), 0.45, 0.16),
                             alpha_rollback=0.05, alpha_promote=0.05).verdict]
        for a, b, c in zip(n_c, m_c, n_s, strict=True)
    ]  # fmt: skip
    assert list(got) == want and set(want) == {-1, 0, 1}
