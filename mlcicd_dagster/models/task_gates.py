"""Non-inferiority and slices for the tasks AUC does not describe (multiclass, regression).

The binary gates judge AUC (DeLong) and log-loss. For the other tasks the same question,
"is the candidate worse than the champion by more than the margin?", is asked of the
task's own per-row quantities (``models.tasks``), paired on the same rows:

* **loss**: multiclass: the clipped log-loss (nats per row), margin ``loss_margin``;
  regression: the squared error, margin ``relative_margin`` x the champion's MSE.
* **error**: multiclass: the 0/1 error (1 - accuracy), margin ``error_margin``;
  regression: the absolute error, margin ``relative_margin`` x the champion's MAE.

Each difference's one-sided ``1 - alpha`` upper bound (CLT on the paired per-row
differences, ``stats.paired_mean_diff``) must stay below its margin, on the holdout and
on the golden set. The first model ever has no champion: it must beat the constant
model of the set (class shares, or the mean label) on the loss with ``1 - alpha``
confidence. Macro-F1 (multiclass) and RMSE (regression) are reported beside, not judged.

Slices: the loss test in every slice with at least ``min_slice_size`` rows, at Holm's
family-wise ``slice_alpha`` (the first model: reported, not judged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlcicd_dagster.models import stats
from mlcicd_dagster.models.tasks import Task


@dataclass(frozen=True)
class TaskMargins:
    alpha: float = 0.05
    loss_margin: float = 0.05
    """multiclass: largest log-loss increase accepted (nats per row)."""
    error_margin: float = 0.02
    """multiclass: largest error-rate increase accepted (accuracy points)."""
    relative_margin: float = 0.10
    """regression: largest MSE and MAE increase accepted, as a share of the champion's."""
    min_slice_size: int = 30
    slice_alpha: float = 0.05


@dataclass
class Judged:
    passed: bool
    rows: list[dict[str, Any]]
    numbers: dict[str, float]
    summary: str


def _constant(task: Task, y: np.ndarray) -> np.ndarray:
    """The constant model of a set: class shares (classification) or the mean label."""
    if task.name == "regression":
        return np.full(len(y), float(np.mean(y)))
    k = len(task.classes)
    shares = np.bincount(y, minlength=k) / len(y)
    shares = np.clip(shares, stats.PROB_CLIP, None)
    return np.tile(shares / shares.sum(), (len(y), 1))


def _margins(
    task: Task, m: TaskMargins, y: np.ndarray, champion: np.ndarray
) -> tuple[float, float]:
    if task.name == "regression":
        return (
            m.relative_margin * float(np.mean(task.row_loss(y, champion))),
            m.relative_margin * float(np.mean(task.row_error(y, champion))),
        )
    return m.loss_margin, m.error_margin


def _names(task: Task) -> tuple[str, str]:
    return (
        ("squared error", "absolute error")
        if task.name == "regression"
        else (
            "log-loss",
            "error rate",
        )
    )


def non_inferiority(
    task: Task,
    sets: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    margins: TaskMargins,
) -> Judged:
    """``sets``: name -> (encoded labels, candidate output, champion output or None)."""
    a = margins.alpha
    rows: list[dict[str, Any]] = []
    numbers: dict[str, float] = {}
    loss_name, error_name = _names(task)
    first = all(champ is None for _, _, champ in sets.values())
    for set_name, (y, cand, champ) in sets.items():
        lc = task.row_loss(y, cand)
        extra = task.metrics(y, cand)
        reported = {k: extra[k] for k in ("macro_f1", "rmse", "accuracy", "mae") if k in extra}
        if champ is None:
            base = _constant(task, y)
            d = stats.paired_mean_diff(lc, task.row_loss(y, base), a)
            ok = bool(d.upper < 0)
            rows.append(
                {
                    "set": set_name,
                    "metric": f"{loss_name} vs constant model",
                    "n": len(y),
                    "candidate": float(lc.mean()),
                    "champion": float(task.row_loss(y, base).mean()),
                    "difference": d.estimate,
                    "se": d.se,
                    "bound": d.upper,
                    "rule": f"upper {1 - a:.0%} bound < 0 (beats the constant model)",
                    "design_false_rejection": None,
                    "passed": ok,
                    **{f"reported_{k}": v for k, v in reported.items()},
                }
            )
            numbers[f"{set_name}_loss_vs_constant_upper"] = d.upper
            continue
        loss_margin, error_margin = _margins(task, margins, y, champ)
        for metric, per_row, margin in (
            (loss_name, task.row_loss, loss_margin),
            (error_name, task.row_error, error_margin),
        ):
            c, h = per_row(y, cand), per_row(y, champ)
            d = stats.paired_mean_diff(c, h, a)
            rows.append(
                {
                    "set": set_name,
                    "metric": metric,
                    "n": len(y),
                    "candidate": float(c.mean()),
                    "champion": float(h.mean()),
                    "difference": d.estimate,
                    "se": d.se,
                    "bound": d.upper,
                    "rule": f"upper {1 - a:.0%} bound <= +{margin:.4g}",
                    "design_false_rejection": stats.design_false_rejection(d.se, margin, a),
                    "passed": bool(d.upper <= margin),
                }
            )
            numbers[f"{set_name}_{metric.replace(' ', '_').replace('-', '')}_diff_upper"] = d.upper
        rows[-1].update({f"reported_{k}": v for k, v in reported.items()})
    passed = all(r["passed"] for r in rows)
    failed = [f"{r['metric']} on {r['set']}" for r in rows if not r["passed"]]
    if first:
        summary = (
            "first model: beats the constant model on holdout and golden"
            if passed
            else "first model does not beat the constant model"
        )
    else:
        summary = (
            f"candidate at least as good as the champion ({task.name}: {loss_name}, {error_name})"
            if passed
            else "not shown non-inferior"
        )
    if failed:
        summary += f"; failed: {', '.join(failed)}"
    return Judged(passed, rows, numbers, summary)


def slices(
    task: Task,
    y: np.ndarray,
    cand: np.ndarray,
    champ: np.ndarray | None,
    groups: Sequence[tuple[str, np.ndarray]],
    margins: TaskMargins,
) -> Judged:
    """``groups``: (slice name, boolean row mask). A slice fails when its loss is
    significantly more than the margin above the champion's (one-sided z test of
    H0: difference <= margin), Holm-adjusted across the judged slices."""
    from scipy.stats import norm

    rows: list[dict[str, Any]] = []
    p_worse: list[float] = []
    judged: list[int] = []
    for name, mask in groups:
        n = int(mask.sum())
        c = task.row_loss(y[mask], np.asarray(cand)[mask]) if n else np.empty(0)
        row: dict[str, Any] = {
            "slice": name,
            "n": n,
            "candidate_loss": float(c.mean()) if n else None,
        }
        if n < max(margins.min_slice_size, 2) or champ is None:
            rows.append({**row, "judged": False, "passed": True})
            continue
        h = task.row_loss(y[mask], np.asarray(champ)[mask])
        margin, _ = _margins(task, margins, y[mask], np.asarray(champ)[mask])
        d = stats.paired_mean_diff(c, h, margins.slice_alpha)
        se = max(d.se, 1e-12)
        judged.append(len(rows))
        p_worse.append(float(norm.sf((d.estimate - margin) / se)))
        rows.append(
            {
                **row,
                "champion_loss": float(h.mean()),
                "difference": d.estimate,
                "se": d.se,
                "margin": margin,
                "judged": True,
                "passed": True,
            }
        )
    failed: list[str] = []
    if judged:
        rejected, adjusted = stats.holm(p_worse, margins.slice_alpha)
        for i, rej, adj in zip(judged, rejected, adjusted, strict=True):
            rows[i]["p_worse_holm"] = float(adj)
            rows[i]["passed"] = not bool(rej)
            if rej:
                failed.append(str(rows[i]["slice"]))
    if champ is None:
        summary = f"first model: {len(rows)} slice(s) reported, not judged"
    elif failed:
        summary = f"significantly worse than the champion on: {', '.join(failed)}"
    else:
        summary = f"{len(judged)} slice(s) judged, none significantly worse than the champion"
    return Judged(not failed, rows, {"slices_judged": float(len(judged))}, summary)
