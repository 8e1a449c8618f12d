"""Serving budget: the candidate is not slower than the champion by more than a ratio.

Measured as the server calls a model (``models.predictor.score_fn`` on a request's
feature matrix), paired and interleaved: single-row calls alternate candidate/champion
(the order flips every pair), so whatever else the machine does at a moment (another
process, a CPU hog, the infra gate's fresh process) lands on both alike. Per pair the
log of the time ratio is one observation; the statistic is their median (the typical
slowdown) with a distribution-free one-sided ``1 - alpha`` lower bound (sign test
order statistic). The candidate fails only when that bound is above
``log(serving_max_ratio)``: P(fail | true median ratio <= max_ratio) <= alpha for any
distribution of machine noise; batch calls are judged the same way. An absolute p99
ceiling and throughput floor apply only when configured (``serving_p99_ms``,
``serving_min_rows_per_s``): they measure the machine as much as the model.

First model: no champion to pair with; only the configured absolute limits apply.
"""

from __future__ import annotations

import contextlib
import gc
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    import pandas as pd

    from mlcicd_dagster.models.predictor import Predictor
else:
    np = lazy("numpy")
    pd = lazy("pandas")


DESIGN_SD_LOG_RATIO = 0.5
"""Per-pair SD of log(candidate time / champion time) the design assumes (normal): a
loaded machine; the gate reports the rates at the spread it measured."""
CLEARLY_SLOWER = 2.0
"""What "clearly slower" means for the design's power: twice the champion's time."""


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), stdlib only (the design runs when the code location loads)."""
    if k < 0:
        return 0.0
    return min(1.0, sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)))


def sign_test_rank(n: int, alpha: float) -> int:
    """The largest k with ``P(Binomial(n, 1/2) <= k - 1) <= alpha`` (0: no bound at n)."""
    k = 0
    while k < n and _binom_cdf(k, n, 0.5) <= alpha:
        k += 1
    return k


def median_ratio_bounds(log_ratios: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(median, lower, upper) one-sided ``1 - alpha`` bounds of the median, distribution-free.

    The k-th order statistic with ``P(Binomial(n, 1/2) <= k - 1) <= alpha`` is a lower bound
    of the median with coverage >= 1 - alpha (sign test), symmetric for the upper one.
    """
    x = np.sort(np.asarray(log_ratios, dtype=np.float64))
    n = len(x)
    if n == 0:
        return math.nan, -math.inf, math.inf
    k = sign_test_rank(n, alpha)
    lower = float(x[k - 1]) if k >= 1 else -math.inf
    upper = float(x[n - k]) if k >= 1 else math.inf
    return float(np.median(x)), lower, upper


def sign_test_rates(
    n: int, alpha: float, max_ratio: float, p_beyond: float, p_beyond_2x: float
) -> tuple[float, float]:
    """(false rejection, power) of the median-ratio test with ``n`` pairs.

    ``p_beyond``: for an equally fast candidate, P(one pair's ratio > max_ratio);
    ``p_beyond_2x``: the same for a candidate twice as slow. The test fails when fewer
    than k pairs are below the limit, so both rates are binomial tails (exact, given
    the per-pair probabilities).
    """
    k = sign_test_rank(n, alpha)
    if k == 0:
        return 0.0, 0.0
    return _binom_cdf(k - 1, n, 1 - p_beyond), _binom_cdf(k - 1, n, 1 - p_beyond_2x)


def _normal_tail(x: float) -> float:
    from statistics import NormalDist

    return 1.0 - NormalDist().cdf(x)


def _assumed_rates(n: int, cfg: GateConfig) -> tuple[float, float]:
    sd = DESIGN_SD_LOG_RATIO
    margin = math.log(cfg.serving_max_ratio)
    return sign_test_rates(
        n,
        cfg.alpha,
        cfg.serving_max_ratio,
        _normal_tail(margin / sd),
        _normal_tail((margin - math.log(CLEARLY_SLOWER)) / sd),
    )


def design(cfg: GateConfig, sizes: DesignSizes) -> GateDesign:
    """Per-pair log-ratio noise of ``DESIGN_SD_LOG_RATIO`` (a loaded machine)."""
    fr1, pw1 = _assumed_rates(cfg.serving_single_calls, cfg)
    fr2, pw2 = _assumed_rates(cfg.serving_batch_calls, cfg)
    fr = min(1.0, fr1 + fr2)
    fixes: tuple[str, ...] = ()
    if fr > cfg.max_design_false_rejection:
        fixes = (
            f"serving_budget: raise serving_max_ratio (now {cfg.serving_max_ratio}) or the "
            f"number of paired calls (serving_single_calls {cfg.serving_single_calls}, "
            f"serving_batch_calls {cfg.serving_batch_calls})",
        )
    return GateDesign(false_rejection=fr, power=max(pw1, pw2), fixes=fixes)


def _measured_rates(lr: np.ndarray, cfg: GateConfig) -> tuple[float, float]:
    """The design rates at the measured spread: per-pair tail probabilities of the
    centred log-ratios (an equal candidate), and of them shifted by log(2)."""
    centred = lr - np.median(lr)
    margin = math.log(cfg.serving_max_ratio)
    return sign_test_rates(
        len(lr),
        cfg.alpha,
        cfg.serving_max_ratio,
        float(np.mean(centred > margin)),
        float(np.mean(centred + math.log(CLEARLY_SLOWER) > margin)),
    )


def _matrix(frame: pd.DataFrame, model: Predictor) -> np.ndarray:
    """The rows as the server hands them to the model: float64, or, for a model with text
    features, an object matrix (text as given, missing as None, numbers as floats)."""
    names = list(model.feature_names)
    text = set(getattr(model, "string_features", ()) or ())
    if not text:
        return frame[names].to_numpy(np.float64)
    out = np.empty((len(frame), len(names)), dtype=object)
    for j, name in enumerate(names):
        col = frame[name]
        if name in text:
            out[:, j] = [None if pd.isna(v) else str(v) for v in col]
        else:
            out[:, j] = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
    return out


def paired_timing(
    candidate: Predictor,
    champion: Predictor | None,
    rows: pd.DataFrame,
    batch: pd.DataFrame,
    calls: int,
    batch_calls: int,
) -> dict[str, np.ndarray]:
    """Seconds per call: ``single_<model>`` and ``batch_<model>``, interleaved in pairs."""
    from mlcicd_dagster.models.predictor import score_fn

    models = {"candidate": candidate}
    if champion is not None:
        models["champion"] = champion
    scorers = {k: score_fn(m) for k, m in models.items()}
    mats = {k: _matrix(rows, m) for k, m in models.items()}
    batches = {k: _matrix(batch, m) for k, m in models.items()}
    for k, score in scorers.items():  # warm-up: first calls pay for lazy init
        for i in range(5):
            score(mats[k][i % len(mats[k]) : i % len(mats[k]) + 1])
        score(batches[k])
    names = list(models)
    single = {k: np.empty(calls) for k in names}
    batch_t: dict[str, list[float]] = {k: [] for k in names}
    every = max(1, calls // max(batch_calls, 1))
    with _collector_paused():
        for i in range(calls):
            order = names if i % 2 == 0 else names[::-1]
            for k in order:
                r = mats[k][i % len(mats[k]) : i % len(mats[k]) + 1]
                t0 = time.perf_counter()
                scorers[k](r)
                single[k][i] = time.perf_counter() - t0
            if i % every == 0 and len(batch_t[names[0]]) < batch_calls:
                for k in order:
                    t0 = time.perf_counter()
                    scorers[k](batches[k])
                    batch_t[k].append(time.perf_counter() - t0)
    out = {f"single_{k}": v for k, v in single.items()}
    out.update({f"batch_{k}": np.asarray(v) for k, v in batch_t.items()})
    return out


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


def judge_timing(
    timing: Mapping[str, np.ndarray], cfg: GateConfig
) -> tuple[bool, list[dict[str, Any]], dict[str, float], dict[str, float]]:
    """(passed, table rows, numbers, design) of one paired measurement."""
    a = cfg.alpha
    rows: list[dict[str, Any]] = []
    numbers: dict[str, float] = {}
    design_rates: dict[str, float] = {}
    cand_single = timing["single_candidate"]
    p99 = float(np.percentile(cand_single, 99) * 1000)
    tput = float(cfg.serving_batch_rows / np.median(timing["batch_candidate"]))
    numbers.update(p99_ms=p99, rows_per_s=tput)
    ok = True
    if "single_champion" in timing:
        for kind in ("single", "batch"):
            lr = np.log(timing[f"{kind}_candidate"]) - np.log(timing[f"{kind}_champion"])
            med, lo, hi = median_ratio_bounds(lr, a)
            passed = bool(lo <= math.log(cfg.serving_max_ratio))
            ok &= passed
            fr, power = _measured_rates(lr, cfg)
            rows.append(
                {
                    "measure": f"{'single-row' if kind == 'single' else 'batch'} time ratio "
                    "candidate/champion (median of pairs)",
                    "pairs": len(lr),
                    "ratio": math.exp(med),
                    "lower_bound": math.exp(lo) if math.isfinite(lo) else 0.0,
                    "upper_bound": math.exp(hi) if math.isfinite(hi) else math.inf,
                    "limit": cfg.serving_max_ratio,
                    "design_false_rejection": fr,
                    "passed": passed,
                }
            )
            numbers[f"{kind}_ratio"] = math.exp(med)
            numbers[f"{kind}_ratio_lower"] = math.exp(lo) if math.isfinite(lo) else 0.0
            design_rates[f"{kind}_fr"] = fr
            design_rates[f"{kind}_power"] = power
        numbers["champion_p99_ms"] = float(np.percentile(timing["single_champion"], 99) * 1000)
    if cfg.serving_p99_ms is not None:
        passed = p99 <= cfg.serving_p99_ms
        ok &= passed
        rows.append(
            {"measure": "p99 single-row latency (ms), absolute ceiling", "ratio": None,
             "value": p99, "limit": cfg.serving_p99_ms, "passed": passed}
        )  # fmt: skip
    if cfg.serving_min_rows_per_s is not None:
        passed = tput >= cfg.serving_min_rows_per_s
        ok &= passed
        rows.append(
            {"measure": "batch throughput (rows/s), absolute floor", "ratio": None,
             "value": tput, "limit": cfg.serving_min_rows_per_s, "passed": passed}
        )  # fmt: skip
    design = {}
    if design_rates:
        design = {
            "false_rejection": min(1.0, design_rates["single_fr"] + design_rates["batch_fr"]),
            "power": max(design_rates["single_power"], design_rates["batch_power"]),
        }
    return ok, rows, numbers, design


@register_gate(
    "serving_budget",
    description="Not slower than the champion beyond the configured ratio (paired, "
    "interleaved calls; median ratio with a one-sided bound); absolute limits if set.",
    order=40,
    design=design,
)
def gate_serving_budget(inp: GateInputs) -> GateResult:
    cfg = inp.config
    rows_src = inp.sets["golden"].drop(columns=[cfg.label])
    batch = rows_src.iloc[: cfg.serving_batch_rows]
    if len(batch) < cfg.serving_batch_rows:
        reps = cfg.serving_batch_rows // max(len(batch), 1) + 1
        batch = pd.concat([batch] * reps).iloc[: cfg.serving_batch_rows]
    timing = paired_timing(
        inp.candidate,
        inp.champion,
        rows_src,
        batch,
        cfg.serving_single_calls,
        cfg.serving_batch_calls,
    )
    ok, rows, numbers, design_rates = judge_timing(timing, cfg)
    size = artifact_size_bytes(inp.candidate_uri, inp.tracking_uri) if inp.candidate_uri else None
    csize = (
        artifact_size_bytes(inp.champion_uri, inp.champion_tracking_uri)
        if inp.champion_uri
        else None
    )
    rows.append({"measure": "artifact size (bytes)", "value": size, "champion": csize})
    if size is not None:
        numbers["artifact_bytes"] = float(size)
    summary = f"p99 {numbers['p99_ms']:.2f} ms, {numbers['rows_per_s']:,.0f} rows/s"
    if "single_ratio" in numbers:
        summary += (
            f"; {numbers['single_ratio']:.2f}x the champion's single-row time "
            f"(lower bound {numbers['single_ratio_lower']:.2f}x), "
            f"{numbers['batch_ratio']:.2f}x its batch time"
        )
    failed = [str(r["measure"]) for r in rows if r.get("passed") is False]
    if failed:
        summary += "; over budget: " + ", ".join(failed)
    absolute = []
    if cfg.serving_p99_ms is not None:
        absolute.append(f"p99 <= {cfg.serving_p99_ms} ms")
    if cfg.serving_min_rows_per_s is not None:
        absolute.append(f">= {cfg.serving_min_rows_per_s:g} rows/s")
    rule = (
        f"median candidate/champion time ratio of paired, interleaved calls (single-row and "
        f"batch): fails only when its one-sided {1 - cfg.alpha:.0%} lower bound is above "
        f"{cfg.serving_max_ratio}x"
        + (f"; absolute: {', '.join(absolute)}" if absolute else "; no absolute ceiling set")
    )
    return GateResult(
        name="serving_budget",
        passed=ok,
        summary=summary,
        rows=rows,
        rule=rule,
        numbers=numbers,
        run_url=inp.run_url,
        design=design_rates,
    )
