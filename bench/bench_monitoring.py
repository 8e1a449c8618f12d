"""Monitoring over N logged predictions with labels: join, metrics with intervals, drift.

Synthetic prediction and feedback logs in the documented schema (``part-*.parquet``,
100k rows per part, 14 numeric and 9 categorical features like credit_default),
every prediction labelled, 1% of labels sent twice. Measured per size:

* ``compute_window`` end to end (DuckDB join, per-version AUC/log-loss/accuracy
  with intervals, label coverage and delay, drift of all 23 features against a
  20,000-row reference with the data gate's statistics, prediction drift);
* baseline, same files, same run: DuckDB reading the same prediction and
  feedback columns into Arrow (the I/O floor of any join), and a plain
  ``count(*)`` scan.

Goal: <= 2 s at 1,000,000 rows, cost linear in rows (per-row cost at 5M within
1.5x of 1M). Run: ``.venv/bin/python -m bench.bench_monitoring [--sizes 100000,1000000,5000000]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench._report import write_section
from mlcicd_dagster.monitoring import MonitorConfig, compute_window
from mlcicd_dagster.monitoring.drift import prediction_reference, reference_profile
from mlcicd_dagster.monitoring.logs import write_feedback_part, write_prediction_part
from mlcicd_dagster.platform.home import Home

NUMERIC = [
    "LIMIT_BAL",
    "AGE",
    *[f"BILL_AMT{i}" for i in range(1, 7)],
    *[f"PAY_AMT{i}" for i in range(1, 7)],
]
CATEGORICAL = ["SEX", "EDUCATION", "MARRIAGE", "PAY_0", *[f"PAY_{i}" for i in range(2, 7)]]
PART_ROWS = 100_000
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
MODEL = "bench"
GOAL_S = 2.0
REPS = 5


def _features(n: int, rng: np.random.Generator) -> pd.DataFrame:
    cols: dict[str, np.ndarray] = {}
    cols["LIMIT_BAL"] = np.round(rng.lognormal(11.7, 0.8, n), -4)
    cols["AGE"] = rng.integers(21, 75, n).astype(np.float64)
    for i in range(1, 7):
        cols[f"BILL_AMT{i}"] = np.round(rng.lognormal(9.5, 1.5, n) - 2000, 0)
        cols[f"PAY_AMT{i}"] = np.round(rng.lognormal(7.5, 1.4, n), 0)
    cols["SEX"] = rng.integers(1, 3, n)
    cols["EDUCATION"] = rng.choice([1, 2, 3, 4], n, p=[0.35, 0.47, 0.16, 0.02])
    cols["MARRIAGE"] = rng.choice([1, 2, 3], n, p=[0.45, 0.53, 0.02])
    for c in ["PAY_0", *[f"PAY_{i}" for i in range(2, 7)]]:
        cols[c] = rng.choice([-2, -1, 0, 1, 2], n, p=[0.1, 0.2, 0.55, 0.1, 0.05])
    return pd.DataFrame(cols)


def _write_logs(home: Home, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    span = dt.timedelta(minutes=59)
    for k, lo in enumerate(range(0, n, PART_ROWS)):
        m = min(PART_ROWS, n - lo)
        feats = _features(m, rng)
        y = (rng.random(m) < 0.22).astype(np.float64)
        score = 1 / (1 + np.exp(-(rng.normal(size=m) + 1.5 * y - 1.8)))
        ids = np.char.add(f"b{k}-", np.arange(m).astype(str))
        offs = pd.to_timedelta(np.sort(rng.random(m)) * span.total_seconds(), unit="s")
        ts = pd.Timestamp(T0) + offs
        pred = pd.DataFrame(
            {
                "request_id": ids,
                "ts": ts,
                "model_version": np.where(rng.random(m) < 0.9, "7", "8"),
                "track": "stable",
                "prediction": score,
            }
        )
        pred.loc[pred["model_version"] == "8", "track"] = "canary"
        write_prediction_part(home.predictions(MODEL), pd.concat([pred, feats], axis=1))
        dup = rng.random(m) < 0.01
        fb = pd.DataFrame(
            {
                "request_id": np.concatenate([ids, ids[dup]]),
                "label": np.concatenate([y, y[dup]]),
                "ts": np.concatenate([ts, ts[dup]]) + pd.Timedelta(minutes=30),
            }
        )
        write_feedback_part(home.feedback(MODEL), fb)


def _baseline_fns(home: Home, features: list[str]):
    import duckdb

    pred = str(home.predictions(MODEL) / "part-*.parquet")
    fb = str(home.feedback(MODEL) / "part-*.parquet")
    base = ["request_id", "ts", "model_version", "track", "prediction", *features]
    cols = ", ".join(f'"{c}"' for c in base)

    def read() -> None:
        with duckdb.connect() as con:
            con.sql(f"SELECT {cols} FROM read_parquet('{pred}')").to_arrow_table()
            con.sql(f"SELECT request_id, label, ts FROM read_parquet('{fb}')").to_arrow_table()

    def count() -> None:
        with duckdb.connect() as con:
            con.sql(f"SELECT count(*) FROM read_parquet('{pred}')").fetchall()
            con.sql(f"SELECT count(*) FROM read_parquet('{fb}')").fetchall()

    return read, count


def _timed(fn) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(sizes: list[int], all_rows_at: int | None = 1_000_000) -> str:
    rng = np.random.default_rng(42)
    reference = reference_profile(_features(20_000, rng), numeric=NUMERIC, categorical=CATEGORICAL)
    ref_preds = prediction_reference(1 / (1 + np.exp(-(rng.normal(size=20_000) - 1.4))))
    rows = []
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
        try:
            home = Home(tmp)
            _write_logs(home, n)
            read, count = _baseline_fns(home, [*NUMERIC, *CATEGORICAL])

            def monitor(home=home, cfg=MonitorConfig()) -> None:
                compute_window(
                    home,
                    MODEL,
                    T0,
                    T0 + dt.timedelta(hours=1),
                    reference=reference,
                    numeric=NUMERIC,
                    categorical=CATEGORICAL,
                    reference_predictions=ref_preds,
                    baseline={"7": {"auc": 0.8}},
                    as_of=T0 + dt.timedelta(hours=3),
                    config=cfg,
                )

            monitor()  # warm the page cache and imports once
            times: dict[str, list[float]] = {"mon": [], "read": [], "count": [], "all": []}
            for _ in range(REPS):  # interleaved, so a busy moment hits all of them alike
                times["read"].append(_timed(read))
                times["count"].append(_timed(count))
                times["mon"].append(_timed(monitor))
                if n == all_rows_at:
                    times["all"].append(
                        _timed(lambda: monitor(cfg=MonitorConfig(max_drift_rows=None)))
                    )
            mon_s, read_s, count_s = min(times["mon"]), min(times["read"]), min(times["count"])
            all_s = min(times["all"]) if times["all"] else None
            rows.append((n, mon_s, read_s, count_s, all_s))
            print(
                f"{n:>9,} rows: monitoring {mon_s:.3f} s, read-to-Arrow {read_s:.3f} s "
                f"({mon_s / read_s:.1f}x), count(*) {count_s:.3f} s"
                + (f", drift on every row {all_s:.3f} s" if all_s else ""),
                flush=True,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _report(rows)


def _report(rows: list[tuple[int, float, float, float, float | None]]) -> str:
    lines = [
        "Command: `.venv/bin/python -m bench.bench_monitoring`",
        "",
        "One hourly window, every prediction labelled (1% of labels sent twice), 23 features "
        "(14 numeric, 9 categorical) against a 20,000-row reference profile, prediction drift, "
        f"two model versions; best of {REPS}, interleaved with the baselines. Baselines from the "
        "same files in the same run: DuckDB reading the same prediction and feedback columns "
        "into Arrow (the I/O floor of any join), and `count(*)`. Drift runs on a sample "
        "of about 200,000 served rows (kept by a hash of the request id; "
        "`MonitorConfig.max_drift_rows`, see docs/monitoring.md); the last column is the "
        "same with drift on every row.",
        "",
        "| rows | monitoring s | read to Arrow s | ratio | count(*) s | us per row | "
        "drift on every row s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, mon, read, count, all_s in rows:
        lines.append(
            f"| {n:,} | {mon:.3f} | {read:.3f} | {mon / read:.1f}x | {count:.3f} | "
            f"{mon / n * 1e6:.2f} | {f'{all_s:.3f}' if all_s else '-'} |"
        )
    by_n = {r[0]: r[1] for r in rows}
    verdicts = []
    if 1_000_000 in by_n:
        ok = by_n[1_000_000] <= GOAL_S
        verdicts.append(
            f"1,000,000 rows in {by_n[1_000_000]:.2f} s (goal <= {GOAL_S} s): "
            f"**{'PASS' if ok else 'FAIL'}**."
        )
    big_ns = [n for n in by_n if n >= 1_000_000]
    if len(big_ns) >= 2:
        small, big = min(big_ns), max(big_ns)
        growth = (by_n[big] / big) / (by_n[small] / small)
        verdicts.append(
            f"Per-row cost at {big:,} vs {small:,} rows: {growth:.2f}x (linear or better: "
            f"<= 1.5x): **{'PASS' if growth <= 1.5 else 'FAIL'}**."
        )
    load = os.getloadavg()[0]
    lines += ["", *verdicts, f"Load average during the run: {load:.1f} on {os.cpu_count()} cores."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000,5000000")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args()
    body = run([int(s) for s in args.sizes.split(",")])
    print(body)
    if not args.no_write:
        write_section("bench_monitoring", body)


if __name__ == "__main__":
    main()
