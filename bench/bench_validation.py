"""Full credit_default suite on a 1,000,000-row batch vs a plain numpy implementation.

Run: ``.venv/bin/python -m bench.bench_validation [--rows N] [--no-ge] [--no-write]``

Measured in one run, on the same in-memory batch (rows resampled from the real
pool, unique IDs):
* ``validate_batch(df, suite)`` (engine ``auto``: fast pass, GE on failures), clean batch;
* a plain numpy implementation of the same checks (the floor): per expectation a
  boolean mask and a count, ``np.isin`` for sets, ``np.unique`` for uniqueness;
* the same on a batch with 100 absurd AGE values (fast pass + GE details on the
  failing expectations, over the full batch);
* GE alone on the whole suite (``result_format=BOOLEAN_ONLY``), once, for context;
* peak memory (tracemalloc) of ``validate_batch`` / the batch's in-memory size.
Goals (issue 3): <= 1.5 s wall and <= 15x numpy on the clean batch; peak memory <= 3x.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from bench._report import write_section
from mlcicd_dagster.data.suite import Suite, load_suite
from mlcicd_dagster.data.validate import validate_batch

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "assets" / "credit_default" / "expectations.yaml"
POOL = ROOT / "assets" / "credit_default" / "data" / "pool.csv.gz"
REPEATS = 5


def make_batch(rows: int, seed: int = 0) -> pd.DataFrame:
    pool = pd.read_csv(POOL)
    idx = np.random.default_rng(seed).integers(0, len(pool), rows)
    df = pool.iloc[idx].reset_index(drop=True)
    df["ID"] = np.arange(1, rows + 1, dtype=np.int64)
    return df.copy()  # one consolidated block per dtype, as read_batch returns


def numpy_floor(df: pd.DataFrame, suite: Suite) -> bool:
    """A plain numpy implementation of the same checks (what a hand-written gate costs)."""
    ok = True
    cols = set(df.columns)
    for spec in suite.expectations:
        kw = spec.kwargs
        t = spec.type
        if t == "expect_table_columns_to_match_set":
            want = set(kw["column_set"])
            ok &= want <= cols and (not kw.get("exact_match", True) or want == cols)
            continue
        if t == "expect_table_row_count_to_be_between":
            n = len(df)
            ok &= (kw.get("min_value") is None or n >= kw["min_value"]) and (
                kw.get("max_value") is None or n <= kw["max_value"]
            )
            continue
        v = df[kw["column"]].to_numpy()
        if t == "expect_column_values_to_be_in_type_list":
            ok &= v.dtype.name in kw["type_list"]
        elif t == "expect_column_values_to_not_be_null":
            ok &= not (v.dtype.kind == "f" and np.isnan(v).any())
        elif t == "expect_column_values_to_be_between":
            bad = np.zeros(v.size, dtype=bool)
            if kw.get("min_value") is not None:
                bad |= v <= kw["min_value"] if kw.get("strict_min") else v < kw["min_value"]
            if kw.get("max_value") is not None:
                bad |= v >= kw["max_value"] if kw.get("strict_max") else v > kw["max_value"]
            ok &= int(bad.sum()) == 0
        elif t == "expect_column_values_to_be_in_set":
            ok &= bool(np.isin(v, kw["value_set"]).all())
        elif t == "expect_column_values_to_be_unique":
            ok &= np.unique(v).size == v.size
        elif t == "expect_column_mean_to_be_between":
            m = float(np.mean(v))
            ok &= kw["min_value"] <= m <= kw["max_value"]
        else:  # pragma: no cover - the shipped suite has only the types above
            raise ValueError(t)
    return bool(ok)


def _median_time(fn, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_ratio(fn, df: pd.DataFrame) -> float:
    size = int(df.memory_usage(deep=True, index=True).sum())
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # "peak memory" = the batch itself + what validating it allocates on top.
    return (size + (peak - base)) / size


def run(rows: int, with_ge: bool) -> tuple[str, bool]:
    suite = load_suite(SUITE)
    df = make_batch(rows)
    mb = df.memory_usage(deep=True).sum() / 2**20
    assert numpy_floor(df, suite) and validate_batch(df, suite).passed

    t_numpy = _median_time(lambda: numpy_floor(df, suite))
    t_fast = _median_time(lambda: validate_batch(df, suite))
    mem_clean = _peak_ratio(lambda: validate_batch(df, suite), df)

    bad = df.copy()
    bad.loc[np.random.default_rng(1).choice(rows, 100, replace=False), "AGE"] = 500
    validate_batch(bad.head(1000), suite)  # import GE once, outside the timing
    report = validate_batch(bad, suite)
    assert not report.passed and not report.disagreements
    t_bad = _median_time(lambda: validate_batch(bad, suite), repeats=3)
    mem_bad = _peak_ratio(lambda: validate_batch(bad, suite), bad)

    t_ge = None
    if with_ge:
        from mlcicd_dagster.data.validate import run_gx

        t0 = time.perf_counter()
        rows_ge = run_gx(df, suite, suite.expectations, result_format="BOOLEAN_ONLY")
        t_ge = time.perf_counter() - t0
        assert all(r.success for r in rows_ge.values())

    ratio = t_fast / t_numpy
    ok = t_fast <= 1.5 and ratio <= 15 and mem_clean <= 3 and mem_bad <= 3
    lines = [
        "Command: `.venv/bin/python -m bench.bench_validation`",
        "",
        f"Batch: {rows:,} rows x {df.shape[1]} columns ({mb:.0f} MiB in memory), rows resampled "
        f"from the real pool; suite: assets/credit_default/expectations.yaml "
        f"({len(suite.expectations)} expectations). Median of {REPEATS} runs.",
        "",
        "| measure | seconds | / numpy floor |",
        "|---|---|---|",
        f"| plain numpy implementation of the same checks (baseline) | {t_numpy:.3f} | 1.00x |",
        f"| `validate_batch`, clean batch (fast pass; GE not needed) | {t_fast:.3f} | "
        f"{ratio:.2f}x |",
        f"| `validate_batch`, 100 absurd AGE values (fast pass + GE details on the "
        f"{len(report.gx_checked)} failing expectations, full batch) | {t_bad:.3f} | "
        f"{t_bad / t_numpy:.1f}x |",
    ]
    if t_ge is not None:
        lines.append(
            f"| GE alone, whole suite, BOOLEAN_ONLY (context only, 1 run) | {t_ge:.2f} | "
            f"{t_ge / t_numpy:.1f}x |"
        )
    lines += [
        "",
        f"Peak memory (batch + tracemalloc peak of validation) / batch size: clean "
        f"**{mem_clean:.2f}x**, failing **{mem_bad:.2f}x** (goal <= 3x).",
        "",
        f"Goals: clean batch <= 1.5 s wall (**{t_fast:.3f} s**) and <= 15x numpy "
        f"(**{ratio:.2f}x**); peak memory <= 3x: **{'PASS' if ok else 'FAIL'}**.",
        "",
        "What runs where: the fast pass evaluates every expectation of the suite with GE's "
        "semantics (nulls excluded, `mostly`, strict bounds) using min/max reductions and "
        "`bincount`; Great Expectations (1.x, ephemeral context, ValidationDefinition) runs "
        "on the full batch for every expectation that failed (its result is the one "
        "reported) and for any type the fast pass lacks. tests/data/test_suite_engine.py "
        "checks fast vs GE agreement on every bad-input case.",
    ]
    return "\n".join(lines), ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--no-ge", action="store_true", help="skip the GE-alone context run")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    body, ok = run(args.rows, not args.no_ge)
    print(body)
    if not args.no_write:
        write_section("bench_validation", body)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
