"""Canary evidence from the logs: prediction log + feedback log -> ``analysis.Evidence``.

The server writes both logs as Parquet parts (schemas in docs/architecture.md);
DuckDB reads them in place. Canary and stable are compared over the same window
(rows since the rollout started), so both arms see the same traffic mix. Shadow
rows share their ``request_id`` with the served stable row, which turns shadow
comparisons into paired ones (much less noise per request).

Failed requests never reach the prediction log; a caller that knows them (the
target, from the server's metrics) passes ``error_counts``; without it the
error-rate guardrail simply has no data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout.state import DeploymentState

LATENCY_FLOOR_MS = 5.0
"""Latencies below this count as this much in the latency guardrail. The guardrail's
margin is relative (25% slower), and a 25% difference between two sub-millisecond
calls is cache noise no client can feel; below a few ms (well inside the 20 ms p99
budget) only a slowdown that lifts calls above the floor counts. Also keeps log() finite."""

ErrorCounts = Callable[[DeploymentState], dict[str, tuple[int, int]]]  # track -> (errors, n)


class EvidenceSource(Protocol):
    """What the canary loop asks after each interval: the evidence since ``since``."""

    def collect(self, state: DeploymentState, since: dt.datetime) -> an.Evidence: ...


def _glob(folder: Path) -> str | None:
    return str(folder / "part-*.parquet") if any(folder.glob("part-*.parquet")) else None


def _columns(con: Any, glob: str) -> set[str]:
    rows = con.execute(
        "DESCRIBE SELECT * FROM read_parquet(?, union_by_name=true)", [glob]
    ).fetchall()
    return {r[0] for r in rows}


def read_window(
    home: Home, model_name: str, since: dt.datetime, until: dt.datetime | None = None
) -> pd.DataFrame:
    """Prediction rows in [since, until) with their feedback label (NaN until it arrives).

    Columns: request_id, ts, model_version, track, latency_ms, prediction, probabilities
    (each class's probability for a multiclass model, else None), label (a number, or
    the text a client sent as the label, e.g. ``"setosa"``; the last feedback wins).
    """
    import duckdb

    preds = _glob(home.predictions(model_name))
    cols = ["request_id", "ts", "model_version", "track", "latency_ms", "prediction",
            "probabilities", "label"]  # fmt: skip
    if preds is None:
        return pd.DataFrame(columns=cols)
    feedback = _glob(home.feedback(model_name))
    until = until or dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    with duckdb.connect() as con:
        prob_sql = (
            "p.probabilities"
            if "probabilities" in _columns(con, preds)
            else "NULL::DOUBLE[] AS probabilities"
        )
        label_sql = "NULL::DOUBLE AS label, NULL::VARCHAR AS label_text"
        join_sql = ""
        if feedback is not None:
            text = "label_text" if "label_text" in _columns(con, feedback) else "NULL::VARCHAR"
            # Last label wins when a request got feedback twice.
            join_sql = (
                f"LEFT JOIN (SELECT request_id, label, {text} AS label_text "
                f"FROM read_parquet('{feedback}', union_by_name=true) "
                "QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY ts DESC) = 1) f "
                "USING (request_id)"
            )
            label_sql = "f.label AS label, f.label_text AS label_text"
        sql = (
            "SELECT p.request_id, p.ts, CAST(p.model_version AS VARCHAR) AS model_version, "
            f"p.track, p.latency_ms, p.prediction, {prob_sql}, {label_sql} "
            f"FROM read_parquet('{preds}', union_by_name=true) p {join_sql} "
            "WHERE p.ts >= ? AND p.ts < ?"
        )
        df = con.execute(sql, [since, until]).df()
    text = df.pop("label_text")
    if text.notna().any():  # a text label stands where its number is null
        df["label"] = df["label"].astype(object).where(text.isna(), text)
    return df[cols]


def _labels_for(task: Any, labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(mask of rows whose label fits the task, their encoded labels). Labels that do not
    fit (a class the task does not declare, a text regression label) are left out."""
    from mlcicd_dagster.models.tasks import make_task

    task = task if task is not None else make_task("binary")
    bad = task.check_labels(labels).bad
    ok = ~bad
    return ok, task.encode(labels[ok]) if ok.any() else np.empty(0)


def _probability_matrix(column: pd.Series, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of rows with k logged class probabilities, those rows as an (m, k) matrix)."""
    ok = np.fromiter(
        (v is not None and not (isinstance(v, float) and np.isnan(v)) and len(v) == k
         for v in column), bool, len(column),
    )  # fmt: skip
    if not ok.any():
        return ok, np.empty((0, k))
    return ok, np.vstack([np.asarray(v, dtype=np.float64) for v in column[ok]])


def request_losses(task: Any, rows: pd.DataFrame, suffix: str = "") -> tuple[str, np.ndarray]:
    """(metric name, per-request loss of each labeled row, NaN where it cannot be known).

    The task's ``request_loss`` (``models.tasks``): binary, the clipped log-loss of
    ``prediction`` (P(positive)); multiclass, the clipped log-loss of the true class from
    the logged ``probabilities``; regression, the absolute error. ``suffix`` picks the
    prediction columns of one arm of a paired frame (``_c``, ``_s``); the label column is
    ``label`` + (``_s`` if ``suffix`` else "").
    """
    from mlcicd_dagster.models.tasks import make_task

    task = task if task is not None else make_task("binary")
    labels = rows["label_s" if suffix else "label"]
    loss = np.full(len(rows), np.nan)
    ok, y = _labels_for(task, labels.reset_index(drop=True))
    if not ok.any():
        return task.request_loss_name, loss
    if task.name == "multiclass":
        has, probs = _probability_matrix(
            rows[f"probabilities{suffix}"].reset_index(drop=True)[ok], len(task.classes)
        )
        idx = np.flatnonzero(ok)[has]
        loss[idx] = task.request_loss(y[has], probs)
        return task.request_loss_name, loss
    pred = rows[f"prediction{suffix}"].to_numpy(float)[ok]
    if task.name == "binary":
        loss[ok] = an.log_loss_per_row(pred, y.astype(float))
    else:
        loss[ok] = task.request_loss(y, pred)
    return task.request_loss_name, loss


def _arm_moments(rows: pd.DataFrame, task: Any = None) -> dict[str, an.Moments]:
    out: dict[str, an.Moments] = {}
    if rows.empty:
        return out
    out["latency"] = an.Moments.of(
        np.log(np.maximum(rows["latency_ms"].to_numpy(float), LATENCY_FLOOR_MS))
    )
    out["prediction_shift"] = an.Moments.of(rows["prediction"].to_numpy(float))
    labeled = rows[rows["label"].notna()]
    if not labeled.empty:
        name, loss = request_losses(task, labeled)
        loss = loss[np.isfinite(loss)]
        if len(loss):
            out[name] = an.Moments.of(loss)
    return out


def _seconds(ts: pd.Series) -> np.ndarray:
    """Timestamps as float seconds (datetimes or numbers)."""
    if pd.api.types.is_numeric_dtype(ts):
        return ts.to_numpy(float)
    epoch = pd.Timestamp(0, tz="UTC")
    return (pd.to_datetime(ts, utc=True) - epoch).dt.total_seconds().to_numpy(float)


def _descriptive(c: pd.DataFrame, s: pd.DataFrame, task: Any = None) -> dict[str, Any]:
    d: dict[str, Any] = {"rows_canary": len(c), "rows_stable": len(s)}
    if len(c) and len(s):
        from scipy.stats import ks_2samp

        pc, ps = c["prediction"].to_numpy(float), s["prediction"].to_numpy(float)
        d["psi"] = an.population_stability_index(pc, ps)
        d["ks"] = float(ks_2samp(pc, ps).statistic)
        for name, rows in (("canary", c), ("stable", s)):
            lab = rows[rows["label"].notna()].reset_index(drop=True)
            d[f"labels_{name}"] = len(lab)
            if len(lab):
                d.update({f"{k}_{name}": v for k, v in _quality(task, lab).items()})
    return d


def _quality(task: Any, lab: pd.DataFrame) -> dict[str, float]:
    """Accuracy of a classifier (mean |error| of a regression) on labeled rows."""
    name = getattr(task, "name", "binary")
    ok, y = _labels_for(task, lab["label"])
    if not ok.any():
        return {}
    if name == "regression":
        return {"mae": float(np.mean(np.abs(lab["prediction"].to_numpy(float)[ok] - y)))}
    if name == "multiclass":
        has, probs = _probability_matrix(lab["probabilities"][ok], len(task.classes))
        if not has.any():
            return {}
        return {"accuracy": float(np.mean(task.point(probs) == y[has]))}
    pred = lab["prediction"].to_numpy(float)[ok] >= 0.5
    return {"accuracy": float(np.mean(pred == (y == 1)))}


def evidence_from_rows(
    rows: pd.DataFrame,
    state: DeploymentState,
    *,
    error_counts: dict[str, tuple[int, int]] | None = None,
    task: Any = None,
) -> an.Evidence:
    """Split logged rows into the canary (or shadow) and stable arms of ``state``."""
    if state.stable is None:
        return an.Evidence()
    stable_v = state.stable.version
    if state.canary is not None:
        cand_track, cand_v = "canary", state.canary.version
    elif state.shadow is not None:
        cand_track, cand_v = "shadow", state.shadow.version
    else:
        return an.Evidence()
    versions = rows["model_version"].astype(str)
    s = rows[(rows["track"] == "stable") & (versions == stable_v)]
    c = rows[(rows["track"] == cand_track) & (versions == cand_v)]
    canary, stable = _arm_moments(c, task), _arm_moments(s, task)
    paired: dict[str, an.Moments] = {}
    if cand_track == "canary" and len(c) and len(s):  # latency: time-matched pairs
        paired["latency"] = an.Moments.of(
            an.paired_latency_differences(
                _seconds(c["ts"]), c["latency_ms"].to_numpy(float),
                _seconds(s["ts"]), s["latency_ms"].to_numpy(float), LATENCY_FLOOR_MS,
            )
        )  # fmt: skip
    if cand_track == "shadow":
        both = c.merge(s, on="request_id", suffixes=("_c", "_s"))
        if not both.empty:
            paired["prediction_shift"] = an.Moments.of(
                both["prediction_c"].to_numpy(float) - both["prediction_s"].to_numpy(float)
            )
            lat_c = np.maximum(both["latency_ms_c"].to_numpy(float), LATENCY_FLOOR_MS)
            lat_s = np.maximum(both["latency_ms_s"].to_numpy(float), LATENCY_FLOOR_MS)
            paired["latency"] = an.Moments.of(np.log(lat_c) - np.log(lat_s))
            lab = both[both["label_s"].notna()]
            if not lab.empty:
                name, loss_c = request_losses(task, lab, "_c")
                _, loss_s = request_losses(task, lab, "_s")
                diff = loss_c - loss_s
                diff = diff[np.isfinite(diff)]
                if len(diff):
                    paired[name] = an.Moments.of(diff)
    if error_counts:
        for track, arm in ((cand_track, canary), ("stable", stable)):
            if track in error_counts:
                errors, n = error_counts[track]
                arm["error_rate"] = an.Moments.bernoulli(int(errors), int(n))
    return an.Evidence(
        canary=canary,
        stable=stable,
        paired=paired,
        descriptive=_descriptive(c, s, task),
        window={"stable_version": stable_v, "candidate_version": cand_v, "track": cand_track},
    )


@dataclass
class LogEvidenceSource:
    """Evidence from the prediction and feedback logs under ``home``."""

    home: Home
    model_name: str
    error_counts: ErrorCounts | None = None
    task: Any = None  # models.tasks.Task (None: binary)

    def collect(self, state: DeploymentState, since: dt.datetime) -> an.Evidence:
        rows = read_window(self.home, self.model_name, since)
        ev = evidence_from_rows(
            rows,
            state,
            error_counts=self.error_counts(state) if self.error_counts else None,
            task=self.task,
        )
        ev.window["since"] = since.isoformat()
        return ev
