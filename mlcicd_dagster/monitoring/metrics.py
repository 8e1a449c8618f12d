"""Live classification metrics with confidence intervals, and the degradation rule.

Every metric is an estimate from a finite sample of labelled traffic, so each one
carries an interval and says how it was made:

``auc``       DeLong et al. (1988) variance, computed in O(n log n) from one sort
              (Sun & Xu 2014), normal interval clipped to [0, 1].
``accuracy``  Wilson score interval for a binomial proportion (good coverage for
              small n and proportions near 0 or 1, where the Wald interval is not).
``log_loss``  Mean of per-row losses with a CLT (normal) interval from their
              sample standard deviation; probabilities clipped by ``models.stats.PROB_CLIP``.

The degradation rule (:func:`degraded_metrics`) is the one place that decides
"label-confirmed worse than at deployment": both the per-window asset check and
the retraining policy call it, so they cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from mlcicd_dagster.models.stats import row_log_loss

# Which direction is "better" for each metric the monitor computes.
HIGHER_IS_BETTER = {
    "auc": True,
    "accuracy": True,
    "log_loss": False,
    "mae": False,
    "rmse": False,
    "macro_f1": True,
}


def _z(alpha_one_sided: float) -> float:
    return NormalDist().inv_cdf(1.0 - alpha_one_sided)


@dataclass(frozen=True)
class MetricEstimate:
    """A point estimate, its standard error and a two-sided interval at ``level``."""

    name: str
    value: float
    lo: float
    hi: float
    se: float
    n: int
    level: float
    method: str

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER.get(self.name, True)

    def bound(self, alpha_one_sided: float, side: str) -> float:
        """The one-sided ``1 - alpha`` bound (``side`` is ``"upper"`` or ``"lower"``).

        Recomputed from the stored estimate with the same method, so the policy
        can ask for a stricter level than the interval shown in the UI.
        """
        if side not in ("upper", "lower"):
            raise ValueError(f"side must be 'upper' or 'lower', not {side!r}")
        z = _z(alpha_one_sided)
        if self.method == "wilson":
            lo, hi = wilson_interval(round(self.value * self.n), self.n, z)
            return hi if side == "upper" else lo
        return self.value + z * self.se if side == "upper" else self.value - z * self.se

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MetricEstimate:
        def num(key: str) -> float:  # to_dict writes a non-finite number as null
            v = d.get(key)
            return float("nan") if v is None else float(v)

        return cls(
            name=str(d["name"]),
            value=num("value"),
            lo=num("lo"),
            hi=num("hi"),
            se=num("se"),
            n=int(d["n"]),
            level=float(d["level"]),
            method=str(d["method"]),
        )


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def wilson_interval(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for ``successes / n`` with normal quantile ``z``."""
    from mlcicd_dagster.models.stats import wilson_interval as wilson

    return wilson(successes, n, z)


def accuracy(y: np.ndarray, p: np.ndarray, *, threshold: float, level: float) -> MetricEstimate:
    """Share of rows where ``p >= threshold`` agrees with the 0/1 label; Wilson interval."""
    n = int(y.size)
    correct = int(np.count_nonzero((p >= threshold) == (y == 1)))
    z = _z((1 - level) / 2)
    lo, hi = wilson_interval(correct, n, z)
    value = correct / n if n else float("nan")
    se = math.sqrt(value * (1 - value) / n) if n else float("nan")
    return MetricEstimate("accuracy", value, lo, hi, se, n, level, "wilson")


def log_loss(y: np.ndarray, p: np.ndarray, *, level: float) -> MetricEstimate:
    """Mean binary cross-entropy with a CLT interval (clipped by ``stats.PROB_CLIP``)."""
    n = int(y.size)
    losses = row_log_loss(y, p)
    value = float(losses.mean()) if n else float("nan")
    se = float(losses.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    z = _z((1 - level) / 2)
    lo, hi = (max(0.0, value - z * se), value + z * se) if n > 1 else (float("nan"),) * 2
    return MetricEstimate("log_loss", value, lo, hi, se, n, level, "normal")


def auc_delong(y: np.ndarray, p: np.ndarray, *, level: float) -> MetricEstimate | None:
    """ROC AUC with DeLong's variance (``models.stats``); ``None`` unless both classes
    are present. Ties get half credit, as in the Mann-Whitney statistic."""
    from mlcicd_dagster.models.stats import auc_with_bounds

    y = np.asarray(y)
    m = int(np.count_nonzero(y == 1))
    k = int(y.size) - m
    if m == 0 or k == 0:
        return None
    if m < 2 or k < 2:  # DeLong needs two of each class for a variance
        from mlcicd_dagster.models.stats import auc as rank_auc

        value, se = rank_auc(y == 1, p), float("nan")
    else:
        est = auc_with_bounds(y == 1, p)
        value, se = est.estimate, est.se
    z = _z((1 - level) / 2)
    lo, hi = (max(0.0, value - z * se), min(1.0, value + z * se)) if se == se else (0.0, 1.0)
    return MetricEstimate("auc", value, lo, hi, se, m + k, level, "delong")


def classification_metrics(
    y: np.ndarray, p: np.ndarray, *, threshold: float = 0.5, level: float = 0.95
) -> dict[str, MetricEstimate]:
    """AUC (when both classes are present), log-loss and accuracy of labelled rows."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.size == 0:
        return {}
    out = {
        "log_loss": log_loss(y, p, level=level),
        "accuracy": accuracy(y, p, threshold=threshold, level=level),
    }
    auc = auc_delong(y, p, level=level)
    if auc is not None:
        out["auc"] = auc
    return out


def mean_with_interval(name: str, values: np.ndarray, *, level: float) -> MetricEstimate:
    """Mean of per-row values with a CLT (normal) interval from their sample deviation."""
    n = int(values.size)
    value = float(values.mean()) if n else float("nan")
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    z = _z((1 - level) / 2)
    lo, hi = (value - z * se, value + z * se) if n > 1 else (float("nan"),) * 2
    return MetricEstimate(name, value, lo, hi, se, n, level, "normal")


def task_metrics(task: Any, y: np.ndarray, out: np.ndarray, *, level: float = 0.95) -> dict:
    """Live metrics of any task (``models.tasks``) on encoded labels, each with an interval.

    binary: as :func:`classification_metrics`. multiclass: ``log_loss`` (CLT on the
    clipped per-row loss) and ``accuracy`` (Wilson on the predicted class). regression:
    ``mae`` (CLT on |error|) and ``rmse`` (delta method on the mean squared error:
    se(sqrt(m)) = se(m) / (2 sqrt(m))).
    """
    if task.name == "binary":
        return classification_metrics(y, out, level=level)
    y = np.asarray(y)
    if y.size == 0:
        return {}
    z = _z((1 - level) / 2)
    if task.name == "multiclass":
        n = int(y.size)
        correct = int(np.count_nonzero(task.point(out) == y))
        lo, hi = wilson_interval(correct, n, z)
        acc = correct / n
        se = math.sqrt(acc * (1 - acc) / n)
        ll = mean_with_interval("log_loss", task.row_loss(y, out), level=level)
        return {
            "log_loss": MetricEstimate(
                "log_loss", ll.value, max(0.0, ll.lo), ll.hi, ll.se, n, level, "normal"
            ),
            "accuracy": MetricEstimate("accuracy", acc, lo, hi, se, n, level, "wilson"),
        }
    err = np.asarray(out, np.float64) - np.asarray(y, np.float64)
    mae = mean_with_interval("mae", np.abs(err), level=level)
    mse = mean_with_interval("mse", err**2, level=level)
    rmse = math.sqrt(mse.value)
    se = mse.se / (2 * rmse) if rmse > 0 and mse.se == mse.se else float("nan")
    return {
        "mae": MetricEstimate("mae", mae.value, max(0.0, mae.lo), mae.hi, mae.se, mae.n, level,
                              "normal"),
        "rmse": MetricEstimate("rmse", rmse, max(0.0, rmse - z * se), rmse + z * se, se, mse.n,
                               level, "delta"),
    }  # fmt: skip


def task_prediction_drift(
    task: Any, reference: np.ndarray, live: np.ndarray, bins: int = 10
) -> dict[str, float]:
    """How the model's outputs moved between a reference window and a live one.

    binary and regression: the PSI (``models.stats.psi``) of the one number per row over
    ``bins`` quantile bins of the reference; multiclass: the PSI of the predicted-class
    shares (each class a bin) and the largest change of a class's share.
    """
    from mlcicd_dagster.models.stats import psi

    if task.name == "multiclass":
        k = len(task.classes)
        ref = np.bincount(task.point(reference), minlength=k) / max(len(reference), 1)
        cur = np.bincount(task.point(live), minlength=k) / max(len(live), 1)
        return {"psi": psi(ref, cur), "max_class_share_change": float(np.max(np.abs(cur - ref)))}
    reference, live = np.asarray(reference, float), np.asarray(live, float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_n = np.bincount(np.searchsorted(edges, reference), minlength=len(edges) + 1)
    cur_n = np.bincount(np.searchsorted(edges, live), minlength=len(edges) + 1)
    return {"psi": psi(ref_n / max(len(reference), 1), cur_n / max(len(live), 1))}


# -- degradation -------------------------------------------------------------


@dataclass(frozen=True)
class Degradation:
    """Evidence that a live metric is worse than its value at deployment."""

    metric: str
    live: float
    baseline: float
    bound: float  # the one-sided confidence bound on (live - baseline) in the "worse" direction
    margin: float
    alpha: float
    n_labeled: int

    def describe(self) -> str:
        direction = "below" if HIGHER_IS_BETTER.get(self.metric, True) else "above"
        return (
            f"{self.metric} {self.live:.4f} vs {self.baseline:.4f} at deployment: "
            f"with {1 - self.alpha:.4g} confidence it is more than {self.margin:g} {direction} "
            f"(n={self.n_labeled} labelled)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def baseline_value(b: Any) -> tuple[float, float]:
    """``(value, se)`` of a baseline given as a float, a mapping or a MetricEstimate."""
    if isinstance(b, MetricEstimate):
        return b.value, b.se
    if isinstance(b, Mapping):
        se = b.get("se")
        return float(b["value"]), float(se) if se is not None else 0.0
    return float(b), 0.0


def degraded_metrics(
    live: Mapping[str, MetricEstimate],
    baseline: Mapping[str, Any] | None,
    *,
    margins: Mapping[str, float],
    alpha: float,
    min_labels: int,
) -> list[Degradation]:
    """Metrics whose live value is, with confidence, worse than at deployment by ``margin``.

    For each metric in ``margins`` with a baseline, the difference ``live - baseline``
    is tested one-sidedly at level ``alpha / len(tested metrics)`` (Bonferroni, so
    the family-wise false-alarm rate of one window is at most ``alpha`` when the
    model is as good as at deployment). The baseline's own standard error, when
    known (e.g. from the holdout evaluation), is added in quadrature: a lucky
    holdout must not make every live window look worse. ``margin`` is the effect
    size floor: a confirmed but trivial drop does not count.
    """
    if not baseline:
        return []
    tested = [m for m in margins if m in baseline and m in live and live[m].n >= min_labels]
    if not tested:
        return []
    a = alpha / len(tested)
    z = _z(a)
    out = []
    for name in tested:
        est = live[name]
        b_value, b_se = baseline_value(baseline[name])
        if est.method == "wilson":
            # Wilson bound for the live part (better than Wald for proportions near 0/1).
            side = "upper" if est.higher_is_better else "lower"
            live_bound = est.bound(a, side)
            se_live = abs(live_bound - est.value) / z if z else 0.0
        else:
            se_live = est.se
        se = math.sqrt(se_live**2 + b_se**2)
        if not math.isfinite(se):
            continue
        if est.higher_is_better:
            worse_by = b_value - est.value
        else:
            worse_by = est.value - b_value
        lower_bound = worse_by - z * se  # one-sided lower confidence bound of the drop
        margin = float(margins[name])
        if lower_bound > margin:
            out.append(Degradation(name, est.value, b_value, lower_bound, margin, a, est.n))
    return out
