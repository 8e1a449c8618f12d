"""Coalesced training: a burst of 20 batches reaches serving in at most 2x one batch's time.

Measured in one run, each scenario on a fresh home with a running model server
and a cold ``mlcicd cycle`` process (as cron starts it); the clock runs from the
landing of the file(s) until ``/invocations`` answers with the new version:

* **one batch, same data**: the burst's 20,000 rows as one file (the baseline:
  same training, one data gate);
* **burst**: 20 files of 1,000 rows landed at once: 20 data gates, one training,
  one rollout;
* **one small batch**: one file of 1,000 rows (for reference: less to train on).

Goal: burst <= 2x one batch of the same data. Without coalescing the burst costs
20 trainings and 20 rollouts in series; the table shows that estimate too.

    .venv/bin/python -m bench.bench_burst
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench._report import write_section

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "assets" / "credit_default" / "data"
LABEL = "default.payment.next.month"
BATCHES = 20
ROWS_PER_BATCH = 1_000
GOAL = 2.0


def rows() -> pd.DataFrame:
    pool = pd.read_csv(DATA / "pool.csv.gz")
    n = BATCHES * ROWS_PER_BATCH
    extra = pool.sample(n=max(n - len(pool), 0), random_state=1).copy()
    extra["ID"] = pool["ID"].max() + 1 + pd.RangeIndex(len(extra))
    return pd.concat([pool, extra], ignore_index=True).sample(frac=1.0, random_state=2).head(n)


def scenario(files: dict[str, pd.DataFrame], work: Path) -> dict:
    """Land ``files`` at once on a fresh home; seconds until the server answers v1."""
    import httpx

    from mlcicd_dagster.demo.landing import land_frame
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.serving import start_subprocess

    home = Home(work / "home").ensure("credit_default")
    env = {**os.environ, "MLCICD_HOME": str(home.root), "MLCICD_LANDING_SETTLE_SECONDS": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    server, url = start_subprocess(home, "credit_default", port=0, env=env)
    try:
        row = next(iter(files.values())).drop(columns=[LABEL]).head(1)
        body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
        t0 = time.perf_counter()
        for name, df in files.items():
            land_frame(home.landing("credit_default"), name, df)
        cycle = subprocess.run(
            [str(Path(sys.executable).with_name("mlcicd")), "cycle", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        t_cycle = time.perf_counter() - t0
        report = json.loads(cycle.stdout[cycle.stdout.index("{") :])
        served = all(r["outcome"] == "success" for r in report.get("runs", []))
        wall = float("nan")  # a gate that said no (on a loaded machine: latency): never served
        with httpx.Client(timeout=5) as client:
            while served and time.perf_counter() - t0 < 900:
                r = client.post(f"{url}/invocations", json=body)
                if r.status_code == 200 and r.headers.get("X-Model-Version") == "1":
                    wall = time.perf_counter() - t0
                    break
                time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(timeout=30)
    runs = report.get("runs", [])
    jobs: dict[str, int] = {}
    seconds: dict[str, float] = {}
    for r in runs:
        jobs[r["job"]] = jobs.get(r["job"], 0) + 1
        seconds[r["job"]] = seconds.get(r["job"], 0.0) + float(r["seconds"])
    rejected = sorted({c for r in runs if r["outcome"] != "success" for c in r["failed_checks"]})
    errors = [r for r in runs if r["outcome"] == "error"]
    assert not errors, errors
    return {
        "wall": wall,
        "cycle": t_cycle,
        "jobs": jobs,
        "seconds": seconds,
        "rejected": rejected,
    }


def main() -> int:
    df = rows()
    parts = {
        f"2006-{i // 28 + 1:02d}-{i % 28 + 1:02d}_branch.csv": df.iloc[
            i * ROWS_PER_BATCH : (i + 1) * ROWS_PER_BATCH
        ]
        for i in range(BATCHES)
    }
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp:
        for name, files in (
            ("one", {"2006_all_branches.csv": df}),
            ("burst", parts),
            ("small", {"2006-01-01_branch.csv": next(iter(parts.values()))}),
        ):
            work = Path(tmp) / name
            work.mkdir()
            results[name] = scenario(files, work)
    one, burst, small = results["one"], results["burst"], results["small"]
    # To serving when every scenario served; else (a gate said no, e.g. a latency budget on a
    # loaded machine) to the end of the cycle: landing -> trained, gated, judged.
    clock = "wall" if all(r["wall"] == r["wall"] for r in (one, burst)) else "cycle"
    ratio = burst[clock] / one[clock]
    measured = (
        "to serving"
        if clock == "wall"
        else "the cycle: landing to a judged model, since a gate said no"
    )
    verdict = "PASS" if ratio <= GOAL else "FAIL"
    retrain = "credit_default_retrain"
    ingest = "credit_default_ingest"
    serial = BATCHES * small["seconds"].get(retrain, float("nan")) + burst["seconds"].get(
        ingest, 0.0
    )

    def runs(r: dict) -> str:
        return ", ".join(f"{n} x {j}" for j, n in sorted(r["jobs"].items()))

    body = "\n".join(
        [
            "Command: `.venv/bin/python -m bench.bench_burst`",
            "",
            f"Fresh home each, a running model server, a cold `mlcicd cycle`; clock from the "
            f"landing to `/invocations` answering v1 (blue-green). {BATCHES} files of "
            f"{ROWS_PER_BATCH:,} rows vs the same {BATCHES * ROWS_PER_BATCH:,} rows as one file.",
            "",
            "| scenario | to serving (s) | `mlcicd cycle` (s) | runs | gates said no |",
            "|---|---|---|---|---|",
            *(
                f"| {title} | {r['wall']:.1f} | {r['cycle']:.1f} | {runs(r)} | "
                f"{', '.join(r['rejected']) or '-'} |"
                for title, r in (
                    (f"one batch, {len(df):,} rows (baseline)", one),
                    (f"burst: {BATCHES} batches landed at once", burst),
                    (f"one batch, {ROWS_PER_BATCH:,} rows (reference)", small),
                )
            ),
            "",
            f"Burst / one batch of the same data ({measured}): **{ratio:.2f}x** "
            f"(goal <= {GOAL}x): **{verdict}**. Burst / one small batch: "
            + (
                f"{burst[clock] / small[clock]:.2f}x."
                if small[clock] == small[clock]
                else "n/a (its model was rejected: too few rows for the gates' floors)."
            ),
            "",
            f"Inside the burst's cycle: {burst['jobs'].get(ingest, 0)} data gates took "
            f"{burst['seconds'].get(ingest, 0.0):.1f} s in all, the one training run "
            f"{burst['seconds'].get(retrain, 0.0):.1f} s. Trained one batch at a time (the old "
            f"path: a training and a rollout per file) the burst would cost at least "
            f"{serial:.0f} s of training runs alone.",
        ]
    )
    print(body)
    write_section("Burst: 20 batches at once vs one batch", body)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
