"""A data file the project does not ship, onboarded by `mlcicd init`, runs the whole loop.

scikit-learn's breast-cancer data (bundled inside scikit-learn, no download) is written
as a CSV into a bare folder. As a user would, in fresh processes: `mlcicd init` makes
the folder a code location with `assets/cancer/`; two batches of the file's other rows
are landed and `mlcicd cycle` takes each through the data gate, training, the model
gates and the rollout, with no edit to anything `init` wrote; the model server answers
with the gated model. A broken batch is quarantined by the profiled suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

pytestmark = pytest.mark.slow
WORKTREE = Path(__file__).resolve().parents[2]
LABEL = "target"


def _mlcicd(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlcicd_dagster.cli", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _cycle(root: Path, env: dict[str, str]) -> dict:
    out = _mlcicd(root, env, "cycle", "--json")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.index("{") :])


def _runs(report: dict, job: str) -> list[dict]:
    return [r for r in report["runs"] if r["job"] == job]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from sklearn.datasets import load_breast_cancer

    root = tmp_path_factory.mktemp("userproject")
    frame = load_breast_cancer(as_frame=True).frame
    frame.insert(0, "patient", range(1000, 1000 + len(frame)))
    data = root / "cancer.csv"
    frame.to_csv(data, index=False)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(WORKTREE), os.environ.get("PYTHONPATH", "")) if p
        ),
        "MLCICD_HOME": str(root / ".mlcicd"),
        "MLCICD_LANDING_SETTLE_SECONDS": "0",
        # no traffic in this test: a canary would wait for evidence; let it give up soon
        "MLCICD_CANARY_MAX_DURATION_S": "20",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DAGSTER_HOME", None)
    out = _mlcicd(root, env, "init", "cancer", "--data", str(data), "--label", LABEL,
                  "--id", "patient")  # fmt: skip
    assert out.returncode == 0, out.stderr
    return {"root": root, "env": env, "init_out": out.stdout, "frame": frame}


def test_init_says_what_it_sized(project):
    out = project["init_out"]
    assert "task binary (inferred from the label)" in out
    assert "passes non-inferiority with probability >=" in out
    assert "is rejected with probability >= 0.95" in out
    assert (project["root"] / "assets" / "cancer" / "defs.yaml").exists()


def test_landed_batches_run_the_whole_loop(project):
    from mlcicd_dagster.demo.landing import land_frame
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.serving import start_subprocess

    root, env = project["root"], project["env"]
    folder = root / "assets" / "cancer"
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    rest = pd.read_csv(folder / "data" / "sample.csv.gz")
    golden = pd.read_csv(folder / "data" / "golden.csv.gz")
    home = Home(Path(env["MLCICD_HOME"]))
    landing = home.landing("cancer")
    assert landing == Path(env["MLCICD_HOME"]) / "landing" / "cancer"

    # batch 1: the first model, judged against the floors, goes live
    half = len(rest) // 2
    land_frame(landing, "batch-1.csv", rest.iloc[:half])
    report = _cycle(root, env)
    (run,) = _runs(report, "cancer_ingest")
    assert run["outcome"] == "success", run
    server, url = start_subprocess(home, "cancer", port=0, env=env)
    try:
        rows = golden.drop(columns=[LABEL]).head(5)
        body = {"dataframe_split": rows.to_dict(orient="split")}
        body["dataframe_split"].pop("index")
        deadline = time.monotonic() + 120
        while True:
            r = httpx.post(f"{url}/invocations", json=body, timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        # class probabilities per row, as the logged pyfunc (and mlflow models serve) answer
        assert len(preds) == 5 and all(len(row) == 2 and abs(sum(row) - 1) < 1e-9 for row in preds)
        assert r.headers["X-Model-Version"] == "1"

        # batch 2: an honest retrain on more rows passes the gates init sized
        land_frame(landing, "batch-2.csv", rest.iloc[half:])
        report = _cycle(root, env)
        (run,) = _runs(report, "cancer_ingest")
        assert run["outcome"] in ("success", "rejected"), run
        assert not [c for c in run.get("failed_checks", []) if "model" in c], run
        from mlflow import MlflowClient

        tags = MlflowClient(tracking_uri=home.tracking_uri).get_model_version("cancer", "2").tags
        assert tags.get("gates.decision") == "PASS", tags
        r = httpx.post(f"{url}/invocations", json=body, timeout=10)
        assert r.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)

    # a broken batch is quarantined by the profiled suite, with the column named
    bad = rest.head(40).assign(**{"mean radius": -5.0})
    land_frame(landing, "broken.csv", bad)
    report = _cycle(root, env)
    (run,) = _runs(report, "cancer_ingest")
    assert run["outcome"] == "rejected", run
    reasons = list(home.quarantine("cancer").glob("*.reason.json"))
    assert reasons and "mean radius" in reasons[0].read_text()
    # nothing init wrote was edited by hand (or by the loop)
    assert before == {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
