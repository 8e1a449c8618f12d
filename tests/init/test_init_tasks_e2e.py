"""`mlcicd init` sizes multiclass and regression gates too, and what it writes runs the loop.

Two data files the project does not ship, generated here with scikit-learn's synthetic
generators (no download): a 3-class problem and a regression with a text id. Both are
onboarded by `mlcicd init` into ONE bare folder (two pipelines, one code location), with
no hand edits. Batches of each file's other rows are landed; one `mlcicd cycle` takes
both through the data gate, training, the sized model gates and the rollout; each
pipeline's model is served by its own server (`--pipeline`); a second batch retrains
each, and the honest retrains pass the gates `init` sized.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow
WORKTREE = Path(__file__).resolve().parents[2]


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


def _ingest(report: dict, name: str) -> dict:
    (run,) = [r for r in report["runs"] if r["job"] == f"{name}_ingest"]
    return run


def _frames() -> dict[str, pd.DataFrame]:
    from sklearn.datasets import make_classification, make_friedman1

    x, y = make_classification(
        n_samples=2400, n_features=6, n_informative=4, n_redundant=0, n_classes=3,
        n_clusters_per_class=1, class_sep=1.2, random_state=3,
    )  # fmt: skip
    shapes = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)]).round(4)
    shapes["kind"] = np.array(["circle", "square", "star"])[y]
    x, y = make_friedman1(n_samples=2400, n_features=6, noise=1.0, random_state=4)
    yields = pd.DataFrame(x, columns=[f"x{i}" for i in range(6)]).round(4)
    yields.insert(0, "plot", [f"p-{i:05d}" for i in range(len(yields))])
    yields["yield_t"] = np.round(y, 3)
    return {"shapes": shapes, "yields": yields}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("twotasks")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(WORKTREE), os.environ.get("PYTHONPATH", "")) if p
        ),
        "MLCICD_HOME": str(root / ".mlcicd"),
        "MLCICD_LANDING_SETTLE_SECONDS": "0",
        "MLCICD_CANARY_MAX_DURATION_S": "20",  # no traffic here: a canary gives up soon
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DAGSTER_HOME", None)
    outs = {}
    for (name, frame), label, extra in zip(
        _frames().items(), ("kind", "yield_t"), ([], ["--id", "plot"]), strict=True
    ):
        data = root / f"{name}.csv"
        frame.to_csv(data, index=False)
        out = _mlcicd(root, env, "init", name, "--data", str(data), "--label", label, *extra)
        assert out.returncode == 0, out.stdout + out.stderr
        outs[name] = out.stdout
    return {"root": root, "env": env, "init_out": outs}


def test_init_infers_the_task_and_sizes_its_gates(project):
    root, outs = project["root"], project["init_out"]
    assert "task multiclass (inferred from the label)" in outs["shapes"]
    assert "task regression (inferred from the label)" in outs["yields"]
    for name, keys in (
        ("shapes", {"loss_margin", "error_margin"}),
        ("yields", {"relative_margin", "relative_error_margin"}),
    ):
        out = outs[name]
        assert "passes non-inferiority with probability >=" in out, out
        assert "is rejected with probability >= 0.95" in out, out  # what is still caught
        gates = yaml.safe_load((root / "assets" / name / "gates.yaml").read_text())
        assert keys <= set(gates) and "label" not in gates
        assert set(gates["design"]["sd_per_row"]) == {"loss", "error"}
        assert all(0 < gates[k] for k in keys)
    # the label: declared once, in defs.yaml
    defs = yaml.safe_load((root / "assets" / "yields" / "defs.yaml").read_text())
    assert defs["attributes"]["label"] == "yield_t" and defs["attributes"]["task"] == "regression"


def test_both_pipelines_run_the_loop_with_no_hand_edits(project):
    from mlflow import MlflowClient

    from mlcicd_dagster.demo.landing import land_frame
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.serving import start_subprocess

    root, env = project["root"], project["env"]
    home = Home(Path(env["MLCICD_HOME"]))
    folders = {n: root / "assets" / n for n in ("shapes", "yields")}
    before = {p: p.read_bytes() for f in folders.values() for p in f.rglob("*") if p.is_file()}
    rest = {n: pd.read_csv(f / "data" / "sample.csv.gz") for n, f in folders.items()}
    golden = {n: pd.read_csv(f / "data" / "golden.csv.gz") for n, f in folders.items()}
    labels = {"shapes": "kind", "yields": "yield_t"}

    # batch 1 of each: the first models, judged against the constant model, go live
    for n, frame in rest.items():
        land_frame(home.landing(n), "batch-1.csv", frame.iloc[: len(frame) // 2])
    report = _cycle(root, env)
    assert set(report["pipelines"]) >= {"shapes", "yields"}
    for n in rest:
        assert _ingest(report, n)["outcome"] == "success", _ingest(report, n)

    servers = {}
    try:
        for n in rest:  # one pipeline's model per server process, as MLflow serves
            servers[n] = start_subprocess(home, n, port=0, env=env)
        for n, (_, url) in servers.items():
            rows = golden[n].drop(columns=[labels[n]]).head(4)
            body = {"dataframe_split": rows.to_dict(orient="split")}
            body["dataframe_split"].pop("index")
            deadline = time.monotonic() + 120
            while True:
                r = httpx.post(f"{url}/invocations", json=body, timeout=10)
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert r.status_code == 200, (n, r.text)
            preds = r.json()["predictions"]
            assert len(preds) == 4
            if n == "shapes":  # class probabilities per row
                assert all(len(p) == 3 and abs(sum(p) - 1) < 1e-6 for p in preds)
            else:
                assert all(isinstance(p, float) for p in preds)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)

    # batch 2: honest retrains on more rows pass the gates init sized
    for n, frame in rest.items():
        land_frame(home.landing(n), "batch-2.csv", frame.iloc[len(frame) // 2 :])
    report = _cycle(root, env)
    client = MlflowClient(tracking_uri=home.tracking_uri)
    for n in rest:
        run = _ingest(report, n)
        assert not [c for c in run.get("failed_checks", []) if "model" in c], run
        tags = client.get_model_version(n, "2").tags
        assert tags.get("gates.decision") == "PASS", (n, tags)
    after = {p: p.read_bytes() for f in folders.values() for p in f.rglob("*") if p.is_file()}
    assert before == after  # nothing init wrote was edited

    # the CLI for several pipelines: status reports each, or the one named; serve needs one
    both = _mlcicd(root, env, "status", "--json")
    assert both.returncode == 0 and '"shapes"' in both.stdout and '"yields"' in both.stdout
    one = _mlcicd(root, env, "status", "--json", "--pipeline", "yields")
    assert one.returncode == 0 and '"yields"' in one.stdout and '"shapes"' not in one.stdout
    serve = _mlcicd(root, env, "serve", "--port", "0")
    assert serve.returncode != 0 and "--pipeline" in serve.stderr, serve.stderr
