"""The statistics behind the gates, each with the error it controls.

* ``delong_paired``: DeLong's variance of two correlated AUCs measured on the
  same rows (fast O(n log n) form of Sun & Xu 2014). Gives a normal-theory
  interval for AUC(candidate) - AUC(champion) without resampling.
* ``paired_mean_diff``: per-row log-loss differences on the same rows; their
  mean is the log-loss difference and the CLT gives its interval (rows are
  independent, the pairing removes the between-row variance).
* ``holm``: Holm's step-down adjustment: family-wise error <= alpha across slices.
* ``design_false_rejection``: for a non-inferiority test with margin ``m`` and
  standard error ``se``, the probability that a candidate *exactly as good* as
  the champion is rejected: ``Phi(z_{1-alpha} - m / se)``. This is the "planned
  rate" the simulation tests hold the gate to.

All intervals here are one-sided at level ``1 - alpha`` because the gates ask
one-sided questions ("is the candidate worse by more than the margin?").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-15
"""Probabilities are clipped to [EPS, 1-EPS] before log-loss (as scikit-learn does)."""


def _midrank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    # boundaries of tie groups
    diff = np.concatenate(([True], xs[1:] != xs[:-1], [True]))
    idx = np.flatnonzero(diff)
    ranks_sorted = np.empty(n, dtype=np.float64)
    starts, ends = idx[:-1], idx[1:]
    avg = (starts + ends + 1) / 2.0  # average of 1-based ranks start+1..end
    ranks_sorted[:] = np.repeat(avg, ends - starts)
    out = np.empty(n, dtype=np.float64)
    out[order] = ranks_sorted
    return out


def _delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and covariance (k, k) for k score vectors on the same labels."""
    y = np.asarray(y).astype(bool)
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"need >= 2 positives and >= 2 negatives, got {m} and {n}")
    k = scores.shape[0]
    tx = np.empty((k, m))
    ty = np.empty((k, n))
    tz = np.empty((k, m + n))
    for r in range(k):
        tx[r] = _midrank(pos[r])
        ty[r] = _midrank(neg[r])
        tz[r] = _midrank(np.concatenate([pos[r], neg[r]]))
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    sx = np.atleast_2d(np.cov(v01))
    sy = np.atleast_2d(np.cov(v10))
    return aucs, sx / m + sy / n


def auc(y: np.ndarray, score: np.ndarray) -> float:
    return float(_delong_components(y, np.asarray(score, dtype=np.float64)[None, :])[0][0])


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error and a one-sided bound."""

    estimate: float
    se: float
    lower: float  # one-sided lower bound at 1 - alpha
    upper: float  # one-sided upper bound at 1 - alpha
    alpha: float


def _z(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1.0 - alpha))


def auc_with_bounds(y: np.ndarray, score: np.ndarray, alpha: float = 0.05) -> Estimate:
    """AUC of one model with DeLong standard error and one-sided bounds."""
    aucs, cov = _delong_components(y, np.asarray(score, dtype=np.float64)[None, :])
    se = float(np.sqrt(max(cov[0, 0], 0.0)))
    z = _z(alpha)
    a = float(aucs[0])
    return Estimate(a, se, a - z * se, a + z * se, alpha)


def delong_paired(
    y: np.ndarray, candidate: np.ndarray, champion: np.ndarray, alpha: float = 0.05
) -> tuple[Estimate, float, float]:
    """AUC(candidate) - AUC(champion) on the same rows: (estimate, auc_cand, auc_champ)."""
    scores = np.vstack([np.asarray(candidate, np.float64), np.asarray(champion, np.float64)])
    aucs, cov = _delong_components(y, scores)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    se = float(np.sqrt(max(var, 0.0)))
    z = _z(alpha)
    return Estimate(diff, se, diff - z * se, diff + z * se, alpha), float(aucs[0]), float(aucs[1])


def row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def paired_mean_diff(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Mean of ``a - b`` (paired per row) with CLT standard error and one-sided bounds."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    if n < 2:
        raise ValueError("need at least 2 rows")
    mean = float(d.mean())
    se = float(d.std(ddof=1) / np.sqrt(n))
    z = _z(alpha)
    return Estimate(mean, se, mean - z * se, mean + z * se, alpha)


def log_loss_diff(
    y: np.ndarray, candidate: np.ndarray, champion: np.ndarray, alpha: float = 0.05
) -> tuple[Estimate, float, float]:
    """Log-loss(candidate) - log-loss(champion) on the same rows (lower is better)."""
    lc, lh = row_log_loss(y, candidate), row_log_loss(y, champion)
    return paired_mean_diff(lc, lh, alpha), float(lc.mean()), float(lh.mean())


def normal_p_greater(estimate: float, se: float, null: float) -> float:
    """One-sided p-value for H0: theta <= null vs H1: theta > null."""
    from scipy.stats import norm

    if se <= 0:
        return 0.0 if estimate > null else 1.0
    return float(norm.sf((estimate - null) / se))


def design_false_rejection(se: float, margin: float, alpha: float) -> float:
    """P(reject | candidate exactly as good as champion) for a one-sided NI test."""
    from scipy.stats import norm

    if se <= 0:
        return 0.0
    return float(norm.cdf(_z(alpha) - margin / se))


def holm(pvalues: list[float] | np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down: (rejected mask, adjusted p-values). FWER <= alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    k = len(p)
    if k == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    order = np.argsort(p)
    adj_sorted = np.maximum.accumulate((k - np.arange(k)) * p[order])
    adj = np.empty(k)
    adj[order] = np.minimum(adj_sorted, 1.0)
    return adj <= alpha, adj


def rates_at_threshold(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    """(true positive rate, false positive rate) of ``p >= threshold``."""
    y = np.asarray(y).astype(bool)
    hit = np.asarray(p) >= threshold
    tpr = float(hit[y].mean()) if y.any() else float("nan")
    fpr = float(hit[~y].mean()) if (~y).any() else float("nan")
    return tpr, fpr


def binomial_upper(k: int, n: int, conf: float = 0.99) -> float:
    """Clopper-Pearson one-sided upper bound of a binomial proportion."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(conf, k + 1, n - k))


def binomial_lower(k: int, n: int, conf: float = 0.99) -> float:
    """Clopper-Pearson one-sided lower bound of a binomial proportion."""
    from scipy.stats import beta

    return 0.0 if k <= 0 else float(beta.ppf(1 - conf, k, n - k + 1))
