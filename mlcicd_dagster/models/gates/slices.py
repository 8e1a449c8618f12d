"""Slices and fairness: no slice significantly worse than the champion.

Per slice (config) with enough rows, a one-sided DeLong test of "candidate AUC is
more than ``slice_margin`` below the champion's" (first model: below
``slice_auc_floor``), Holm-corrected across slices. Controls: P(failing a candidate
that is not worse by more than the margin on any slice) <= ``slice_alpha``
(family-wise). An equally good candidate fails only if some slice's estimate falls
``margin + z`` standard errors low: by design at most
``sum_k Phi(-margin / se_k - z_{1 - slice_alpha / K})``.

Fairness (``fairness_column``): the largest TPR/FPR gap between groups at the decision
threshold may grow by at most ``fairness_margin`` over the champion's, judged with a
paired bootstrap of the rows (one-sided ``1 - alpha``): it fails only when the growth
is significantly above the margin (first model: the gap's lower bound above
``fairness_max_gap``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mlcicd_dagster.models import stats
from mlcicd_dagster.models.config import GateConfig, SliceSpec
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
    import pandas as pd
else:
    np = lazy("numpy")
    pd = lazy("pandas")


FAIRNESS_BOOTSTRAP = 400
BOOTSTRAP_SEED = 20240611


def design(cfg: GateConfig, sizes: DesignSizes) -> GateDesign:
    """Equal model, every slice at the smallest judged size (worst case)."""
    if sizes.task != "binary":
        # models.task_gates: a slice fails only when its loss is significantly (Holm,
        # family-wise slice_alpha) more than its margin above the champion's, so an equal
        # model fails with probability at most slice_alpha (none configured: never)
        return GateDesign(false_rejection=float(cfg.slice_alpha) if cfg.slices else 0.0)
    from statistics import NormalDist

    if not cfg.slices:
        return GateDesign(false_rejection=0.0)
    k = sum(
        max(len(s.groups) or (len(s.edges) - 1 if s.kind == "bands" else 4), 1) for s in cfg.slices
    )
    se = cfg.design.sd_per_row.get("auc", 0.25) / math.sqrt(cfg.min_slice_size)
    z = NormalDist().inv_cdf(1 - cfg.slice_alpha / k)
    per = NormalDist().cdf(-cfg.slice_margin / se - z)
    fr = min(1.0, k * per)
    fix: tuple[str, ...] = ()
    if fr > cfg.max_design_false_rejection:
        fix = (
            f"slices: an equally good model fails with probability {fr:.0%}; raise "
            f"slice_margin or min_slice_size (now {cfg.slice_margin}, {cfg.min_slice_size})",
        )
    return GateDesign(false_rejection=fr, fixes=fix)


def slice_masks(frame: pd.DataFrame, spec: SliceSpec) -> list[tuple[str, np.ndarray]]:
    """(slice name, boolean mask) for every slice of one spec."""
    if spec.column not in frame.columns:
        raise ValueError(f"slice column {spec.column!r} is not in the data")
    col = frame[spec.column].to_numpy()
    out = []
    if spec.kind == "bands":
        e = spec.edges
        for lo, hi in zip(e[:-1], e[1:], strict=False):
            out.append((f"{spec.column} [{lo:g}, {hi:g})", (col >= lo) & (col < hi)))
    elif spec.groups:
        for gname, values in spec.groups.items():
            out.append((f"{spec.column}={gname}", np.isin(col, list(values))))
    else:
        for v in sorted(pd.unique(col).tolist()):
            out.append((f"{spec.column}={v}", col == v))
    return out


def _judgeable(y: np.ndarray, min_size: int) -> bool:
    pos = int(y.sum())
    return len(y) >= min_size and pos >= 10 and len(y) - pos >= 10


@register_gate(
    "slices",
    description="No slice significantly worse than the champion (DeLong, Holm); the "
    "fairness gap may not grow significantly beyond its margin (paired bootstrap).",
    order=20,
    design=design,
)
def gate_slices(inp: GateInputs) -> GateResult:
    from scipy.stats import norm

    cfg = inp.config
    frame = inp.combined
    y_all = frame[cfg.label].to_numpy().astype(np.int64)
    cand_all = inp.combined_scores("candidate")
    champ_all = inp.combined_scores("champion") if inp.champion is not None else None
    rows: list[dict[str, Any]] = []
    pvals: list[float] = []
    judged: list[int] = []
    for spec in cfg.slices:
        for sname, mask in slice_masks(frame, spec):
            y = y_all[mask]
            row: dict[str, Any] = {"slice": sname, "n": int(mask.sum()), "positives": int(y.sum())}
            if not _judgeable(y, cfg.min_slice_size):
                row.update(decision="too small, not judged")
                rows.append(row)
                continue
            if champ_all is not None:
                d, ac, ah = stats.delong_paired(y, cand_all[mask], champ_all[mask], cfg.alpha)
                # H0: diff >= -margin; small p = evidence the slice got worse by > margin
                p = (
                    float(norm.cdf((d.estimate + cfg.slice_margin) / d.se))
                    if d.se > 0
                    else (0.0 if d.estimate < -cfg.slice_margin else 1.0)
                )
                row.update(candidate_auc=ac, champion_auc=ah, difference=d.estimate, se=d.se)
            else:
                e = stats.auc_with_bounds(y, cand_all[mask], cfg.alpha)
                p = (
                    float(norm.cdf((e.estimate - cfg.slice_auc_floor) / e.se))
                    if e.se > 0
                    else (0.0 if e.estimate < cfg.slice_auc_floor else 1.0)
                )
                row.update(candidate_auc=e.estimate, se=e.se)
            row["p_value"] = p
            pvals.append(p)
            judged.append(len(rows))
            rows.append(row)
    rejected, adjusted = stats.holm(pvals, cfg.slice_alpha)
    worse = []
    for idx, rej, padj in zip(judged, rejected, adjusted, strict=True):
        rows[idx]["holm_p"] = float(padj)
        rows[idx]["decision"] = "WORSE" if rej else "ok"
        if rej:
            worse.append(rows[idx]["slice"])

    fair_ok = True
    fair_note = ""
    if cfg.fairness_column:
        found = next((s for s in cfg.slices if s.column == cfg.fairness_column), None)
        spec = found or SliceSpec(cfg.fairness_column)
        masks = slice_masks(frame, spec)
        gap_c, detail_c = _fairness_gap(y_all, cand_all, masks, cfg.fairness_threshold)
        rows.append({"slice": f"fairness gap ({cfg.fairness_column}), candidate", **detail_c})
        boot = _bootstrap_gaps(y_all, cand_all, champ_all, masks, cfg.fairness_threshold)
        q = float(np.quantile(boot, cfg.alpha))  # one-sided lower bound
        if champ_all is not None:
            gap_h, detail_h = _fairness_gap(y_all, champ_all, masks, cfg.fairness_threshold)
            rows.append({"slice": f"fairness gap ({cfg.fairness_column}), champion", **detail_h})
            growth = gap_c - gap_h
            rows[-1]["lower_bound_growth"] = q
            fair_ok = q <= cfg.fairness_margin
            fair_note = (
                f"TPR/FPR gap {gap_c:.3f} vs champion {gap_h:.3f}: growth {growth:+.3f}, "
                f"lower {1 - cfg.alpha:.0%} bound {q:+.3f} (margin +{cfg.fairness_margin})"
            )
        else:
            rows[-1]["lower_bound_gap"] = q
            fair_ok = q <= cfg.fairness_max_gap
            fair_note = (
                f"TPR/FPR gap {gap_c:.3f}, lower {1 - cfg.alpha:.0%} bound {q:.3f} "
                f"(max {cfg.fairness_max_gap})"
            )
        rows[-1]["decision"] = "ok" if fair_ok else "WORSE"
    passed = not worse and fair_ok
    n_judged = len(judged)
    n_small = sum(1 for r in rows if r.get("decision") == "too small, not judged")
    summary = f"{n_judged} slices judged, {n_small} too small; " + (
        f"significantly worse: {', '.join(worse)}" if worse else "none significantly worse"
    )
    if fair_note:
        summary += f"; fairness: {fair_note}" + ("" if fair_ok else " FAILS")
    margin_txt = (
        f"more than {cfg.slice_margin} AUC below the champion"
        if champ_all is not None
        else f"below AUC {cfg.slice_auc_floor}"
    )
    rule = (
        f"fail if any slice (n >= {cfg.min_slice_size}) is significantly {margin_txt} "
        f"(one-sided DeLong, Holm FWER <= {cfg.slice_alpha}); fairness: largest TPR/FPR gap "
        f"between {cfg.fairness_column} groups at p >= {cfg.fairness_threshold} "
        + (
            f"grows by at most {cfg.fairness_margin} over the champion's"
            if champ_all is not None
            else f"<= {cfg.fairness_max_gap}"
        )
        + (
            f" (fails only when the paired-bootstrap one-sided {1 - cfg.alpha:.0%} lower "
            "bound is beyond it)"
        )
    )
    return GateResult(
        run_url=inp.run_url,
        design={"false_rejection": design(cfg, _sizes(inp)).false_rejection},
        name="slices",
        passed=passed,
        summary=summary,
        rows=rows,
        rule=rule,
        numbers={"slices_judged": float(n_judged), "slices_worse": float(len(worse))},
    )


def _fairness_gap(
    y: np.ndarray, p: np.ndarray, masks: list[tuple[str, np.ndarray]], threshold: float
) -> tuple[float, dict[str, Any]]:
    tprs: list[float] = []
    fprs: list[float] = []
    parts = []
    for name, m in masks:
        if m.sum() == 0:
            continue
        tpr, fpr = stats.rates_at_threshold(y[m], p[m], threshold)
        tprs.append(tpr)
        fprs.append(fpr)
        parts.append(f"{name}: TPR {tpr:.3f} FPR {fpr:.3f}")
    tgap = float(np.nanmax(tprs) - np.nanmin(tprs)) if tprs else 0.0
    fgap = float(np.nanmax(fprs) - np.nanmin(fprs)) if fprs else 0.0
    gap = max(tgap, fgap)
    return gap, {
        "n": int(sum(int(m.sum()) for _, m in masks)),
        "difference": gap,
        "detail": "; ".join(parts),
    }


def _sizes(inp: GateInputs) -> DesignSizes:
    return DesignSizes(len(inp.sets["holdout"]), len(inp.sets["golden"]))


def _bootstrap_gaps(
    y: np.ndarray,
    cand: np.ndarray,
    champ: np.ndarray | None,
    masks: list[tuple[str, np.ndarray]],
    threshold: float,
) -> np.ndarray:
    """Bootstrap of the candidate's gap (minus the champion's, same resampled rows)."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    n = len(y)
    group = np.full(n, -1)
    for i, (_, m) in enumerate(masks):
        group[m] = i
    hit_c = cand >= threshold
    hit_h = champ >= threshold if champ is not None else None
    out = np.empty(FAIRNESS_BOOTSTRAP)
    for b in range(FAIRNESS_BOOTSTRAP):
        w = np.bincount(rng.integers(0, n, n), minlength=n)
        g_c = _weighted_gap(y, hit_c, group, len(masks), w)
        out[b] = g_c - (_weighted_gap(y, hit_h, group, len(masks), w) if hit_h is not None else 0)
    return out


def _weighted_gap(
    y: np.ndarray, hit: np.ndarray, group: np.ndarray, k: int, w: np.ndarray
) -> float:
    """Largest TPR or FPR gap between groups, rows weighted by bootstrap counts."""
    tprs: list[float] = []
    fprs: list[float] = []
    for g in range(k):
        in_g = group == g
        for cls, acc in ((1, tprs), (0, fprs)):
            sel = in_g & (y == cls)
            total = w[sel].sum()
            if total > 0:
                acc.append(w[sel & hit].sum() / total)
    tgap = max(tprs) - min(tprs) if tprs else 0.0
    fgap = max(fprs) - min(fprs) if fprs else 0.0
    return float(max(tgap, fgap))
