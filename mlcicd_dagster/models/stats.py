"""The one statistics module: every gate, drift check, monitor and the canary use it.

Library methods where a library has them, ours where none does:

* ``auc`` (rank AUC, scikit-learn's ``roc_auc_score``), ``wilson_interval``
  (statsmodels), ``adjust_pvalues`` (statsmodels ``multipletests``; Holm's arithmetic
  done here, checked against it, as statsmodels collects all garbage on each Holm call),
  ``chi2_two_sample`` (scipy ``chi2_contingency``), binomial bounds (scipy beta).
* Ours: DeLong's variance of one AUC or of two correlated AUCs on the same rows
  (fast O(n log n) midrank form, Sun & Xu 2014; no maintained library ships it),
  ``paired_mean_diff`` (per-row paired differences with a CLT interval), ``psi``.
* ``PROB_CLIP``: the one clipping constant. Probabilities are clipped to
  ``[PROB_CLIP, 1 - PROB_CLIP]`` before any log-loss (gates, monitoring, canary), so a
  single confident mistake costs at most ``-log(PROB_CLIP)`` = 9.2 nats: the per-row
  loss is bounded, which the CLT intervals and the canary's sequential test rely on.

Design and power (public, stable: ``mlcicd init`` sizes a new dataset's gates with it)
----------------------------------------------------------------------------------
A one-sided non-inferiority test with margin ``m`` on an estimate with standard
error ``se = sd / sqrt(n)`` (``sd``: the per-row standard deviation of the paired
statistic, see :func:`per_row_sd`) rejects

* a candidate exactly as good as the champion with probability
  ``Phi(z_{1-alpha} - m / se)`` (the *false rejection*), and
* a candidate worse by ``d > m`` with probability ``Phi((d - m) / se - z_{1-alpha})``
  (the *power*).

:func:`design_non_inferiority` returns both, with the rows needed and the margin
needed for a target false-rejection rate, so a config can be refused with its fix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from mlcicd_dagster.platform.lazy import lazy

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy("numpy")


PROB_CLIP = 1e-4
"""The one clipping constant for probabilities before a log (see the module doc)."""

# ---------------------------------------------------------------------------
# normal quantiles and one-sided estimates
# ---------------------------------------------------------------------------


_NORMAL = NormalDist()


def z_quantile(alpha: float) -> float:
    """``z_{1-alpha}``: the one-sided normal critical value."""
    return _NORMAL.inv_cdf(1.0 - alpha)


_z = z_quantile


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error and one-sided bounds."""

    estimate: float
    se: float
    lower: float  # one-sided lower bound at 1 - alpha
    upper: float  # one-sided upper bound at 1 - alpha
    alpha: float


def _estimate(value: float, se: float, alpha: float) -> Estimate:
    z = z_quantile(alpha)
    return Estimate(value, se, value - z * se, value + z * se, alpha)


# ---------------------------------------------------------------------------
# AUC: rank AUC (scikit-learn) and DeLong's variance (ours)
# ---------------------------------------------------------------------------
def _midrank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy's ``rankdata``)."""
    from scipy.stats import rankdata

    return np.asarray(rankdata(x, method="average"), dtype=np.float64)


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
    """Rank AUC (Mann-Whitney; ties count one half), scikit-learn's ``roc_auc_score``."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y).astype(np.int64)
    if y.min() == y.max():
        raise ValueError("AUC needs both classes present")
    return float(roc_auc_score(y, np.asarray(score, dtype=np.float64)))


def auc_with_bounds(y: np.ndarray, score: np.ndarray, alpha: float = 0.05) -> Estimate:
    """AUC of one model with DeLong standard error and one-sided bounds."""
    aucs, cov = _delong_components(y, np.asarray(score, dtype=np.float64)[None, :])
    return _estimate(float(aucs[0]), float(np.sqrt(max(cov[0, 0], 0.0))), alpha)


def delong_paired(
    y: np.ndarray, candidate: np.ndarray, champion: np.ndarray, alpha: float = 0.05
) -> tuple[Estimate, float, float]:
    """AUC(candidate) - AUC(champion) on the same rows: (estimate, auc_cand, auc_champ)."""
    scores = np.vstack([np.asarray(candidate, np.float64), np.asarray(champion, np.float64)])
    aucs, cov = _delong_components(y, scores)
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    est = _estimate(float(aucs[0] - aucs[1]), float(np.sqrt(max(var, 0.0))), alpha)
    return est, float(aucs[0]), float(aucs[1])


# ---------------------------------------------------------------------------
# per-row losses and paired differences
# ---------------------------------------------------------------------------
def clip_probabilities(p: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), PROB_CLIP, 1.0 - PROB_CLIP)


def row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Binary log-loss of each row, probabilities clipped by ``PROB_CLIP``."""
    q = clip_probabilities(p)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(q) + (1 - y) * np.log1p(-q))


def paired_mean_diff(a: np.ndarray, b: np.ndarray, alpha: float = 0.05) -> Estimate:
    """Mean of ``a - b`` (paired per row) with CLT standard error and one-sided bounds."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = len(d)
    if n < 2:
        raise ValueError("need at least 2 rows")
    return _estimate(float(d.mean()), float(d.std(ddof=1) / np.sqrt(n)), alpha)


def log_loss_diff(
    y: np.ndarray, candidate: np.ndarray, champion: np.ndarray, alpha: float = 0.05
) -> tuple[Estimate, float, float]:
    """Log-loss(candidate) - log-loss(champion) on the same rows (lower is better)."""
    lc, lh = row_log_loss(y, candidate), row_log_loss(y, champion)
    return paired_mean_diff(lc, lh, alpha), float(lc.mean()), float(lh.mean())


def normal_p_greater(estimate: float, se: float, null: float) -> float:
    """One-sided p-value for H0: theta <= null vs H1: theta > null."""
    if se <= 0:
        return 0.0 if estimate > null else 1.0
    return 1.0 - _NORMAL.cdf((estimate - null) / se)


def normal_p_less(estimate: float, se: float, null: float) -> float:
    """One-sided p-value for H0: theta >= null vs H1: theta < null."""
    if se <= 0:
        return 0.0 if estimate < null else 1.0
    return _NORMAL.cdf((estimate - null) / se)


# ---------------------------------------------------------------------------
# design and power (public; signatures stable)
# ---------------------------------------------------------------------------
def design_false_rejection(se: float, margin: float, alpha: float) -> float:
    """P(reject | candidate exactly as good as champion) for a one-sided NI test."""
    if se <= 0:
        return 0.0 if margin > 0 else alpha
    return _NORMAL.cdf(z_quantile(alpha) - margin / se)


def design_power(se: float, margin: float, alpha: float, worse_by: float) -> float:
    """P(reject | candidate worse than the champion by ``worse_by``) for a one-sided NI test."""
    if se <= 0:
        return 1.0 if worse_by > margin else 0.0
    return _NORMAL.cdf((worse_by - margin) / se - z_quantile(alpha))


@dataclass(frozen=True)
class TestDesign:
    """Error rates of one one-sided non-inferiority test, from its design alone."""

    name: str
    n: int
    sd_per_row: float
    se: float
    margin: float
    alpha: float
    worse_by: float
    false_rejection: float
    """P(an equally good candidate is rejected)."""
    power: float
    """P(a candidate worse by ``worse_by`` is rejected)."""
    rows_needed: int
    """Fewest rows for ``false_rejection <= target`` at this margin."""
    margin_needed: float
    """Smallest margin for ``false_rejection <= target`` at this n."""
    target: float

    __test__ = False  # not a pytest class

    @property
    def ok(self) -> bool:
        return self.false_rejection <= self.target + 1e-9  # at the margin needed: equal

    def fix(self) -> str:
        """What would bring the false rejection under the target (empty when it is)."""
        if self.ok:
            return ""
        return (
            f"{self.name}: an equally good model is rejected with probability "
            f"{self.false_rejection:.0%} at n={self.n} (target {self.target:.0%}); "
            f"use a margin >= {self.margin_needed:.4g} or >= {self.rows_needed:,} rows"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rows_for_false_rejection(sd_per_row: float, margin: float, alpha: float, target: float) -> int:
    """Fewest rows for which an equally good model is rejected with probability <= target."""
    if sd_per_row <= 0:
        return 2
    if margin <= 0:
        return 2**31 - 1
    need = (sd_per_row * (z_quantile(alpha) + z_quantile(target)) / margin) ** 2
    return max(2, math.ceil(need))


def margin_for_false_rejection(sd_per_row: float, n: int, alpha: float, target: float) -> float:
    """Smallest margin for which an equally good model is rejected with probability <= target."""
    return float(sd_per_row / math.sqrt(max(n, 1)) * (z_quantile(alpha) + z_quantile(target)))


def design_non_inferiority(
    *,
    n: int,
    sd_per_row: float,
    margin: float,
    alpha: float = 0.05,
    worse_by: float | None = None,
    target: float = 0.05,
    name: str = "non-inferiority",
) -> TestDesign:
    """Design error rates of one one-sided NI test at ``n`` rows.

    ``sd_per_row``: per-row standard deviation of the paired statistic (``se * sqrt(n)``;
    measure it with :func:`per_row_sd` on two models and a labelled set).
    ``worse_by``: what "clearly worse" means (default: twice the margin).
    ``target``: the false-rejection rate the design should stay under.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    worse = 2 * margin if worse_by is None else float(worse_by)
    se = float(sd_per_row) / math.sqrt(n)
    return TestDesign(
        name=name,
        n=int(n),
        sd_per_row=float(sd_per_row),
        se=se,
        margin=float(margin),
        alpha=float(alpha),
        worse_by=worse,
        false_rejection=design_false_rejection(se, margin, alpha),
        power=design_power(se, margin, alpha, worse),
        rows_needed=rows_for_false_rejection(sd_per_row, margin, alpha, target),
        margin_needed=margin_for_false_rejection(sd_per_row, n, alpha, target),
        target=float(target),
    )


def combined_false_rejection(rates: Sequence[float]) -> float:
    """P(at least one of several tests rejects an equal model), at most the union bound.

    Reported as ``min(1, sum)``: valid for any dependence between the tests.
    """
    return float(min(1.0, sum(float(r) for r in rates)))


def combined_power(powers: Sequence[float]) -> float:
    """P(a worse model is caught by at least one test) >= the largest single power."""
    return float(max((float(p) for p in powers), default=0.0))


def per_row_sd(metric: str, y: np.ndarray, candidate: np.ndarray, champion: np.ndarray) -> float:
    """Per-row SD of a paired statistic on one labelled set (``se * sqrt(n)``).

    ``metric``: ``"auc"`` (DeLong) or ``"log_loss"``. With two honest models (say two
    retrains on different samples) this is what :func:`design_non_inferiority` needs.
    """
    n = len(y)
    if metric == "auc":
        est, _, _ = delong_paired(y, candidate, champion)
    elif metric == "log_loss":
        est, _, _ = log_loss_diff(y, candidate, champion)
    else:
        raise ValueError(f"metric must be auc or log_loss, got {metric!r}")
    return float(est.se * math.sqrt(n))


# ---------------------------------------------------------------------------
# proportions, multiplicity, contingency tables, PSI
# ---------------------------------------------------------------------------
def holm(pvalues: Sequence[float] | np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down: (rejected mask, adjusted p-values). FWER <= alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    adjusted = _holm_adjusted(p)
    return adjusted <= alpha, adjusted


def adjust_pvalues(p: np.ndarray, method: str = "holm") -> np.ndarray:
    """Multiplicity-adjusted p-values (statsmodels): ``holm`` (FWER), ``bh`` (FDR) or
    ``none``; NaN (an untested feature) stays NaN."""
    p = np.asarray(p, dtype=np.float64)
    names = {"holm": "holm", "bh": "fdr_bh", "fdr_bh": "fdr_bh"}
    if method != "none" and method not in names:
        raise ValueError(f"correction must be holm, bh or none, got {method!r}")
    out = p.copy()
    ok = ~np.isnan(p)
    if method == "none" or not ok.any():
        return out
    if method == "holm":
        out[ok] = _holm_adjusted(p[ok])
        return out
    from statsmodels.stats.multitest import multipletests

    out[ok] = multipletests(p[ok], method=names[method])[1]
    return out


def _holm_adjusted(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, the arithmetic of statsmodels' ``multipletests``
    (``method="holm"``; the tests compare the two), without the full ``gc.collect()`` that
    statsmodels runs on every Holm call (statsmodels PR #8671): 60 of the 110 ms of one
    drift comparison of 24 features, and more in a process holding a large heap."""
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(np.maximum.accumulate(p[order] * np.arange(m, 0, -1)), 1.0)
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted
    return out


def wilson_interval(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for ``successes / n`` with normal quantile ``z`` (statsmodels)."""
    if n <= 0:
        return (0.0, 1.0)
    from statsmodels.stats.proportion import proportion_confint

    alpha = 2 * (1 - _NORMAL.cdf(z))
    k = int(successes)
    lo, hi = proportion_confint(k, int(n), alpha=alpha, method="wilson")
    # exact at the edges (statsmodels' float arithmetic leaves 1e-17 there)
    return (0.0 if k <= 0 else max(0.0, float(lo)), 1.0 if k >= n else min(1.0, float(hi)))


MIN_EXPECTED = 5.0
"""Chi-square cells with an expected count below this are pooled (Cochran's rule)."""


def chi2_two_sample(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float, int]:
    """Chi-square test of homogeneity on the 2 x k table (scipy), sparse cells pooled:
    (statistic, p, dof)."""
    from scipy.stats import chi2_contingency

    ref = np.asarray(ref_counts, dtype=float)
    cur = np.asarray(cur_counts, dtype=float)
    n1, n2 = ref.sum(), cur.sum()
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0, 0
    sparse = np.minimum(n1, n2) * (ref + cur) / (n1 + n2) < MIN_EXPECTED
    if sparse.any():
        ref = np.append(ref[~sparse], ref[sparse].sum())
        cur = np.append(cur[~sparse], cur[sparse].sum())
    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0, 0
    stat, p, dof, _ = chi2_contingency(table, correction=False)
    return float(stat), float(p), int(dof)


PSI_FLOOR = PROB_CLIP
"""Bin proportions are floored at this before the log (an empty bin is not infinite)."""


def psi(ref_props: np.ndarray, cur_props: np.ndarray) -> float:
    """Population stability index of two binned distributions (descriptive effect size)."""
    r = np.maximum(np.asarray(ref_props, float), PSI_FLOOR)
    c = np.maximum(np.asarray(cur_props, float), PSI_FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


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


def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of ``k / n``."""
    tail = 1 - (1 - level) / 2
    return binomial_lower(k, n, tail), binomial_upper(k, n, tail)


def paired_lower_false_rejection(
    se: float, margin: float, alpha: float, between_sd: float = 0.0
) -> float:
    """P(``D - z_{1-alpha} se > margin``) for an equal candidate, ``D ~ N(0, se^2 +
    between_sd^2)``: a test that fails only when the one-sided lower bound of a paired
    mean difference is above ``margin``, with ``between_sd`` the spread of ``D`` between
    two honest models that row sampling (``se``) does not cover (0: rows only)."""
    total = math.hypot(se, between_sd)
    if total <= 0:
        return 0.0 if margin >= 0 else 1.0
    return float(_NORMAL.cdf(-(margin + z_quantile(alpha) * se) / total))


def margin_for_paired_lower(se: float, alpha: float, between_sd: float, target: float) -> float:
    """Smallest ``margin`` with :func:`paired_lower_false_rejection` <= ``target``."""
    return float(max(0.0, z_quantile(target) * math.hypot(se, between_sd) - z_quantile(alpha) * se))
