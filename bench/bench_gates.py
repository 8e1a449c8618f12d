"""All model gates together vs training the candidate they judge, inside real runs.

Goal (issue 4): the gates take no longer than training, ratio <= 1.

Measured where it matters: the shipped pipeline's ingest job on a real Dagster instance
and MLflow store, each run landing a new batch so that the model retrains and is judged
against the champion. The ratio is Dagster's own step timings,
``credit_default__model_gates`` / ``credit_default__model``, of the same run. The rollout
step is left out of the runs (it waits for live traffic; it is not what is compared).

Two ways runs execute in the local environment, both measured:

* **fresh process per run** (``mlcicd cycle`` from cron, runs launched by the Dagster
  daemon): every run pays its imports; the infra-validation worker starts at the
  run's first step;
* **one long-lived process** running run after run (``mlcicd cycle`` with several
  landed files, the demo): imports are paid once, training is at its fastest, and the
  infra-validation worker stays from one run to the next.

    .venv/bin/python -m bench.bench_gates [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from bench._report import write_section

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "assets" / "credit_default" / "data"
JOB = "credit_default_ingest"
SELECTION = ["raw_batch", "validated_batch", "training_set", "model"]
FIRST_ROWS = 8000  # the champion's batch
BATCH_ROWS = 1500  # each measured run adds this many rows to the training set
GOAL = 1.0

RUN_ONE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from bench.bench_gates import run_ingest
print("RUN_ID", run_ingest(sys.argv[2]))
"""


def run_ingest(partition_key: str) -> str:
    """One ingest run (without the rollout) for a landed file, in this process."""
    import dagster as dg

    from mlcicd_dagster.cli import dagster_instance, load_code_location

    defs = load_code_location().defs
    instance = dagster_instance()
    instance.add_dynamic_partitions("credit_default_batches", [partition_key])
    result = defs.resolve_job_def(JOB).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        asset_selection=[dg.AssetKey(["credit_default", a]) for a in SELECTION],
        run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        raise_on_error=False,
        tags={"mlcicd/via": "bench_gates"},
    )
    return result.run_id


def step_seconds(run_id: str) -> dict[str, Any]:
    """Step durations of a run, the infra gate's own timing and whether all gates passed."""
    import dagster as dg

    from mlcicd_dagster.cli import dagster_instance

    instance = dagster_instance()
    out = {
        s.step_key: (s.end_time or 0) - (s.start_time or 0)
        for s in instance.get_run_step_stats(run_id)
    }
    model = dg.AssetKey(["credit_default", "model"])
    evaluations = [
        e.event_log_entry.dagster_event.event_specific_data
        for e in instance.get_records_for_run(run_id).records
        if e.event_log_entry.dagster_event is not None
        and e.event_log_entry.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    gates = [d for d in evaluations if d.asset_key == model]
    out["gates_passed"] = float(bool(gates) and all(d.passed for d in gates))
    out["failed"] = [d.check_name for d in gates if not d.passed]  # type: ignore[assignment]
    for d in gates:
        if d.check_name == "infra_validation" and "fresh_process_s" in d.metadata:
            out["infra_fresh_process_s"] = float(d.metadata["fresh_process_s"].value)
    return out


def land(home, name: str, frame: pd.DataFrame) -> str:
    from mlcicd_dagster.demo.landing import land_frame

    land_frame(home.landing("credit_default"), name, frame)
    return name


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3, help="measured runs per mode")
    args = parser.parse_args()
    pool = pd.read_csv(DATA / "pool.csv.gz")
    if FIRST_ROWS + 2 * args.runs * BATCH_ROWS > len(pool):
        raise SystemExit(f"--runs {args.runs} needs more rows than the pool has")
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp:
        os.environ["MLCICD_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ["MLCICD_LANDING_SETTLE_SECONDS"] = "0"
        from mlcicd_dagster.platform.home import Home

        home = Home.from_env().ensure("credit_default")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # The champion: the first batch through the whole loop (blue-green, no traffic).
        land(home, "b00.csv", pool.iloc[:FIRST_ROWS])
        subprocess.run(
            [str(Path(sys.executable).with_name("mlcicd")), "cycle", "--json"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        chunks = [
            pool.iloc[FIRST_ROWS + i * BATCH_ROWS : FIRST_ROWS + (i + 1) * BATCH_ROWS]
            for i in range(2 * args.runs)
        ]
        rows: list[tuple[str, dict[str, Any]]] = []
        for i in range(args.runs):  # a fresh process per run
            key = land(home, f"b{i + 1:02d}.csv", chunks[i])
            out = subprocess.run(
                [sys.executable, "-c", RUN_ONE, str(ROOT), key],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            run_id = out.split("RUN_ID", 1)[1].split()[0]
            rows.append(("fresh process", step_seconds(run_id)))
        os.chdir(ROOT)
        sys.path.insert(0, str(ROOT))
        for i in range(args.runs, 2 * args.runs):  # one long-lived process
            key = land(home, f"b{i + 1:02d}.csv", chunks[i])
            rows.append(("long-lived process", step_seconds(run_ingest(key))))
    return report(rows, args.runs)


def report(rows: list[tuple[str, dict[str, Any]]], runs: int) -> int:
    table = []
    ratios: dict[str, list[float]] = {}
    for n, (mode, st) in enumerate(rows, 1):
        t_model = st["credit_default__model"]
        t_gates = st["credit_default__model_gates"]
        ratio = t_gates / t_model
        ratios.setdefault(mode, []).append(ratio)
        table.append(
            f"| {n} | {mode} | {t_model:.2f} | {t_gates:.2f} | "
            f"{st.get('infra_fresh_process_s', float('nan')):.2f} | "
            f"{'PASS' if st.get('gates_passed') else 'FAIL: ' + ', '.join(st['failed'])} | "
            f"{ratio:.2f} |"
        )
    worst = max(r for rs in ratios.values() for r in rs)
    verdict = "PASS" if worst <= GOAL else "FAIL"
    medians = ", ".join(f"{m} {statistics.median(r):.2f}" for m, r in ratios.items())
    body = "\n".join(
        [
            f"Command: `.venv/bin/python -m bench.bench_gates --runs {runs}`",
            "",
            "The shipped pipeline's ingest job (without the rollout) on a real Dagster instance "
            f"and MLflow store; the champion trained on {FIRST_ROWS:,} rows, each measured run "
            f"lands {BATCH_ROWS:,} more, retrains (HistGradientBoosting, 100 trees) and is "
            "judged by all five gates against the champion. Seconds are Dagster's step "
            "timings of the same run: training step `credit_default__model` (fit, evaluate, "
            "curves, log, register) and the gates step `credit_default__model_gates` (load "
            "both models, five gates, tags, model card). `infra s`: submit to answer of the "
            "fresh-process load, which overlaps the other gates.",
            "",
            "| run | process | training s | all gates s | infra s | gates | gates / training |",
            "|---|---|---|---|---|---|---|",
            *table,
            "",
            f"Median ratio: {medians}. Worst run: **{worst:.2f}** (goal <= {GOAL}): **{verdict}**.",
            "",
            "A fresh run process spends most of its training step importing (mlflow, "
            "scikit-learn, skops, matplotlib); the long-lived rows are the hard case: "
            "training at its fastest, the gates' fixed costs (two model loads, 2 x 200 "
            "timed single-row calls of the serving budget, tags and card) unchanged. "
            "How the gates got there: docs/models.md, 'How the gates stay no slower than "
            "training'.",
        ]
        + (
            [
                "",
                "`FAIL: <gate>` is the gates' verdict on that candidate (here the behavioral "
                "SEX-swap invariance: mean |change| of the score just above its 0.02 limit "
                "on some retrains), not a timing failure: a rejected candidate is judged by "
                "all five gates all the same.",
            ]
            if any(not st.get("gates_passed") for _, st in rows)
            else []
        )
    )
    print(body)
    write_section("bench_gates", body)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
