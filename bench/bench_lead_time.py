"""Lead time: a 20,000-row file lands -> the new version answers on the model server.

Measured in one run, both from cold processes:

* **bare script**: one Python process that does the same compute with the same
  library calls, with no Dagster, no sensor and no rollout: read, data check,
  train, evaluate (every model gate, as the pipeline does), register in MLflow,
  load the registered model and answer one row.
* **mlcicd**: a running model server; the file lands in the landing zone; ``mlcicd
  cycle`` (a cold CLI process, as cron would start it) evaluates the sensors and
  runs the ingest job in process (``in_process_executor``, the local environment's
  choice); the server picks up the blue-green switch. The clock stops when
  ``/invocations`` answers with the new ``X-Model-Version``.

Goal: mlcicd <= 1.5x the bare script.

    .venv/bin/python -m bench.bench_lead_time
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
ROWS = 20_000
GOAL = 1.5

BARE = r"""
import sys, time
t0 = time.perf_counter()
from pathlib import Path
import pandas as pd
from assets.credit_default import SPEC
from mlcicd_dagster.data.readers import read_batch
from mlcicd_dagster.data.suite import load_suite
from mlcicd_dagster.data.validate import validate_batch
from mlcicd_dagster.models.trainers import make_trainer
from mlcicd_dagster.models.loading import log_and_register, load_predictor
from mlcicd_dagster.models.gates import run_all_gates
from mlcicd_dagster.models.config import load_gate_config
from mlcicd_dagster.pipeline.model_gate import holdout_mask
path, uri = sys.argv[1], sys.argv[2]
df = read_batch(Path(path))
report = validate_batch(df, load_suite(SPEC.suite_path))
assert report.passed, report.summary()
mask = holdout_mask(df, SPEC)
train, holdout = df[~mask], df[mask]
feats = list(SPEC.features)
trainer = make_trainer(SPEC.trainer, SPEC.trainer_params)
trained = trainer.fit(train[feats], train[SPEC.label].to_numpy())
reg = log_and_register(trained.model, model_name="bare", X_example=train[feats].head(8),
                       tracking_uri=uri, feature_names=feats)
results = run_all_gates(trained.predictor, None, holdout=holdout,
                        golden=pd.read_csv(SPEC.golden_path),
                        config=load_gate_config(SPEC.gates_path), candidate_uri=reg.model_uri,
                        tracking_uri=uri)
assert all(r.passed for r in results), [r.summary for r in results if not r.passed]
p = load_predictor(reg.model_uri, tracking_uri=uri).predict_proba(holdout[feats].head(1))
print("BARE_SECONDS", time.perf_counter() - t0)
"""


def batch() -> pd.DataFrame:
    pool = pd.read_csv(DATA / "pool.csv.gz")
    extra = pool.sample(n=ROWS - len(pool), random_state=1).copy()
    extra["ID"] = pool["ID"].max() + 1 + pd.RangeIndex(len(extra))
    return pd.concat([pool, extra], ignore_index=True)


def bare(path: Path, work: Path) -> float:
    uri = f"sqlite:///{work / 'bare.db'}"
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", BARE, str(path), uri],
        cwd=work,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    assert "BARE_SECONDS" in out.stdout, out.stdout + out.stderr
    return wall


def mlcicd(df: pd.DataFrame, work: Path) -> tuple[float, dict]:
    import httpx

    from mlcicd_dagster.demo.landing import land_frame
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.serving import start_subprocess

    home = Home(work / "home").ensure("credit_default")
    env = {
        **os.environ,
        "MLCICD_HOME": str(home.root),
        "MLCICD_LANDING_SETTLE_SECONDS": "0",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    server, url = start_subprocess(home, "credit_default", port=0, env=env)
    try:
        row = df.drop(columns=["default.payment.next.month"]).head(1)
        body = {"dataframe_split": {"columns": list(row.columns), "data": row.values.tolist()}}
        t0 = time.perf_counter()
        land_frame(home.landing("credit_default"), "2005-09_statements.csv", df)
        cycle = subprocess.run(
            [str(Path(sys.executable).with_name("mlcicd")), "cycle", "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        report = json.loads(cycle.stdout[cycle.stdout.index("{") :])
        t_cycle = time.perf_counter() - t0
        with httpx.Client(timeout=5) as client:
            while time.perf_counter() - t0 < 600:
                r = client.post(f"{url}/invocations", json=body)
                if r.status_code == 200 and r.headers.get("X-Model-Version") == "1":
                    break
                time.sleep(0.05)
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    return wall, {
        "cycle_seconds": t_cycle,
        "runs": report.get("runs", []),
        "steps": _step_seconds(home, report.get("runs", [])),
    }


def _step_seconds(home, runs: list[dict]) -> dict[str, float]:
    """Step durations of the ingest run, from the Dagster instance's own records."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    ingest = [r["run_id"] for r in runs if r["job"] == "credit_default_ingest"]
    if not ingest:
        return {}
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home.dagster_home)))
    try:
        stats = instance.get_run_step_stats(ingest[0])
        return {s.step_key: (s.end_time or 0) - (s.start_time or 0) for s in stats}
    finally:
        instance.dispose()


def main() -> int:
    df = batch()
    with tempfile.TemporaryDirectory(prefix="bench-lead-") as tmp:
        work = Path(tmp)
        path = work / "batch.csv"
        df.to_csv(path, index=False)
        t_bare = bare(path, work)
        t_ml, info = mlcicd(df, work)
    ratio = t_ml / t_bare
    verdict = "PASS" if ratio <= GOAL else "FAIL"
    steps = ", ".join(f"{r['job']} {r['outcome']} {r['seconds']:.1f}s" for r in info["runs"])
    st = info["steps"]
    t_model = st.get("credit_default__model", float("nan"))
    t_gates = st.get("credit_default__model_gates", float("nan"))
    body = "\n".join(
        [
            "Command: `.venv/bin/python -m bench.bench_lead_time`",
            "",
            f"A {len(df):,}-row CSV lands; first model (blue-green). Both sides cold processes.",
            "",
            "| path | seconds |",
            "|---|---|",
            f"| bare script (read, check, train, gates, register, load, answer) | {t_bare:.1f} |",
            f"| mlcicd: landing -> `mlcicd cycle` -> server answers new version | {t_ml:.1f} |",
            f"| of which the `mlcicd cycle` process | {info['cycle_seconds']:.1f} |",
            "",
            f"Ratio: **{ratio:.2f}x** (goal <= {GOAL}x): **{verdict}**. Runs: {steps}.",
            "",
            "Inside that run (Dagster's step timings): training step "
            f"`credit_default__model` {t_model:.1f} s, all five gates "
            f"`credit_default__model_gates` {t_gates:.1f} s: gates / training = "
            f"**{t_gates / t_model:.2f}** (the infra-validation worker was started at "
            "the run's first step).",
        ]
    )
    print(body)
    write_section("Lead time: landed file to new version serving", body)
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
