"""Sequential canary analysis: the pure statistical core (no I/O, no clocks).

Why sequential. A canary is checked after every batch of traffic. Re-testing a
fixed-horizon threshold at every look inflates the false decision rate with each
look (the complaint against threshold-based canary tools; see
``bench/bench_canary_analysis.py`` for the measured inflation). Here every metric
is judged by Wald's sequential probability ratio test (SPRT), whose likelihood
ratio is a non-negative supermartingale under the null: by Ville's inequality it
ever crosses ``1/alpha`` with probability at most ``alpha``, however often and
whenever it is looked at. That is the "anytime-valid" guarantee (the SPRT is the
mSPRT with its mixing distribution on the alternative of interest, the
indifference-zone edge, which makes it the fastest such test there).

What is tested. For each metric, ``diff = canary - stable`` is oriented so that a
positive difference is worse (more loss, more errors, slower). ``margin`` is the
smallest difference that counts as worse. Two simple hypotheses bound the
indifference zone:

  ``equal``: diff = 0        ``worse``: diff = margin

``L = LR(worse : equal)`` computed from the Gaussian approximation of the
difference of means with plug-in variance (Brownian-motion form:
``log L = (margin * diff - margin**2 / 2) / var``).

  * rollback when ``L >= 1/alpha_rollback``: under any true diff <= 0 (equal or
    better) ``L`` is a supermartingale, so P(false rollback) <= alpha_rollback.
  * promote when ``1/L >= 1/alpha_promote``: under any true diff >= margin (worse
    by the margin or more) ``1/L`` is a supermartingale, so P(false promotion) <=
    alpha_promote.

Metrics are combined as: rollback if any metric says rollback (Bonferroni: each
metric tests at ``alpha / k``, so the family-wise false-rollback rate is <=
alpha); promote only if every *primary* metric says promote (an
intersection-union test: each at ``alpha`` keeps false promotion <= alpha) and no
guardrail says rollback; a minimum-sample guard forbids promotion without
evidence. The Gaussian approximation with plug-in variance is asymptotic; the
minimum-sample guard also keeps the first looks out of the small-sample regime,
and the bench measures the real error rates on Bernoulli data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

PROMOTE = "promote"
ROLLBACK = "rollback"
CONTINUE = "continue"

PRIMARY = "primary"  # must show "not worse" before promotion
GUARDRAIL = "guardrail"  # can only force a rollback

BERNOULLI_PSEUDO = 0.5  # Jeffreys-style pseudo-count: 0 errors in n still has a variance


# --------------------------------------------------------------------------------------
# sufficient statistics
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Moments:
    """Count, mean and variance of one sample (all the SPRT needs)."""

    n: int = 0
    mean: float = 0.0
    var: float = 0.0  # unbiased sample variance (0 when n < 2)

    @classmethod
    def of(cls, values: Iterable[float] | np.ndarray) -> Moments:
        arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), float)
        arr = arr[np.isfinite(arr)]
        n = int(arr.size)
        if n == 0:
            return cls()
        var = float(arr.var(ddof=1)) if n > 1 else 0.0
        return cls(n=n, mean=float(arr.mean()), var=var)

    @classmethod
    def bernoulli(cls, events: int, n: int) -> Moments:
        """Rate of ``events`` in ``n`` trials; the variance uses a pseudo-count so that a
        clean record (0 errors) is evidence with finite weight, not infinite certainty."""
        if n <= 0:
            return cls()
        if events < 0 or events > n:
            raise ValueError(f"bernoulli: {events} events in {n} trials")
        p_hat = (events + BERNOULLI_PSEUDO) / (n + 2 * BERNOULLI_PSEUDO)
        return cls(n=n, mean=events / n, var=p_hat * (1.0 - p_hat))

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": self.mean, "var": self.var}


def log_loss_per_row(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary log-loss of each row (``stats.row_log_loss``, clipped by ``stats.PROB_CLIP``)."""
    from mlcicd_dagster.models.stats import row_log_loss

    return row_log_loss(y, p)


# --------------------------------------------------------------------------------------
# one metric
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricSpec:
    """How one metric is judged. ``margin`` is in the metric's units (diff = canary - stable,
    positive = worse); ``two_sided`` treats a shift either way as "worse" (distribution shift)."""

    name: str
    margin: float
    role: str = PRIMARY
    two_sided: bool = False
    min_n: int = 100  # per arm, before this metric may vote promote (the min-sample guard)
    # per arm, before it may vote rollback: the plug-in variance of a small sample of a
    # skewed quantity is too often too small just when its mean is off (see DEFAULT_METRICS)
    min_n_rollback: int = 20

    def __post_init__(self) -> None:
        if not self.margin > 0:
            raise ValueError(f"metric {self.name}: margin must be > 0, got {self.margin}")
        if self.role not in (PRIMARY, GUARDRAIL):
            raise ValueError(f"metric {self.name}: role must be primary or guardrail")


@dataclass(frozen=True)
class MetricVerdict:
    """One metric's decision with everything needed to audit it."""

    metric: str
    role: str
    verdict: str  # promote | rollback | continue
    reason: str
    n_canary: int
    n_stable: int
    mean_canary: float
    mean_stable: float
    diff: float  # canary - stable (positive = worse)
    se: float
    margin: float
    log_lr_worse: float  # log LR(worse : equal); the statistic
    rollback_threshold: float  # log(1/alpha_rollback)
    promote_threshold: float  # -log(1/alpha_promote): promote when statistic <= this
    alpha_rollback: float
    alpha_promote: float
    paired: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def sprt_log_lr(diff: float | np.ndarray, var: float | np.ndarray, margin: float) -> Any:
    """log LR(diff = margin : diff = 0) for an estimate ``diff`` with variance ``var``.

    Vectorised: arrays in, arrays out (the bench runs thousands of canaries at once).
    """
    return (margin * np.asarray(diff) - 0.5 * margin * margin) / np.asarray(var)


def _logaddexp_half(a: Any, b: Any) -> Any:
    return np.logaddexp(a, b) - math.log(2.0)


def sprt_statistics(
    diff: float | np.ndarray, var: float | np.ndarray, margin: float, two_sided: bool
) -> tuple[Any, Any]:
    """(statistic for rollback, statistic for promote), both on the log-LR scale.

    One-sided: both are ``log LR(worse : equal)``; rollback when it is high, promote
    when it is low. Two-sided: "worse" is ``+margin`` or ``-margin``; rollback uses the
    equal-weight mixture of both LRs, promotion needs *both* LRs low, i.e. the max.
    """
    up = sprt_log_lr(diff, var, margin)
    if not two_sided:
        return up, up
    down = sprt_log_lr(-np.asarray(diff), var, margin)
    return _logaddexp_half(up, down), np.maximum(up, down)


def decide_arrays(
    spec: MetricSpec,
    diff: np.ndarray,
    var: np.ndarray,
    n_min: np.ndarray,
    *,
    alpha_rollback: float,
    alpha_promote: float,
) -> np.ndarray:
    """Vectorised verdicts of ``judge_metric`` for many canaries at once (simulation):
    -1 rollback, +1 promote, 0 continue. Same rule, same thresholds, same guards."""
    rb, pr = sprt_statistics(diff, np.maximum(var, 1e-18), spec.margin, spec.two_sided)
    n_min = np.asarray(n_min)
    rollback = (n_min >= spec.min_n_rollback) & (rb >= math.log(1.0 / alpha_rollback))
    promote = (n_min >= spec.min_n) & (pr <= -math.log(1.0 / alpha_promote)) & ~rollback
    return np.where(rollback, -1, np.where(promote, 1, 0))


def judge_metric(
    spec: MetricSpec,
    canary: Moments,
    stable: Moments,
    *,
    alpha_rollback: float,
    alpha_promote: float,
) -> MetricVerdict:
    """Two independent samples (canary vs stable traffic over the same window)."""
    var = _two_sample_var(canary, stable)
    diff = canary.mean - stable.mean
    return _verdict(
        spec, canary.n, stable.n, canary.mean, stable.mean, diff, var,
        alpha_rollback, alpha_promote, paired=False,
    )  # fmt: skip


def judge_paired(
    spec: MetricSpec,
    differences: Moments,
    *,
    mean_canary: float = float("nan"),
    mean_stable: float = float("nan"),
    alpha_rollback: float,
    alpha_promote: float,
) -> MetricVerdict:
    """Paired samples (shadow: both models score the same requests): ``differences`` are
    per-request ``canary - stable``; pairing removes the between-request noise."""
    n = differences.n
    var = differences.var / n if n > 0 else math.inf
    return _verdict(
        spec, n, n, mean_canary, mean_stable, differences.mean, var,
        alpha_rollback, alpha_promote, paired=True,
    )  # fmt: skip


def _two_sample_var(canary: Moments, stable: Moments) -> float:
    if canary.n < 2 or stable.n < 2:
        return math.inf
    return canary.var / canary.n + stable.var / stable.n


def _verdict(
    spec: MetricSpec,
    n_c: int,
    n_s: int,
    mean_c: float,
    mean_s: float,
    diff: float,
    var: float,
    alpha_rollback: float,
    alpha_promote: float,
    *,
    paired: bool,
) -> MetricVerdict:
    thr_rb = math.log(1.0 / alpha_rollback)
    thr_pr = -math.log(1.0 / alpha_promote)
    n_min = min(n_c, n_s)
    if not math.isfinite(var) or n_min < 2:
        stat_rb = stat_pr = 0.0
        se = math.inf
    else:
        var = max(var, 1e-18)  # identical constant samples: decide, don't divide by zero
        se = math.sqrt(var)
        rb, pr = sprt_statistics(diff, var, spec.margin, spec.two_sided)
        stat_rb, stat_pr = float(rb), float(pr)
    if n_min >= spec.min_n_rollback and stat_rb >= thr_rb:
        verdict, reason = ROLLBACK, f"evidence canary is worse by >= {spec.margin:g}"
    elif stat_pr <= thr_pr and n_min >= spec.min_n:
        verdict, reason = PROMOTE, f"evidence canary is not worse by {spec.margin:g}"
    elif stat_pr <= thr_pr:
        verdict, reason = CONTINUE, f"min-sample guard: {n_min} < {spec.min_n} per arm"
    else:
        verdict, reason = CONTINUE, "not enough evidence either way yet"
    return MetricVerdict(
        metric=spec.name,
        role=spec.role,
        verdict=verdict,
        reason=reason,
        n_canary=n_c,
        n_stable=n_s,
        mean_canary=mean_c,
        mean_stable=mean_s,
        diff=diff,
        se=se,
        margin=spec.margin,
        log_lr_worse=stat_rb if verdict == ROLLBACK else stat_pr,
        rollback_threshold=thr_rb,
        promote_threshold=thr_pr,
        alpha_rollback=alpha_rollback,
        alpha_promote=alpha_promote,
        paired=paired,
    )


# --------------------------------------------------------------------------------------
# all metrics -> one verdict
# --------------------------------------------------------------------------------------
# Guardrails judge means of skewed values (request times; predicted probabilities,
# bunched near 0 or 1). In a small sample of such values a low mean and a low sample
# variance go together, so the plug-in Gaussian SPRT overstates the evidence; hence their
# ``min_n_rollback`` below (100 for latency, 200 for the shift). With votes to roll back
# from 20 per arm, simulated canaries of an equal model were rolled back by the
# prediction-shift guardrail 1.27% of the time and by the latency guardrail 1.60% (each
# one's share of alpha_rollback is 1.25%), and a better model whose predictions are more
# spread than a weak stable's 7.5% of the time; with these minimums: 0.05%, 0.27%, 0.35%
# (``bench/bench_canary_guardrails.py``, docs/benchmarks.md).
DEFAULT_METRICS: tuple[MetricSpec, ...] = (
    # Feedback labels: the model's real quality. 0.05 nats is a difference worth acting
    # on for a ~0.45-nat credit model and decidable within a few thousand labels.
    MetricSpec("log_loss", margin=0.05, role=PRIMARY, min_n=200),
    # Failed requests per model version: one extra failure per hundred is a regression.
    MetricSpec("error_rate", margin=0.01, role=GUARDRAIL, min_n=100),
    # log(latency): a margin of log(1.25) means "25% slower" (a ratio, unit-free). Judged
    # on time-matched pairs (``paired_latency_differences``), so machine load cancels.
    MetricSpec(
        "latency",
        margin=math.log(1.25),
        role=GUARDRAIL,
        min_n=100,
        min_n_rollback=100,
    ),
    # Mean predicted probability: a shift of 0.1 either way on the same traffic means the
    # candidate sees the world very differently (or is broken); guardrail, two-sided.
    MetricSpec(
        "prediction_shift",
        margin=0.10,
        role=GUARDRAIL,
        two_sided=True,
        min_n=100,
        min_n_rollback=200,
    ),
)


def metrics_for_task(task: str, label_scale: float | None = None) -> tuple[MetricSpec, ...]:
    """The canary's metrics for a task (``models.tasks``): the task's per-request loss is
    the primary metric. binary: ``DEFAULT_METRICS`` (log-loss of P(positive)).
    multiclass: ``DEFAULT_METRICS`` too: the log-loss of the true class, from the class
    probabilities the prediction log keeps per request (``serving.logs``), and the
    prediction-shift guardrail on the predicted class's probability (the model's
    confidence). regression: the absolute error (``Task.request_loss``), margin 10% of
    ``label_scale`` (the candidate's holdout MAE, fixed before the canary starts, so the
    test's guarantee holds), and the mean prediction as a two-sided guardrail at 20% of it.
    """
    if task == "regression":
        if not label_scale or not label_scale > 0:
            raise ValueError("a regression canary needs the scale of its errors (holdout MAE)")
        margin = 0.10 * label_scale
        return (
            MetricSpec("abs_error", margin=margin, role=PRIMARY, min_n=200),
            *(m for m in DEFAULT_METRICS if m.name in ("error_rate", "latency")),
            *(
                replace(m, margin=2 * margin)
                for m in DEFAULT_METRICS
                if m.name == "prediction_shift"
            ),
        )
    if task not in ("binary", "multiclass"):
        raise ValueError(f"no canary metrics for task {task!r}")
    return DEFAULT_METRICS


@dataclass(frozen=True)
class AnalysisConfig:
    metrics: tuple[MetricSpec, ...] = DEFAULT_METRICS
    alpha_promote: float = 0.05  # P(promote | worse by >= margin) on any primary metric
    alpha_rollback: float = 0.05  # P(rollback | equal or better) over all metrics together

    def __post_init__(self) -> None:
        for a in (self.alpha_promote, self.alpha_rollback):
            if not 0 < a < 1:
                raise ValueError(f"alpha must be in (0, 1), got {a}")
        if not any(m.role == PRIMARY for m in self.metrics):
            raise ValueError("analysis needs at least one primary metric to ever promote")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate metric names in {names}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha_promote": self.alpha_promote,
            "alpha_rollback": self.alpha_rollback,
            "metrics": [asdict(m) for m in self.metrics],
        }


@dataclass(frozen=True)
class Evidence:
    """Sufficient statistics per metric for one analysis window (built by ``evidence.py``
    from the logs, or by a simulator). ``paired`` holds per-request differences for
    metrics where both models scored the same requests (shadow)."""

    canary: dict[str, Moments] = field(default_factory=dict)
    stable: dict[str, Moments] = field(default_factory=dict)
    paired: dict[str, Moments] = field(default_factory=dict)
    descriptive: dict[str, Any] = field(default_factory=dict)  # e.g. KS/PSI, not decisive
    window: dict[str, Any] = field(default_factory=dict)  # since/until, versions

    def n_canary(self) -> int:
        return max((m.n for m in self.canary.values()), default=0)


@dataclass(frozen=True)
class AnalysisResult:
    verdict: str  # promote | rollback | continue
    reason: str
    metrics: tuple[MetricVerdict, ...]
    config: AnalysisConfig
    evidence_window: dict[str, Any] = field(default_factory=dict)
    descriptive: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "metrics": [m.to_dict() for m in self.metrics],
            "config": self.config.to_dict(),
            "window": self.evidence_window,
            "descriptive": self.descriptive,
        }


def analyse(evidence: Evidence, config: AnalysisConfig = AnalysisConfig()) -> AnalysisResult:
    """Judge every configured metric on ``evidence`` and combine (see module docstring)."""
    k = len(config.metrics)
    alpha_rb = config.alpha_rollback / k
    verdicts: list[MetricVerdict] = []
    for spec in config.metrics:
        if spec.name in evidence.paired:
            v = judge_paired(
                spec,
                evidence.paired[spec.name],
                mean_canary=evidence.canary.get(spec.name, Moments()).mean,
                mean_stable=evidence.stable.get(spec.name, Moments()).mean,
                alpha_rollback=alpha_rb,
                alpha_promote=config.alpha_promote,
            )
        else:
            v = judge_metric(
                spec,
                evidence.canary.get(spec.name, Moments()),
                evidence.stable.get(spec.name, Moments()),
                alpha_rollback=alpha_rb,
                alpha_promote=config.alpha_promote,
            )
        verdicts.append(v)
    return AnalysisResult(
        *combine(verdicts),
        metrics=tuple(verdicts),
        config=config,
        evidence_window=dict(evidence.window),
        descriptive=dict(evidence.descriptive),
    )


def combine(verdicts: Sequence[MetricVerdict]) -> tuple[str, str]:
    bad = [v.metric for v in verdicts if v.verdict == ROLLBACK]
    if bad:
        return ROLLBACK, f"canary worse on {', '.join(bad)}"
    primaries = [v for v in verdicts if v.role == PRIMARY]
    waiting = [v.metric for v in primaries if v.verdict != PROMOTE]
    if not waiting:
        return PROMOTE, f"canary not worse on {', '.join(v.metric for v in primaries)}"
    return CONTINUE, f"waiting for evidence on {', '.join(waiting)}"


# --------------------------------------------------------------------------------------
# fixed-horizon reference and descriptive shift (used by the bench and the records)
# --------------------------------------------------------------------------------------
def fixed_horizon_n(sigma: float, margin: float, alpha: float, beta: float) -> float:
    """Per-arm sample size of the fixed-horizon two-sample z-test that tells
    ``diff = 0`` from ``diff = margin`` with error rates ``alpha`` and ``beta``
    (equal arms, per-observation standard deviation ``sigma``)."""
    from scipy.stats import norm

    z = norm.ppf(1 - alpha) + norm.ppf(1 - beta)
    return float(2.0 * (z * sigma / margin) ** 2)


def population_stability_index(a: np.ndarray, b: np.ndarray, bins: int = 10) -> float:
    """PSI of ``a`` (canary) against ``b`` (stable) on ``b``'s deciles; descriptive only."""
    from mlcicd_dagster.models.stats import psi

    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        return float("nan")
    edges = np.unique(np.quantile(b, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        return 0.0
    edges[0], edges[-1] = -np.inf, np.inf
    return psi(np.histogram(b, edges)[0] / b.size, np.histogram(a, edges)[0] / a.size)


# --------------------------------------------------------------------------------------
# latency guardrail: time-matched pairs
# --------------------------------------------------------------------------------------
LATENCY_PAIR_CLIP = math.log(4.0)
"""Each pair's log time ratio is clipped to +-log(4): one request caught by a burst of
machine load counts as "4x" at most, so the plug-in variance of the SPRT stays honest.
A real slowdown (every pair ~1.25x or more) is far inside the clip."""


def paired_latency_differences(
    ts_canary: np.ndarray,
    latency_canary: np.ndarray,
    ts_stable: np.ndarray,
    latency_stable: np.ndarray,
    floor: float,
) -> np.ndarray:
    """Per canary request: log(its latency / the latency of the stable request nearest
    in time), both floored at ``floor``, clipped to +-``LATENCY_PAIR_CLIP``.

    Canary and stable requests interleave on the same machine; pairing each canary call
    with the stable call closest in time compares them under the same load (a paired,
    interleaved comparison), so a loaded machine slows both sides of a pair alike
    instead of deciding the guardrail. Under "equally fast" the differences centre on 0.
    """
    tc = np.asarray(ts_canary, dtype=np.float64)
    ts = np.asarray(ts_stable, dtype=np.float64)
    if tc.size == 0 or ts.size == 0:
        return np.empty(0)
    order = np.argsort(ts, kind="mergesort")
    ts_sorted = ts[order]
    lat_s = np.maximum(np.asarray(latency_stable, dtype=np.float64)[order], floor)
    lat_c = np.maximum(np.asarray(latency_canary, dtype=np.float64), floor)
    right = np.clip(np.searchsorted(ts_sorted, tc), 0, ts_sorted.size - 1)
    left = np.clip(right - 1, 0, ts_sorted.size - 1)
    nearest = np.where(np.abs(ts_sorted[left] - tc) <= np.abs(ts_sorted[right] - tc), left, right)
    d = np.log(lat_c) - np.log(lat_s[nearest])
    return np.clip(d, -LATENCY_PAIR_CLIP, LATENCY_PAIR_CLIP)
