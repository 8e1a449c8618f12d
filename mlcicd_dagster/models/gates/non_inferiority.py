"""Non-inferiority: the candidate is at least as good as the champion, within margins.

For each paired metric (binary: AUC by DeLong, log-loss by per-row differences; a task
adds its own through :data:`PAIRED_METRICS`) on the recent holdout *and* the trusted
golden set, the one-sided ``1 - alpha`` bound of "how much worse the candidate is"
must stay within the metric's margin. Controls: P(pass | candidate worse by at least
the margin on any metric/set pair) <= alpha (an intersection-union test needs no
multiplicity correction). An equally good candidate is wrongly rejected with
probability at most ``sum(beta_i)``, ``beta_i = Phi(z_{1-alpha} - margin / se_i)``;
a candidate worse by ``worse_by`` is caught with probability at least the largest
``Phi((worse_by - margin) / se_i - z_{1-alpha})``. Both are in the metadata.

First model ever: the AUC lower bound must clear ``auc_floor`` and log-loss must beat
the best constant predictor (upper bound of the difference < 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlcicd_dagster.models import stats
from mlcicd_dagster.models.config import GateConfig
from mlcicd_dagster.models.gates.base import (
    DesignSizes,
    GateDesign,
    GateInputs,
    GateResult,
    register_gate,
)
from mlcicd_dagster.platform.lazy import lazy

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy("numpy")


@dataclass(frozen=True)
class PairedMetric:
    """A metric compared on the same rows. ``worsening`` returns the estimate of how
    much worse the candidate is (positive = worse) with its candidate/champion values."""

    name: str
    label: str
    margin_key: str  # GateConfig attribute holding the margin
    worsening: Callable[[np.ndarray, np.ndarray, np.ndarray, float], tuple[Any, float, float]]


def _auc_worsening(y: np.ndarray, cand: np.ndarray, champ: np.ndarray, alpha: float):
    d, auc_champ, auc_cand = stats.delong_paired(y, champ, cand, alpha)  # champion - candidate
    return d, auc_cand, auc_champ


def _log_loss_worsening(y: np.ndarray, cand: np.ndarray, champ: np.ndarray, alpha: float):
    return stats.log_loss_diff(y, cand, champ, alpha)  # candidate - champion


PAIRED_METRICS: dict[str, PairedMetric] = {
    "auc": PairedMetric("auc", "AUC", "auc_margin", _auc_worsening),
    "log_loss": PairedMetric("log_loss", "log-loss", "logloss_margin", _log_loss_worsening),
}
"""Metrics by name; a task's metric plugs in by adding an entry here."""


def metrics_for(inp: GateInputs) -> list[PairedMetric]:
    """The paired metrics of the pipeline's task (binary: AUC and log-loss)."""
    names = getattr(inp.task, "gate_metrics", None) or ("auc", "log_loss")
    return [PAIRED_METRICS[n] for n in names]


def _design_row(cfg: GateConfig, metric: str, n: int, se: float | None = None) -> dict[str, Any]:
    margin = float(getattr(cfg, PAIRED_METRICS[metric].margin_key))
    sd = cfg.design.sd_per_row.get(metric, 0.25)
    worse = cfg.design.worse_by.get(metric, 2 * margin)
    d = stats.design_non_inferiority(
        n=max(n, 2),
        sd_per_row=sd if se is None else se * math.sqrt(max(n, 1)),
        margin=margin,
        alpha=cfg.alpha,
        worse_by=worse,
        target=cfg.max_design_false_rejection,
        name=f"{metric} on {n:,} rows",
    )
    return {"false_rejection": d.false_rejection, "power": d.power, "fix": d.fix()}


def design(cfg: GateConfig, sizes: DesignSizes) -> GateDesign:
    if sizes.task != "binary":  # the task's own per-row loss and error (models.task_gates)
        from mlcicd_dagster.models.task_gates import design_rows

        rows = design_rows(cfg, sizes.task, sizes.holdout_rows, sizes.golden_rows)
    else:
        rows = [
            {"set": s, "metric": m, "n": n, **_design_row(cfg, m, n)}
            for s, n in (("holdout", sizes.holdout_rows), ("golden", sizes.golden_rows))
            for m in ("auc", "log_loss")
        ]
    return GateDesign(
        false_rejection=stats.combined_false_rejection([r["false_rejection"] for r in rows]),
        power=stats.combined_power([r["power"] for r in rows]),
        fixes=tuple(r["fix"] for r in rows if r["fix"]),
        detail=tuple(rows),
    )


@register_gate(
    "non_inferiority",
    description="At least as good as the champion (paired one-sided bounds on each metric, "
    "within margins), on the recent holdout and the trusted golden set.",
    order=10,
    design=design,
)
def gate_non_inferiority(inp: GateInputs) -> GateResult:
    if inp.champion is None:
        return _first_model(inp)
    cfg = inp.config
    a = cfg.alpha
    rows: list[dict[str, Any]] = []
    numbers: dict[str, float] = {}
    for set_name in ("holdout", "golden"):
        y = inp.labels(set_name)
        cand = inp.scores("candidate", set_name)
        champ = inp.scores("champion", set_name)
        for metric in metrics_for(inp):
            margin = float(getattr(cfg, metric.margin_key))
            w, vc, vh = metric.worsening(y, cand, champ, a)
            des = _design_row(cfg, metric.name, len(y))  # the design at this n
            rows.append(
                {
                    "set": set_name,
                    "metric": metric.label,
                    "n": len(y),
                    "candidate": vc,
                    "champion": vh,
                    "worse_by": w.estimate,
                    "se": w.se,
                    "upper_bound": w.upper,
                    "margin": margin,
                    "p_value": stats.normal_p_less(w.estimate, w.se, margin),
                    "design_false_rejection": des["false_rejection"],
                    "design_power": des["power"],
                    "passed": bool(w.upper <= margin),
                }
            )
            numbers[f"{set_name}_{metric.name}_worse_by"] = w.estimate
            numbers[f"{set_name}_{metric.name}_worse_by_upper"] = w.upper
    passed = all(r["passed"] for r in rows)
    failed = [f"{r['metric']} on {r['set']}" for r in rows if not r["passed"]]
    fr = stats.combined_false_rejection([r["design_false_rejection"] for r in rows])
    power = stats.combined_power([r["design_power"] for r in rows])
    numbers["design_false_rejection_total"] = fr
    head = "at least as good as the champion" if passed else "worse than the champion"
    summary = f"candidate {head} on holdout and golden"
    if failed:
        summary += " (beyond the margin: " + ", ".join(failed) + ")"
    worse = ", ".join(f"{k} {v:g}" for k, v in cfg.design.worse_by.items())
    rule = (
        "for each metric and set, the one-sided "
        f"{1 - a:.0%} upper bound of how much worse the candidate is (paired, same rows) "
        f"must be within its margin (AUC {cfg.auc_margin}, log-loss {cfg.logloss_margin}); "
        f"P(pass | worse by the margin) <= {a}; clearly worse means {worse}"
    )
    return GateResult(
        name="non_inferiority",
        passed=passed,
        summary=summary,
        rows=rows,
        rule=rule,
        numbers=numbers,
        run_url=inp.run_url,
        design={"false_rejection": fr, "power": power},
    )


def _first_model(inp: GateInputs) -> GateResult:
    cfg = inp.config
    a = cfg.alpha
    rows: list[dict[str, Any]] = []
    numbers: dict[str, float] = {}
    for set_name in ("holdout", "golden"):
        y = inp.labels(set_name)
        cand = inp.scores("candidate", set_name)
        e = stats.auc_with_bounds(y, cand, a)
        rows.append(
            {
                "set": set_name,
                "metric": "AUC",
                "n": len(y),
                "candidate": e.estimate,
                "reference": cfg.auc_floor,
                "se": e.se,
                "bound": e.lower,
                "rule": f"lower {1 - a:.0%} bound >= floor {cfg.auc_floor}",
                "passed": bool(e.lower >= cfg.auc_floor),
            }
        )
        prior = np.full(len(y), float(y.mean()))
        d_ll, ll_c, ll_p = stats.log_loss_diff(y, cand, prior, a)
        rows.append(
            {
                "set": set_name,
                "metric": "log-loss vs constant",
                "n": len(y),
                "candidate": ll_c,
                "reference": ll_p,
                "se": d_ll.se,
                "bound": d_ll.upper,
                "rule": f"upper {1 - a:.0%} bound of the difference < 0 (beats the base rate)",
                "passed": bool(d_ll.upper < 0),
            }
        )
        numbers[f"{set_name}_auc"] = e.estimate
        numbers[f"{set_name}_auc_lower"] = e.lower
    passed = all(r["passed"] for r in rows)
    failed = [f"{r['metric']} on {r['set']}" for r in rows if not r["passed"]]
    summary = "first model: " + ("clears the absolute floors" if passed else "below floors")
    if failed:
        summary += "; failed: " + ", ".join(failed)
    return GateResult(
        name="non_inferiority",
        passed=passed,
        summary=summary,
        rows=rows,
        rule=f"no champion: AUC lower bound >= {cfg.auc_floor} and log-loss better than the "
        f"constant base-rate predictor, one-sided {1 - a:.0%}, on both sets",
        numbers=numbers,
        run_url=inp.run_url,
    )
