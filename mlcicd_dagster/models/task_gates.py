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
from typing import TYPE_CHECKING, Any

from mlcicd_dagster.models import stats
from mlcicd_dagster.models.tasks import Task
from mlcicd_dagster.platform.lazy import lazy

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:
    np = lazy("numpy")
    pd = lazy("pandas")


@dataclass(frozen=True)
class TaskMargins:
    alpha: float = 0.05
    loss_margin: float = 0.05
    """multiclass: largest log-loss increase accepted (nats per row)."""
    error_margin: float = 0.02
    """multiclass: largest error-rate increase accepted (accuracy points)."""
    relative_margin: float = 0.10
    """regression: largest MSE increase accepted, as a share of the champion's."""
    relative_error_margin: float | None = None
    """regression: largest MAE increase accepted, as a share (default ``relative_margin``)."""
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
        rel_error = (
            m.relative_margin if m.relative_error_margin is None else m.relative_error_margin
        )
        return (
            m.relative_margin * float(np.mean(task.row_loss(y, champion))),
            rel_error * float(np.mean(task.row_error(y, champion))),
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


def design_rows(cfg: Any, task: str, holdout_rows: int, golden_rows: int) -> list[dict[str, Any]]:
    """The non-inferiority tests of a multiclass or regression pipeline, by design: per
    set and metric, P(an equally good model fails) and P(one worse by
    ``design.worse_by`` fails), from ``design.sd_per_row`` (``loss``, ``error``; for a
    regression a share of the champion's mean, as the margins are)."""
    if task == "regression":
        rel_error = cfg.relative_error_margin
        margins = {
            "loss": cfg.relative_margin,
            "error": cfg.relative_margin if rel_error is None else rel_error,
        }
        defaults = {"loss": 1.0, "error": 0.5}  # per-row SD / champion's mean, typical
    else:
        margins = {"loss": cfg.loss_margin, "error": cfg.error_margin}
        defaults = {"loss": 0.5, "error": 0.3}
    rows = []
    for set_name, n in (("holdout", holdout_rows), ("golden", golden_rows)):
        for metric, margin in margins.items():
            d = stats.design_non_inferiority(
                n=max(n, 2),
                sd_per_row=cfg.design.sd_per_row.get(metric, defaults[metric]),
                margin=margin,
                alpha=cfg.alpha,
                worse_by=cfg.design.worse_by.get(metric, 2 * margin),
                target=cfg.max_design_false_rejection,
                name=f"{task} {metric} on {set_name} ({n:,} rows)",
            )
            rows.append(
                {
                    "set": set_name,
                    "metric": metric,
                    "n": n,
                    "false_rejection": d.false_rejection,
                    "power": d.power,
                    "fix": d.fix(),
                }
            )
    return rows


# ---------------------------------------------------------------------------
# all five gates for a task other than binary
# ---------------------------------------------------------------------------
class _TaskOutput:
    """A predictor whose ``predict_proba`` is the task's output (``predict``): what the
    serving-budget and infra gates time and compare, whatever its shape."""

    def __init__(self, predictor: Any):
        self._p = predictor
        self.feature_names = predictor.feature_names
        self.version = predictor.version
        self.task = predictor.task

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)

    def predict(self, features: Any) -> Any:
        return self._p.predict(features)

    def predict_proba(self, features: Any) -> Any:
        return self._p.predict(features)


RULE_NI = (
    "paired one-sided {level:.0%} upper bounds of the task's per-row loss and error "
    "differences (candidate - champion) within their margins on holdout and golden; "
    "first model: beats the constant model"
)


def run_task_gates(
    candidate: Any,
    champion: Any | None,
    *,
    holdout: Any,
    golden: Any,
    config: Any,
    task: Task,
    candidate_uri: str | None = None,
    champion_uri: str | None = None,
    tracking_uri: str | None = None,
    run_url: str | None = None,
    only: Sequence[str] | None = None,
) -> list[Any]:
    """The model gates of a multiclass or regression candidate, as ``GateResult``s in the
    order of the binary gates: non-inferiority and slices on the task's own losses (this
    module), behavioral (the pipeline's tests, if it has any), and the serving budget and
    infra validation of ``models.gates`` on the task's output (``only``: those named)."""
    from mlcicd_dagster.models.gates import BLOCKING, GateResult, run_all_gates, slice_masks

    margins = TaskMargins(
        alpha=config.alpha,
        loss_margin=getattr(config, "loss_margin", TaskMargins.loss_margin),
        error_margin=getattr(config, "error_margin", TaskMargins.error_margin),
        relative_margin=getattr(config, "relative_margin", TaskMargins.relative_margin),
        relative_error_margin=getattr(config, "relative_error_margin", None),
        min_slice_size=min(config.min_slice_size, TaskMargins.min_slice_size),
        slice_alpha=config.slice_alpha,
    )
    sets = {"holdout": holdout.reset_index(drop=True), "golden": golden.reset_index(drop=True)}
    out: dict[str, Any] = {}
    for name, frame in sets.items():
        if len(frame) < 20:
            raise ValueError(f"{name} set has only {len(frame)} rows: too few for the gates")
        y = task.encode(frame[config.label])
        cand = candidate.predict(frame)
        champ = champion.predict(frame) if champion is not None else None
        out[name] = (y, cand, champ)
    results = []
    try:
        ni = non_inferiority(task, out, margins)
        results.append(
            GateResult(
                name="non_inferiority",
                passed=ni.passed,
                summary=ni.summary,
                rows=ni.rows,
                rule=RULE_NI.format(level=1 - margins.alpha),
                severity=BLOCKING,
                numbers=ni.numbers,
                run_url=run_url,
            )
        )
    except Exception as exc:  # noqa: BLE001 - a broken gate blocks, never passes
        results.append(_failed(GateResult, "non_inferiority", exc, run_url))
    try:
        combined = pd.concat([sets["holdout"], sets["golden"]], ignore_index=True)
        y = np.concatenate([out["holdout"][0], out["golden"][0]])
        cand = np.concatenate([out["holdout"][1], out["golden"][1]])
        champ = (
            np.concatenate([out["holdout"][2], out["golden"][2]]) if champion is not None else None
        )
        groups = [g for s in config.slices for g in slice_masks(combined, s)]
        sl = slices(task, y, cand, champ, groups, margins)
        results.append(
            GateResult(
                name="slices",
                passed=sl.passed,
                summary=sl.summary,
                rows=sl.rows,
                rule=f"no slice's loss significantly more than its margin above the champion's "
                f"(Holm, family-wise {margins.slice_alpha:g})",
                severity=BLOCKING,
                numbers=sl.numbers,
                run_url=run_url,
            )
        )
    except Exception as exc:  # noqa: BLE001
        results.append(_failed(GateResult, "slices", exc, run_url))
    others = ["serving_budget", "infra_validation"]
    if config.behavioral_path is not None:
        others.insert(0, "behavioral")
    elif only is not None and "behavioral" not in only:
        pass
    else:
        results.append(
            GateResult(
                name="behavioral",
                passed=True,
                summary=f"no behavioral tests declared for this {task.name} pipeline",
                rows=[],
                rule="behavioral_path not set",
                severity=BLOCKING,
                run_url=run_url,
            )
        )
    if only is not None:
        others = [g for g in others if g in only]
        results = [r for r in results if r.name in only]
    results += (
        run_all_gates(
            _TaskOutput(candidate),  # type: ignore[arg-type]
            _TaskOutput(champion) if champion is not None else None,  # type: ignore[arg-type]
            holdout=holdout,
            golden=golden,
            config=config,
            candidate_uri=candidate_uri,
            champion_uri=champion_uri,
            tracking_uri=tracking_uri,
            run_url=run_url,
            only=others,
        )
        if others
        else []
    )
    order = ["non_inferiority", "slices", "behavioral", "serving_budget", "infra_validation"]
    return sorted(results, key=lambda r: order.index(r.name) if r.name in order else 99)


def _failed(cls: Any, name: str, exc: Exception, run_url: str | None) -> Any:
    return cls(
        name=name,
        passed=False,
        summary=f"the gate could not judge: {type(exc).__name__}: {exc}",
        rows=[],
        rule="a gate that raises blocks",
        run_url=run_url,
    )
