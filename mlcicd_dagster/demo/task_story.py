"""The demo's act for the other tasks: every other pipeline of the code location (the
shipped digits, multiclass with a torch module, and diabetes, regression) gets its first
batch through the same loop: data gate, training, the task's model gates, blue-green to
its own model server, requests, feedback, a monitoring window measured from the logs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Any

import numpy as np
import pandas as pd

FIRST_BATCH_ROWS = 600  # digits trains in tens of seconds on a CPU at this size
REQUESTS = 40


def other_tasks(module: Any, runner: Any, skip: str) -> str:
    """Run the act for every pipeline but ``skip``; returns the summary line."""
    from mlcicd_dagster.demo.landing import land_frame

    pipelines = {n: p for n, p in module.location.pipelines.items() if n != skip}
    if not pipelines:
        return "no other pipeline in this code location"
    pools = {}
    for name, p in pipelines.items():
        pool = pd.read_csv(p.spec.sample_path or p.spec.golden_path)
        pools[name] = pool
        batch = pool.head(FIRST_BATCH_ROWS)
        runner.home.ensure(name)
        land_frame(runner.home.landing(name), "first batch.csv", batch)
        print(f"  landed {name}/first batch.csv: {len(batch)} rows ({p.spec.task})", flush=True)
    runner.cycle()
    lines = [_serve_and_measure(runner.home, p.spec, pools[n]) for n, p in pipelines.items()]
    for line in lines:
        print(f"  {line}", flush=True)
    return "; ".join(lines)


def _serve_and_measure(home: Any, spec: Any, pool: pd.DataFrame) -> str:
    """Start the pipeline's server, send requests and their labels, measure the window."""
    import httpx

    from mlcicd_dagster.monitoring.window import compute_window
    from mlcicd_dagster.rollout.state import read_state
    from mlcicd_dagster.serving import start_subprocess

    name, task = spec.model_name, spec.task_type
    state = read_state(home.deployment_state(name), name)
    if state.stable is None:
        return f"{name}: nothing serves (see the runs above)"
    server, url = start_subprocess(home, name, port=0, log_path=home.root / f"server-{name}.log")
    try:
        rows = pool.tail(REQUESTS).reset_index(drop=True)
        body = {"dataframe_split": rows[spec.features].to_dict(orient="split")}
        body["dataframe_split"].pop("index")
        deadline = time.monotonic() + 60
        while True:
            r = httpx.post(f"{url}/invocations", json=body, timeout=30)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if r.status_code != 200:
            return f"{name}: server answered {r.status_code}"
        preds = np.asarray(r.json()["predictions"], dtype=float)
        ids = r.headers["X-Request-Id"].split(",")
        labels = [
            {"request_id": i, "label": float(v)} for i, v in zip(ids, rows[spec.label], strict=True)
        ]
        httpx.post(f"{url}/feedback", json=labels, timeout=30)
        time.sleep(2)  # the server writes its logs in micro-batches
        now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        result = compute_window(
            home, name, now - dt.timedelta(hours=1), now, reference=None, task=task
        )
    finally:
        server.terminate()
        with contextlib.suppress(Exception):
            server.wait(timeout=30)
    served = f"{name} v{state.stable.version} serves"
    if task.name == "multiclass":
        accuracy = float(np.mean(preds.argmax(axis=1) == task.encode(rows[spec.label])))
        return f"{served} (k={preds.shape[1]}): accuracy {accuracy:.0%}"
    metrics = result.versions[0].metrics if result.versions else {}
    mae = metrics.get("mae")
    live = f": live MAE {mae.value:.0f} [{mae.lo:.0f}, {mae.hi:.0f}]" if mae else ""
    return f"{served}{live}"
