"""Model gates: plain functions that judge a candidate against the champion.

Each gate returns a ``GateResult`` (name, passed, severity, summary, table rows,
rule, decision) whose ``to_metadata()`` is what a Dagster asset check shows. The
statistics and the error each gate controls:

1. ``non_inferiority`` (blocking). For AUC (DeLong, paired) and log-loss (paired
   per-row differences, CLT) on the recent holdout *and* the trusted golden set,
   the one-sided ``1 - alpha`` bound of candidate minus champion must clear the
   margin. Controls: P(pass | candidate worse than the champion by at least the
   margin on any of the four metric/set pairs) <= alpha (an intersection-union
   test needs no multiplicity correction). An equally good candidate is wrongly
   rejected with probability ``1 - prod(1 - beta_i) <= sum(beta_i)``, where
   ``beta_i = Phi(z_{1-alpha} - margin / se_i)`` is shown per row ("design
   false rejection") and is the planned rate the simulation tests check.
   First model ever: the AUC lower bound must clear ``auc_floor`` and log-loss
   must beat the best constant predictor (upper bound of the difference < 0).
2. ``slices`` (blocking). Per slice (config) with enough rows, a one-sided test
   of "candidate AUC is more than ``slice_margin`` below the champion's" (first
   model: below ``slice_auc_floor``), Holm-corrected across slices. Controls:
   P(failing a candidate that is not worse by more than the margin on any
   slice) <= slice_alpha (family-wise). Slices are small, so here the burden of
   proof is on the evidence of harm. Plus a fairness rule on point estimates:
   the largest TPR/FPR gap between groups at the decision threshold may grow by
   at most ``fairness_margin`` over the champion's (first model: at most
   ``fairness_max_gap``). That rule is a policy, not a test; its interval is
   not claimed.
3. ``behavioral`` (blocking). Deterministic specifications from YAML (see
   ``behavioral.py``).
4. ``serving_budget`` (blocking). p99 single-row latency and batch throughput
   measured alternating call by call with the champion (same machine, same
   moment, each called as the server calls it), within
   the absolute budget and within ``serving_max_ratio`` of the champion's.
   Measured up to three times; passes when one attempt passes (timing noise on
   a shared machine must not block, a real 2x regression fails every attempt).
5. ``infra_validation`` (blocking). The registered artifact is loaded by the
   server's loader in a fresh process (a child forked from a worker that has only
   imported the serving code, see ``infra_worker``) and must answer requests, parsed
   as ``/invocations`` parses them, exactly as the in-memory model (sklearn:
   bit-identical; torch export: within float32 ulp).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.models import stats
from mlcicd_dagster.models.config import GateConfig, SliceSpec
from mlcicd_dagster.models.predictor import Predictor
from mlcicd_dagster.platform.cpu import available_cores, cores_beside_helper, openmp_threads

GATE_NAMES = ("non_inferiority", "slices", "behavioral", "serving_budget", "infra_validation")
BLOCKING = "ERROR"
WARNING = "WARN"
INFRA_TIMEOUT_S = 180
"""A fresh process imports mlflow and the model: seconds, not minutes."""
SERVING_ATTEMPTS = 3


@dataclass
class GateResult:
    """The outcome of one gate, readable by people and by the asset check."""

    name: str
    passed: bool
    summary: str
    rows: list[dict[str, Any]]
    rule: str
    severity: str = BLOCKING
    numbers: dict[str, float] = field(default_factory=dict)
    run_url: str | None = None

    @property
    def decision(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_markdown(self) -> str:
        lines = [f"**{self.name}: {self.decision}**: {self.summary}", "", f"Rule: {self.rule}"]
        if self.rows:
            cols = list(dict.fromkeys(k for r in self.rows for k in r))
            lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for r in self.rows:
                lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        if self.run_url:
            lines += ["", f"MLflow run: {self.run_url}"]
        return "\n".join(lines)

    def to_metadata(self) -> dict[str, Any]:
        """Dagster metadata: a table, the rule, the decision, numbers, the MLflow link."""
        import dagster as dg

        md: dict[str, Any] = {
            "decision": dg.MetadataValue.text(self.decision),
            "rule": dg.MetadataValue.text(self.rule),
            "summary": dg.MetadataValue.md(self.to_markdown()),
        }
        if self.rows:
            cols = list(dict.fromkeys(k for r in self.rows for k in r))
            types = {c: _col_type([r.get(c) for r in self.rows]) for c in cols}
            schema = dg.TableSchema(columns=[dg.TableColumn(c, types[c]) for c in cols])
            records = [
                dg.TableRecord({c: _cell(r.get(c), types[c]) for c in cols}) for r in self.rows
            ]
            md["table"] = dg.MetadataValue.table(records=records, schema=schema)
        for k, v in self.numbers.items():
            if v is not None and math.isfinite(v):
                md[k] = dg.MetadataValue.float(float(v))
        if self.run_url:
            md["mlflow_run"] = (
                dg.MetadataValue.url(self.run_url)
                if self.run_url.startswith("http")
                else dg.MetadataValue.text(self.run_url)
            )
        return md

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "decision": self.decision,
            "summary": self.summary,
            "rule": self.rule,
            "severity": self.severity,
            "rows": self.rows,
            "numbers": self.numbers,
        }


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _col_type(values: Sequence[Any]) -> str:
    vals = [v for v in values if v is not None]
    if vals and all(isinstance(v, bool) for v in vals):
        return "bool"
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    if vals and all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return "float"
    return "string"


def _cell(v: Any, typ: str) -> Any:
    if v is None:
        return None
    if typ == "float":
        return float(v) if math.isfinite(float(v)) else None
    if typ in ("int", "bool"):
        return v
    return str(v)


# ---------------------------------------------------------------------------
# inputs, with predictions computed once per model and set
# ---------------------------------------------------------------------------
class GateInputs:
    """What every gate reads; scores are computed once and shared by all gates."""

    def __init__(
        self,
        candidate: Predictor,
        champion: Predictor | None,
        *,
        holdout: pd.DataFrame,
        golden: pd.DataFrame,
        config: GateConfig,
        candidate_uri: str | None = None,
        champion_uri: str | None = None,
        tracking_uri: str | None = None,
        run_url: str | None = None,
        champion_tracking_uri: str | None = None,
    ):
        for name, frame in (("holdout", holdout), ("golden", golden)):
            if config.label not in frame.columns:
                raise ValueError(f"{name} set has no label column {config.label!r}")
            if len(frame) < 20:
                raise ValueError(f"{name} set has only {len(frame)} rows")
        self.candidate = candidate
        self.champion = champion
        self.sets = {
            "holdout": holdout.reset_index(drop=True),
            "golden": golden.reset_index(drop=True),
        }
        self.config = config
        self.candidate_uri = candidate_uri
        self.champion_uri = champion_uri
        self.tracking_uri = tracking_uri
        self.champion_tracking_uri = champion_tracking_uri or tracking_uri
        self.run_url = run_url
        self._scores: dict[tuple[str, str], np.ndarray] = {}

    def labels(self, set_name: str) -> np.ndarray:
        return self.sets[set_name][self.config.label].to_numpy().astype(np.int64)

    def scores(self, which: str, set_name: str) -> np.ndarray:
        key = (which, set_name)
        if key not in self._scores:
            model = self.candidate if which == "candidate" else self.champion
            if model is None:
                raise ValueError("no champion")
            self._scores[key] = np.asarray(model.predict_proba(self.sets[set_name]), np.float64)
        return self._scores[key]

    @property
    def combined(self) -> pd.DataFrame:
        return pd.concat([self.sets["holdout"], self.sets["golden"]], ignore_index=True)

    def combined_scores(self, which: str) -> np.ndarray:
        return np.concatenate([self.scores(which, "holdout"), self.scores(which, "golden")])


def _result(inp: GateInputs, **kw: Any) -> GateResult:
    return GateResult(run_url=inp.run_url, **kw)


# ---------------------------------------------------------------------------
# 1. non-inferiority
# ---------------------------------------------------------------------------
def gate_non_inferiority(inp: GateInputs) -> GateResult:
    cfg = inp.config
    a = cfg.alpha
    rows: list[dict[str, Any]] = []
    numbers: dict[str, float] = {}
    design_total = 0.0
    for set_name in ("holdout", "golden"):
        y = inp.labels(set_name)
        cand = inp.scores("candidate", set_name)
        if inp.champion is not None:
            champ = inp.scores("champion", set_name)
            d_auc, auc_c, auc_h = stats.delong_paired(y, cand, champ, a)
            beta_auc = stats.design_false_rejection(d_auc.se, cfg.auc_margin, a)
            rows.append(
                {
                    "set": set_name,
                    "metric": "AUC",
                    "n": len(y),
                    "candidate": auc_c,
                    "champion": auc_h,
                    "difference": d_auc.estimate,
                    "se": d_auc.se,
                    "bound": d_auc.lower,
                    "rule": f"lower {1 - a:.0%} bound >= -{cfg.auc_margin}",
                    "design_false_rejection": beta_auc,
                    "passed": bool(d_auc.lower >= -cfg.auc_margin),
                }
            )
            d_ll, ll_c, ll_h = stats.log_loss_diff(y, cand, champ, a)
            beta_ll = stats.design_false_rejection(d_ll.se, cfg.logloss_margin, a)
            rows.append(
                {
                    "set": set_name,
                    "metric": "log-loss",
                    "n": len(y),
                    "candidate": ll_c,
                    "champion": ll_h,
                    "difference": d_ll.estimate,
                    "se": d_ll.se,
                    "bound": d_ll.upper,
                    "rule": f"upper {1 - a:.0%} bound <= +{cfg.logloss_margin}",
                    "design_false_rejection": beta_ll,
                    "passed": bool(d_ll.upper <= cfg.logloss_margin),
                }
            )
            design_total += beta_auc + beta_ll
            numbers[f"{set_name}_auc_diff"] = d_auc.estimate
            numbers[f"{set_name}_auc_diff_lower"] = d_auc.lower
            numbers[f"{set_name}_logloss_diff_upper"] = d_ll.upper
        else:
            e = stats.auc_with_bounds(y, cand, a)
            rows.append(
                {
                    "set": set_name,
                    "metric": "AUC",
                    "n": len(y),
                    "candidate": e.estimate,
                    "champion": None,
                    "difference": None,
                    "se": e.se,
                    "bound": e.lower,
                    "rule": f"lower {1 - a:.0%} bound >= floor {cfg.auc_floor}",
                    "design_false_rejection": None,
                    "passed": bool(e.lower >= cfg.auc_floor),
                }
            )
            prior = np.full(len(y), np.clip(y.mean(), 1e-6, 1 - 1e-6))
            d_ll, ll_c, ll_p = stats.log_loss_diff(y, cand, prior, a)
            rows.append(
                {
                    "set": set_name,
                    "metric": "log-loss vs constant",
                    "n": len(y),
                    "candidate": ll_c,
                    "champion": ll_p,
                    "difference": d_ll.estimate,
                    "se": d_ll.se,
                    "bound": d_ll.upper,
                    "rule": f"upper {1 - a:.0%} bound < 0 (beats base rate)",
                    "design_false_rejection": None,
                    "passed": bool(d_ll.upper < 0),
                }
            )
            numbers[f"{set_name}_auc"] = e.estimate
            numbers[f"{set_name}_auc_lower"] = e.lower
    passed = all(r["passed"] for r in rows)
    failed = [f"{r['metric']} on {r['set']}" for r in rows if not r["passed"]]
    if inp.champion is not None:
        numbers["design_false_rejection_total"] = design_total
        head = "at least as good as the champion" if passed else "not shown non-inferior"
        summary = f"candidate {head} on holdout and golden"
        # design_total is a union bound over four tests: it can pass 1, a probability cannot
        if design_total > cfg.max_design_false_rejection:
            summary += (
                f" (warning: with these set sizes an equally good model is rejected with "
                f"probability up to {min(design_total, 1.0):.0%}; widen margins or add rows)"
            )
        rule = (
            f"AUC difference lower bound >= -{cfg.auc_margin} and log-loss difference upper "
            f"bound <= +{cfg.logloss_margin} (one-sided {1 - a:.0%}, paired, same rows) on both "
            f"sets; controls P(pass | worse by the margin) <= {a}"
        )
    else:
        summary = "first model: " + ("clears the absolute floors" if passed else "below floors")
        rule = (
            f"no champion: AUC lower bound >= {cfg.auc_floor} and log-loss better than the "
            f"constant base-rate predictor, one-sided {1 - a:.0%}, on both sets"
        )
    if failed:
        summary += "; failed: " + ", ".join(failed)
    return _result(
        inp,
        name="non_inferiority",
        passed=passed,
        summary=summary,
        rows=rows,
        rule=rule,
        numbers=numbers,
    )


# ---------------------------------------------------------------------------
# 2. slices + fairness
# ---------------------------------------------------------------------------
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
        if champ_all is not None:
            gap_h, detail_h = _fairness_gap(y_all, champ_all, masks, cfg.fairness_threshold)
            rows.append({"slice": f"fairness gap ({cfg.fairness_column}), champion", **detail_h})
            fair_ok = gap_c <= gap_h + cfg.fairness_margin
            fair_note = (
                f"TPR/FPR gap {gap_c:.3f} vs champion {gap_h:.3f} (+{cfg.fairness_margin} allowed)"
            )
        else:
            fair_ok = gap_c <= cfg.fairness_max_gap
            fair_note = f"TPR/FPR gap {gap_c:.3f} (max {cfg.fairness_max_gap})"
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
            f"<= champion's + {cfg.fairness_margin}"
            if champ_all is not None
            else f"<= {cfg.fairness_max_gap}"
        )
    )
    return _result(
        inp,
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
    tprs, fprs = [], []
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


# ---------------------------------------------------------------------------
# 3. behavioral
# ---------------------------------------------------------------------------
def gate_behavioral(inp: GateInputs, spec: Mapping[str, Any] | None = None) -> GateResult:
    from mlcicd_dagster.models.behavioral import load_spec, run_behavioral

    if spec is None:
        if inp.config.behavioral_path is None:
            return _result(
                inp,
                name="behavioral",
                passed=True,
                severity=WARNING,
                summary="no behavioral tests configured",
                rows=[],
                rule="behavioral_path not set",
            )
        spec = load_spec(inp.config.behavioral_path)
    rows_in = inp.sets["golden"].drop(columns=[inp.config.label])
    outcomes = run_behavioral(inp.candidate, rows_in, dict(spec))
    rows = [
        {
            "kind": o.kind,
            "test": o.name,
            "rows": o.rows,
            "value": o.value,
            "expectation": o.expectation,
            "passed": o.passed,
        }
        for o in outcomes
    ]
    failed = [o.name for o in outcomes if not o.passed]
    return _result(
        inp,
        name="behavioral",
        passed=not failed,
        summary=f"{len(outcomes) - len(failed)}/{len(outcomes)} behavioral tests pass"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
        rows=rows,
        rule="every invariance, directional and minimum-functionality test in "
        f"{getattr(inp.config.behavioral_path, 'name', 'the spec')} holds on golden rows",
        numbers={"behavioral_failed": float(len(failed))},
    )


# ---------------------------------------------------------------------------
# 4. serving budget
# ---------------------------------------------------------------------------
def _timing(
    models: Mapping[str, Predictor], rows: pd.DataFrame, calls: int, batch: pd.DataFrame
) -> dict[str, tuple[float, float]]:
    """Interleaved single-row latencies (p99 ms) and batch throughput (rows/s) per model.

    Each model is called as the model server calls it (``serving.deployment.score_fn`` on
    a request's feature matrix), so the budget times what serving pays, not pandas.
    """
    from mlcicd_dagster.serving.deployment import score_fn

    scorers = {k: score_fn(m) for k, m in models.items()}
    matrices = {k: rows[list(m.feature_names)].to_numpy(np.float64) for k, m in models.items()}
    one_rows = {
        k: [mat[i % len(mat) : i % len(mat) + 1] for i in range(calls)]
        for k, mat in matrices.items()
    }
    batches = {k: batch[list(m.feature_names)].to_numpy(np.float64) for k, m in models.items()}
    singles: dict[str, list[float]] = {k: [] for k in models}
    batch_s: dict[str, list[float]] = {k: [] for k in models}
    for k, score in scorers.items():  # warm-up: first calls pay for lazy init
        for r in one_rows[k][:5]:
            score(r)
        score(batches[k])
    rounds = 5
    per = max(1, calls // rounds)
    # Models alternate call by call: whatever else the machine does at a moment (another
    # process, the infra gate's fresh process) lands on both models alike.
    with _collector_paused():
        for rnd in range(rounds):
            for i in range(rnd * per, (rnd + 1) * per):
                for k, score in scorers.items():
                    r = one_rows[k][i]
                    t0 = time.perf_counter()
                    score(r)
                    singles[k].append(time.perf_counter() - t0)
            for k, score in scorers.items():
                t0 = time.perf_counter()
                score(batches[k])
                batch_s[k].append(time.perf_counter() - t0)
    # p99 per round, then the median over rounds: one burst of contention from
    # other processes on a shared machine cannot decide the gate alone.
    return {
        k: (
            float(
                np.median(
                    [np.percentile(singles[k][i * per : (i + 1) * per], 99) for i in range(rounds)]
                )
                * 1000
            ),
            float(len(batch) / np.median(batch_s[k])),
        )
        for k in models
    }


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while timing, as ``timeit`` does: a full
    collection of a large process (Dagster, MLflow, torch loaded) takes 0.1-0.4 s, and
    it is this process's pause, not the model's serving latency."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def artifact_size_bytes(model_uri: str, tracking_uri: str | None) -> int | None:
    """Size of a registered model's files (downloaded to a temp folder)."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        import mlflow

        from mlcicd_dagster.models.loading import resolve_model_version

        pinned, _ = resolve_model_version(model_uri, tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=pinned, dst_path=tmp, tracking_uri=tracking_uri
                )
            )
            return sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
    except Exception:  # noqa: BLE001 - size is informational
        return None


def gate_serving_budget(inp: GateInputs) -> GateResult:
    cfg = inp.config
    rows_src = inp.sets["golden"].drop(columns=[cfg.label])
    batch = rows_src.iloc[: cfg.serving_batch_rows]
    if len(batch) < cfg.serving_batch_rows:
        batch = pd.concat([batch] * (cfg.serving_batch_rows // max(len(batch), 1) + 1)).iloc[
            : cfg.serving_batch_rows
        ]
    models: dict[str, Predictor] = {"candidate": inp.candidate}
    if inp.champion is not None:
        models["champion"] = inp.champion
    attempts = []
    ok = False
    timing: dict[str, tuple[float, float]] = {}
    for _ in range(SERVING_ATTEMPTS):
        timing = _timing(models, rows_src, cfg.serving_single_calls, batch)
        ok, checks = _serving_checks(timing, cfg)
        attempts.append(checks)
        if ok:
            break
    p99, tput = timing["candidate"]
    rows: list[dict[str, Any]] = [
        {
            "measure": "p99 single-row latency (ms)",
            "candidate": p99,
            "champion": timing.get("champion", (None, None))[0],
            "budget": cfg.serving_p99_ms,
        },
        {
            "measure": "batch throughput (rows/s)",
            "candidate": tput,
            "champion": timing.get("champion", (None, None))[1],
            "budget": cfg.serving_min_rows_per_s,
        },
    ]
    for r in rows:
        r["attempts"] = len(attempts)
    size = artifact_size_bytes(inp.candidate_uri, inp.tracking_uri) if inp.candidate_uri else None
    csize = (
        artifact_size_bytes(inp.champion_uri, inp.champion_tracking_uri)
        if inp.champion_uri
        else None
    )
    rows.append(
        {
            "measure": "artifact size (bytes)",
            "candidate": size,
            "champion": csize,
            "budget": None,
            "attempts": None,
        }
    )
    failed = [c for c, good in attempts[-1].items() if not good]
    summary = f"p99 {p99:.2f} ms, {tput:,.0f} rows/s" + (
        f" (champion p99 {timing['champion'][0]:.2f} ms, {timing['champion'][1]:,.0f} rows/s)"
        if "champion" in timing
        else ""
    )
    if not ok:
        summary += "; over budget: " + ", ".join(failed)
    numbers = {"p99_ms": p99, "rows_per_s": tput}
    if size is not None:
        numbers["artifact_bytes"] = float(size)
    return _result(
        inp,
        name="serving_budget",
        passed=ok,
        summary=summary,
        rows=rows,
        rule=f"p99 <= {cfg.serving_p99_ms} ms and >= {cfg.serving_min_rows_per_s:g} rows/s, and "
        f"within {cfg.serving_max_ratio}x of the champion (alternating calls, best of "
        f"{SERVING_ATTEMPTS} attempts)",
        numbers=numbers,
    )


def _serving_checks(
    timing: Mapping[str, tuple[float, float]], cfg: GateConfig
) -> tuple[bool, dict[str, bool]]:
    p99, tput = timing["candidate"]
    checks = {
        "p99 budget": p99 <= cfg.serving_p99_ms,
        "throughput budget": tput >= cfg.serving_min_rows_per_s,
    }
    if "champion" in timing:
        cp99, ctput = timing["champion"]
        checks["p99 vs champion"] = p99 <= cfg.serving_max_ratio * cp99
        checks["throughput vs champion"] = tput * cfg.serving_max_ratio >= ctput
    return all(checks.values()), checks


# ---------------------------------------------------------------------------
# 5. infra validation
# ---------------------------------------------------------------------------
def _infra_rule(cfg: GateConfig) -> str:
    return (
        "the registered artifact, loaded by the server's loader in a fresh process, answers "
        "the same rows (one batch request, single-row requests) as the in-memory model, "
        f"within |diff| <= {cfg.infra_atol:g} + {cfg.infra_rtol:g} * |value| "
        f"(torch: {cfg.infra_atol_torch:g} + {cfg.infra_rtol:g} * |value|, float32 ulp)"
    )


def _tracking_uri(inp: GateInputs) -> str:
    """The store the fresh process reads: the gate's, else the one this process uses.

    Never empty: an empty URI would send the child to MLflow's default store, a new
    ``mlflow.db`` in whatever directory it runs in.
    """
    if inp.tracking_uri:
        return inp.tracking_uri
    import mlflow

    return mlflow.get_tracking_uri()


def prewarm_infra_validation() -> None:
    """Start the fresh-process worker infra validation will use, before the model exists.

    Its imports (mlflow, scikit-learn, skops: seconds) then overlap the data gate and
    training instead of adding to the gates; a long-lived process keeps it between runs.
    Each job still runs in a new process that has never held a model (see
    ``infra_worker``). Without a prewarm the gate starts the worker itself.
    """
    from mlcicd_dagster.models import infra_worker

    infra_worker.prewarm()


class _InfraRun:
    """A fresh-process load handed over first, so it overlaps the other gates."""

    def __init__(self, inp: GateInputs):
        from mlcicd_dagster.models import infra_worker

        self.inp = inp
        self.tmp = tempfile.TemporaryDirectory(prefix="mlcicd-infra-")
        rows = inp.sets["golden"].drop(columns=[inp.config.label]).iloc[: inp.config.infra_rows]
        self.rows = rows
        data = Path(self.tmp.name) / "rows.parquet"
        rows.to_parquet(data)
        self.out = str(Path(self.tmp.name) / "answer")
        self.t0 = time.perf_counter()
        self.worker = infra_worker.take()
        self.worker.submit(
            infra_worker.Job(
                model_uri=str(inp.candidate_uri),
                tracking_uri=_tracking_uri(inp),
                rows_path=str(data),
                out=self.out,
            )
        )

    def _failed(self, summary: str) -> GateResult:
        return _result(
            self.inp,
            name="infra_validation",
            passed=False,
            rows=[],
            rule=_infra_rule(self.inp.config),
            summary=summary,
        )

    def _log_tail(self) -> str:
        try:
            lines = Path(self.out + ".log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:]) or "no log"

    def finish(self) -> GateResult:
        from mlcicd_dagster.models import infra_worker

        inp, cfg = self.inp, self.inp.config
        try:
            try:
                expected = np.asarray(inp.candidate.predict_proba(self.rows), np.float64)
                code = self.worker.wait(INFRA_TIMEOUT_S)
            except infra_worker.WorkerGone as exc:
                return self._failed(f"fresh process failed: {exc}")
            except BaseException:
                self.worker.kill()  # a job still in hand: never hand this worker out again
                raise
            elapsed = time.perf_counter() - self.t0
            if code is None:
                return self._failed(f"fresh process did not answer within {INFRA_TIMEOUT_S} s")
            infra_worker.release(self.worker)
            if code != 0:
                return self._failed("fresh process failed to load or score: " + self._log_tail())
            batch = np.load(self.out + ".batch.npy")
            single = np.load(self.out + ".single.npy")
            meta = json.loads(Path(self.out + ".json").read_text())
        finally:
            self.tmp.cleanup()
        atol = cfg.infra_atol_torch if meta.get("flavor") == "torch" else cfg.infra_atol

        def compare(got: np.ndarray, want: np.ndarray) -> tuple[float, bool]:
            """(largest |difference|, every value within atol + rtol * |in-memory|)."""
            if got.shape != want.shape:
                return math.inf, False
            d = np.abs(got - want)
            ok = bool(np.all(d <= atol + cfg.infra_rtol * np.abs(want)))
            return float(np.max(d, initial=0.0)), ok

        diff_b, ok_b = compare(batch, expected)
        diff_s, ok_s = compare(single, expected[: len(single)])
        same_features = meta["features"] == list(inp.candidate.feature_names)
        passed = ok_b and ok_s and same_features
        table = [
            {
                "check": "batch request",
                "rows": len(expected),
                "max_abs_diff": diff_b,
                "tolerance": atol,
                "rtol": cfg.infra_rtol,
                "passed": ok_b,
            },
            {
                "check": "single-row requests",
                "rows": len(single),
                "max_abs_diff": diff_s,
                "tolerance": atol,
                "rtol": cfg.infra_rtol,
                "passed": ok_s,
            },
            {
                "check": "feature names",
                "rows": None,
                "max_abs_diff": None,
                "tolerance": None,
                "rtol": None,
                "passed": same_features,
            },
        ]
        return _result(
            inp,
            name="infra_validation",
            passed=passed,
            summary=f"version {meta['version']} ({meta.get('flavor')}) loaded in a fresh process "
            f"in {elapsed:.1f} s; max |difference| {max(diff_b, diff_s):.2e}",
            rows=table,
            rule=_infra_rule(cfg),
            numbers={"max_abs_diff": max(diff_b, diff_s), "fresh_process_s": elapsed},
        )


def gate_infra_validation(inp: GateInputs) -> GateResult:
    if not inp.candidate_uri:
        return _result(
            inp,
            name="infra_validation",
            passed=False,
            summary="no registered artifact to validate (candidate_uri missing)",
            rows=[],
            rule=_infra_rule(inp.config),
        )
    return _InfraRun(inp).finish()


# ---------------------------------------------------------------------------
# all gates, decision tags
# ---------------------------------------------------------------------------
GATES: dict[str, Callable[[GateInputs], GateResult]] = {
    "non_inferiority": gate_non_inferiority,
    "slices": gate_slices,
    "behavioral": gate_behavioral,
    "serving_budget": gate_serving_budget,
    "infra_validation": gate_infra_validation,
}


def run_all_gates(
    candidate: Predictor,
    champion: Predictor | None,
    *,
    holdout: pd.DataFrame,
    golden: pd.DataFrame,
    config: GateConfig,
    candidate_uri: str | None = None,
    champion_uri: str | None = None,
    tracking_uri: str | None = None,
    run_url: str | None = None,
    champion_tracking_uri: str | None = None,
    only: Sequence[str] | None = None,
) -> list[GateResult]:
    """Run every gate (or ``only`` those named) and return their results, in order.

    A gate that raises becomes a failed result naming the error: a broken gate
    must block, never pass silently.
    """
    inp = GateInputs(
        candidate,
        champion,
        holdout=holdout,
        golden=golden,
        config=config,
        candidate_uri=candidate_uri,
        champion_uri=champion_uri,
        tracking_uri=tracking_uri,
        run_url=run_url,
        champion_tracking_uri=champion_tracking_uri,
    )
    names = list(only or GATE_NAMES)
    unknown = [n for n in names if n not in GATES]
    if unknown:
        raise ValueError(f"unknown gate(s) {unknown}; known: {', '.join(GATE_NAMES)}")
    infra: _InfraRun | None = None
    if "infra_validation" in names and candidate_uri and len(names) > 1:
        try:  # hand the fresh process its job first: it works while the other gates run
            infra = _InfraRun(inp)
        except Exception:  # noqa: BLE001 - the gate below reports the error
            infra = None
    results: dict[str, GateResult] = {}
    # The fresh process of the infra gate works on one core meanwhile (platform.cpu).
    with openmp_threads(cores_beside_helper() if infra is not None else available_cores()):
        for name in sorted(names, key=_EVALUATION_ORDER.index):
            results[name] = _run_gate(name, inp, infra, run_url)
    return [results[name] for name in names]


def _run_gate(
    name: str, inp: GateInputs, infra: _InfraRun | None, run_url: str | None
) -> GateResult:
    try:
        if name == "infra_validation" and infra is not None:
            return infra.finish()
        return GATES[name](inp)
    except Exception as exc:  # noqa: BLE001 - reported as a failed gate
        return GateResult(
            name=name,
            passed=False,
            summary=f"gate raised {type(exc).__name__}: {exc}",
            rows=[],
            rule="the gate must run to completion",
            run_url=run_url,
        )


_EVALUATION_ORDER = (
    "non_inferiority",
    "slices",
    "behavioral",
    "serving_budget",  # alternates the models call by call: the fresh process may still run
    "infra_validation",
)


def decision_tags(results: Sequence[GateResult]) -> dict[str, str]:
    """Tags for the model version: one per gate, plus the overall decision."""
    tags = {f"gate.{r.name}": r.decision for r in results}
    failed = [r.name for r in results if not r.passed and r.severity == BLOCKING]
    tags["gates.decision"] = "FAIL" if failed else "PASS"
    tags["gates.failed"] = ",".join(failed)
    for r in results:
        tags[f"gate.{r.name}.summary"] = r.summary[:4900]
    return tags


def write_decision_tags(
    tracking_uri: str, model_name: str, version: str, results: Sequence[GateResult]
) -> dict[str, str]:
    """Write ``decision_tags(results)`` on the registered model version."""
    from mlcicd_dagster.models.registry import set_version_tags

    tags = decision_tags(results)
    set_version_tags(tracking_uri, model_name, version, tags)
    return tags
