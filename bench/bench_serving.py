"""Throughput of the model server vs `mlflow models serve`, a no-op endpoint and the model's
own in-process scoring, in one run.

    .venv/bin/python -m bench.bench_serving [--duration 10] [--connections 16]

Same registered champion (the shipped model kind: a 100-tree HistGradientBoostingClassifier
trained on assets/credit_default/data/pool.csv.gz, label ``default.payment.next.month``),
single-row requests, 16 concurrent keep-alive connections, prediction logging on. Load
generator: ``wrk`` (Debian package ``wrk``; C, one thread, a Lua script for the POST
body), run in its own process so the Python servers keep the CPU they need. Measured one
after the other on the same machine:

  * ours:   ``python -m mlcicd_dagster.serving`` (what ``mlcicd serve`` runs),
            ``/invocations`` (``dataframe_split``) and the Open Inference Protocol route
            ``/v2/models/<name>/infer`` (one FP64/INT64 tensor per feature)
  * mlflow: ``mlflow models serve -m models:/credit_default@champion --env-manager local``
  * no-op:  a Starlette endpoint on the same stack (uvicorn + uvloop + httptools) that
            reads the body and returns a constant: the **ceiling** of any single-process
            server on this stack (no parsing, no model, no logging)
  * floor:  the model's own ``predict_proba`` in this process, batches of 16 rows, one
            thread: the compute floor (rows/s) a server of single-row requests could reach
            if its HTTP, parsing and logging cost nothing

Goals (issue 15): ours >= 20x mlflow req/s, p99 <= 20 ms, ours >= 50% of the floor, v2
within 20% of /invocations, the same answer as mlflow. Where the floor is above the
no-op ceiling, 50% of the floor is out of reach of any server on this stack: the output
says so and shows ours / no-op beside it.

Rounds: ours ``/invocations``, ours v2, the no-op and the floor, back to back, every ratio
taken within a round (the machine is shared; the load changes by the minute).
Results are printed and written to docs/benchmarks.md (section ``## bench_serving``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "assets" / "credit_default" / "data" / "pool.csv.gz"
LABEL = "default.payment.next.month"
MODEL = "credit_default"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## bench_serving"
LOG_DIR = Path(tempfile.gettempdir())  # replaced by the run's work folder

WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY_FILE"), "r")
wrk.body = f:read("*a")
f:close()
"""

NOOP_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
async def noop(request):
    await request.body()
    return Response(b'{"predictions": [0.5]}', media_type="application/json")
app = Starlette(routes=[Route("/invocations", noop, methods=["POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            access_log=False, log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(
    url: str, proc: subprocess.Popen[bytes], timeout: float = 600, expect: int = 200
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            logs = "".join(
                f"\n--- {p.name}\n" + p.read_text()[-3000:] for p in LOG_DIR.glob("*.log")
            )
            raise RuntimeError(f"server for {url} exited with {proc.returncode}{logs}")
        try:
            if httpx.get(url, timeout=2).status_code == expect:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(url)


def wrk(url: str, body_file: Path, lua: Path, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
        env={**os.environ, "BODY_FILE": str(body_file)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def register_champion(home_root: Path) -> tuple[str, list[str], list[float]]:
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlcicd_dagster.models.loading import log_and_register

    uri = f"sqlite:///{home_root / 'mlflow' / 'mlflow.db'}"
    (home_root / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    artifacts = (home_root / "mlflow" / "artifacts").as_uri()
    mlflow.create_experiment(MODEL, artifact_location=artifacts)
    pool = pd.read_csv(DATA)
    features = [c for c in pool.columns if c not in ("ID", LABEL)]
    model = HistGradientBoostingClassifier(random_state=0)
    model.fit(pool[features].to_numpy(np.float64), pool[LABEL].to_numpy())
    reg = log_and_register(
        model, model_name=MODEL, X_example=pool[features].head(8), tracking_uri=uri
    )
    MlflowClient(tracking_uri=uri).set_registered_model_alias(MODEL, "champion", reg.version)
    first = pool[features].iloc[7]
    integer = {f: pool[f].dtype.kind == "i" for f in features}
    # JSON as a client serialises a landed row: integers stay integers.
    row = [int(first[f]) if integer[f] else float(first[f]) for f in features]
    return reg.version, features, row, integer


def floor_model(tracking_uri: str, version: str, features: list[str]) -> tuple[Any, Any]:
    """(estimator, 16 rows): the registered model loaded as the server loads it."""
    import numpy as np
    import pandas as pd

    from mlcicd_dagster.models.loading import load_predictor

    predictor = load_predictor(f"models:/{MODEL}/{version}", tracking_uri=tracking_uri)
    x = pd.read_csv(DATA)[features].iloc[:16].to_numpy(np.float64)
    return predictor.estimator, x  # type: ignore[attr-defined]


def compute_floor(estimator: Any, x: Any, seconds: float) -> dict:
    """The model's own predict_proba on batches of 16 rows, one thread: rows/s."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        estimator.predict_proba(x)
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            estimator.predict_proba(x)
            calls += 1
        elapsed = time.perf_counter() - t0
    return {"rows_per_s": calls * len(x) / elapsed, "ms_per_call": elapsed / calls * 1000}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=int, default=10, help="seconds of load per server")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="rounds of ours / v2 / floor")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--server-args", default="", help="extra arguments for our server (tuning)")
    p.add_argument("--ours-only", action="store_true", help="tuning: ours and the floor only")
    a = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")

    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.rollout.state import ModelRef, transition
    from mlcicd_dagster.serving import start_subprocess

    global LOG_DIR
    work = LOG_DIR = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    home = Home(work / "home")
    os.environ["MLCICD_HOME"] = str(home.root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    version, features, row, integer = register_champion(home.root)
    tracking = home.tracking_uri
    transition(
        home.deployment_state(MODEL), MODEL, "bench",
        lambda s: {"stable": ModelRef(version, f"models:/{MODEL}/{version}")},
    )  # fmt: skip
    body_file = work / "body.json"
    body_file.write_text(json.dumps({"dataframe_split": {"columns": features, "data": [row]}}))
    v2_file = work / "v2.json"
    v2_file.write_text(json.dumps({"inputs": [
        {"name": f, "shape": [1], "datatype": "INT64" if float(v).is_integer() and integer[f]
         else "FP64", "data": [int(v) if integer[f] else v]}
        for f, v in zip(features, row, strict=True)
    ]}))  # fmt: skip
    lua = work / "post.lua"
    lua.write_text(WRK_LUA)
    noop_py = work / "noop.py"
    noop_py.write_text(textwrap.dedent(NOOP_APP))

    results: dict[str, dict] = {}
    procs: list[subprocess.Popen[bytes]] = []
    # mlflow serve execs ``uvicorn`` from PATH: put this interpreter's bin folder first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking, "PATH": path}

    def measure(
        name: str, url: str, proc: subprocess.Popen[bytes], body: Path = body_file,
        stop: bool = True,
    ) -> None:  # fmt: skip
        check = httpx.post(url, content=body.read_bytes(), timeout=30,
                           headers={"Content-Type": "application/json"})  # fmt: skip
        check.raise_for_status()
        print(f"{name}: answer {check.text[:80]}", flush=True)
        wrk(url, body, lua, 2, a.connections)  # warm-up
        results[name] = wrk(url, body, lua, a.duration, a.connections)
        results[name]["answer"] = check.json()
        print(f"{name}: {results[name]}", flush=True)
        if not stop:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()

    try:
        # ours, with prediction logging on (the default)
        proc, url = start_subprocess(
            home, MODEL, port=0, log_path=work / "ours.log", extra_args=a.server_args.split()
        )
        procs.append(proc)
        wait_http(f"{url}/ready", proc)
        # Rounds of (ours /invocations, ours v2, the floor) back to back: on a shared
        # machine the load changes by the minute; each ratio is taken within a round and
        # the verdict is on the medians.
        estimator, x16 = floor_model(tracking, version, features)
        noop_port = free_port()
        noop = subprocess.Popen([sys.executable, str(noop_py), str(noop_port)], env=env)
        procs.append(noop)
        noop_url = f"http://127.0.0.1:{noop_port}/invocations"
        wait_http(f"http://127.0.0.1:{noop_port}/openapi-none", noop, expect=404)
        rounds = []
        for r in range(a.rounds):
            measure("ours", f"{url}/invocations", proc, stop=False)
            measure("ours v2", f"{url}/v2/models/{MODEL}/infer", proc, body=v2_file, stop=False)
            measure("noop", noop_url, noop, stop=False)
            fl = compute_floor(estimator, x16, max(2.0, a.duration / 2))
            rounds.append(
                {"ours": results["ours"], "v2": results["ours v2"], "noop": results["noop"],
                 "floor": fl}
            )  # fmt: skip
            print(f"round {r + 1}: floor {fl}", flush=True)
        for p_ in (proc, noop):
            p_.send_signal(signal.SIGTERM)
            p_.wait(60)
        log_rows = _count_log_rows(home.predictions(MODEL))
        rounds.sort(key=lambda rd: rd["ours"]["rps"] / rd["floor"]["rows_per_s"])
        median = rounds[len(rounds) // 2]
        results["ours"], results["ours v2"], floor = median["ours"], median["v2"], median["floor"]
        results["noop"] = median["noop"]
        floor["rounds"] = [
            (
                rd["ours"]["rps"] / rd["floor"]["rows_per_s"],
                rd["v2"]["rps"] / rd["ours"]["rps"],
                rd["ours"]["rps"] / rd["noop"]["rps"],
                rd["noop"]["rps"] / rd["floor"]["rows_per_s"],
            )
            for rd in rounds
        ]
        if a.ours_only:
            print("rounds (ours/floor, v2/ours, ours/no-op, no-op/floor):")
            for rd_ in floor["rounds"]:
                print("  " + ", ".join(f"{x:.0%}" for x in rd_))
            return

        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m",
             f"models:/{MODEL}@champion", "--env-manager", "local", "-h", "127.0.0.1",
             "-p", str(port)],
            env=env, stdout=open(work / "mlflow.log", "wb"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(proc)
        wait_http(f"http://127.0.0.1:{port}/ping", proc)
        measure("mlflow", f"http://127.0.0.1:{port}/invocations", proc)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    ours, mlf, noop, v2 = results["ours"], results["mlflow"], results["noop"], results["ours v2"]
    # Both answer the pyfunc's output: [[P(0), P(1)]] for one row.
    theirs = mlf["answer"]["predictions"]
    same = len(theirs) == 1 and all(
        abs(a_ - b_) < 1e-12
        for a_, b_ in zip(ours["answer"]["predictions"][0], theirs[0], strict=False)
    )
    v2_pred = v2["answer"]["outputs"][0]["data"]
    same_v2 = all(abs(a_ - b_) < 1e-12 for a_, b_ in zip(v2_pred, theirs[0], strict=False))
    vs_mlflow = ours["rps"] / mlf["rps"]
    mid = len(floor["rounds"]) // 2
    vs_floor = sorted(r[0] for r in floor["rounds"])[mid]
    v2_ratio = sorted(r[1] for r in floor["rounds"])[mid]
    vs_noop = sorted(r[2] for r in floor["rounds"])[mid]
    noop_vs_floor = sorted(r[3] for r in floor["rounds"])[mid]
    verdict = {
        ">= 20x mlflow req/s": vs_mlflow >= 20,
        "p99 <= 20 ms (logging on)": ours["p99_ms"] <= 20,
        ">= 50% of the model's own scoring throughput at batch 16": vs_floor >= 0.50,
        "v2 within 20% of /invocations": v2_ratio >= 0.80,
        "same answer as mlflow (/invocations and v2)": same and same_v2,
    }
    if noop_vs_floor < 0.5:
        print(f"\nthe no-op ceiling is {noop_vs_floor:.0%} of the floor: 50% of the floor is "
              "out of reach of any single-process server on this stack")  # fmt: skip
    print(f"\nours / mlflow req/s: {vs_mlflow:.1f}x   ours / no-op (ceiling): {vs_noop:.0%}   "
          f"ours / floor: {vs_floor:.0%}   v2 / invocations: {v2_ratio:.0%}   "
          f"ours p99: {ours['p99_ms']:.2f} ms   log rows written: {log_rows}")  # fmt: skip
    for goal, ok in verdict.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {goal}")
    if not a.no_doc:
        _write_doc(
            results, floor, vs_mlflow, vs_noop, vs_floor, v2_ratio, verdict, log_rows, a,
            noop_vs_floor,
        )  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


def _count_log_rows(directory: Path) -> int:
    import duckdb

    if not any(directory.glob("part-*.parquet")):
        return 0
    glob = str(directory / "part-*.parquet")
    con = duckdb.connect()
    try:
        return int(con.execute("SELECT count(*) FROM read_parquet(?)", [glob]).fetchall()[0][0])
    finally:
        con.close()


def _write_doc(
    results, floor, vs_mlflow, vs_noop, vs_floor, v2_ratio, verdict, log_rows, a, noop_vs_floor
) -> None:  # type: ignore[no-untyped-def]  # noqa: E501
    rows = "\n".join(
        f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx']} |"
        for name, r in results.items()
    )
    rows += (
        f"\n| floor: the model's predict_proba, batch 16, in-process | "
        f"{floor['rows_per_s']:,.0f} rows/s | {floor['ms_per_call']:.2f} per call | | |"
    )
    load = os.getloadavg()[0]
    goals = "\n".join(f"- {'PASS' if ok else 'FAIL'}: {g}" for g, ok in verdict.items())
    args = f"--duration {a.duration} --connections {a.connections} --rounds {a.rounds}"
    per_round = ", ".join(f"{f:.0%} / {v:.0%} / {n:.0%}" for f, v, n, _ in floor["rounds"])
    ceiling = (
        f"The no-op endpoint, the ceiling of any single-process server on this stack, reached "
        f"{noop_vs_floor:.0%} of the floor's rows/s"
        + (
            ": 50% of the floor is out of reach of any such server, so ours / no-op is the "
            "figure that shows how much of the stack's ceiling our per-request work leaves."
            if noop_vs_floor < 0.5
            else "."
        )
    )
    section = f"""{SECTION}

Command: `.venv/bin/python -m bench.bench_serving {args}`
({time.strftime("%Y-%m-%d %H:%M")}, {os.cpu_count()} CPUs, {platform.python_version()},
load average {load:.1f} at the end: a shared machine, so compare the ratios, all measured
in the same run;
load generator `wrk -t1 -c{a.connections}` with a Lua POST script, single-row
`dataframe_split` bodies; prediction logging on: {log_rows:,} rows written by our server
during its run).

| server | req/s | p50 ms | p99 ms | non-2xx |
|---|---:|---:|---:|---:|
{rows}

ours / mlflow: **{vs_mlflow:.1f}x** req/s; ours / no-op (the stack's ceiling):
**{vs_noop:.0%}**; ours / the model's own scoring at batch 16: **{vs_floor:.0%}**; v2 /
`/invocations`: **{v2_ratio:.0%}** (medians over {a.rounds} back-to-back rounds of ours, v2,
the no-op and the floor; per round ours/floor, v2/ours and ours/no-op: {per_round}; the
table shows the median round). {ceiling}

{goals}
"""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
