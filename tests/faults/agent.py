"""A helper process of the fault suite: the rollout controller's ticks, a deploy, a hotfix.

Started in the project's folder (``python agent.py``), it loads the code location once
and answers one JSON line per command line on stdin:

  tick                       evaluate the rollout controller sensor once (as ``cycle``
                             and the daemon do): {"outcome": ..., "message": ...}
  tick_until SECONDS         tick every 0.2 s until SECONDS pass: with ``MLCICD_FAULT``
                             set this process is meant to die at its kill point first
  deploy VERSION [STRATEGY]  run the deploy job for VERSION (the spec's strategy if none)
  hotfix                     register a model trained on shuffled labels (its version)

It is a real process with the real sensor and job definitions: a kill point fires in it
exactly as in ``mlcicd cycle``, and it is spared the cost of loading the code location
for every tick.
"""

from __future__ import annotations

import json
import os
import sys
import time

MODEL = "credit_default"


def main() -> None:
    import dagster as dg
    import pandas as pd
    from dagster._core.instance.ref import InstanceRef

    # The project's code location, as `mlcicd` and `dg` load it from their working folder
    # (a script's own folder, not the working one, is what Python puts first on sys.path).
    sys.path.insert(0, os.getcwd())
    import definitions
    from mlcicd_dagster.pipeline.cycle import run_cycle
    from mlcicd_dagster.platform.dagster_home import ensure_dagster_home
    from mlcicd_dagster.platform.home import Home

    home = Home.from_env()
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(ensure_dagster_home(home))))
    p = definitions.location.pipeline(MODEL)
    sensor = f"{p.spec.dataset}_rollout_controller"

    def tick() -> dict[str, str]:
        report = run_cycle(definitions.defs, instance, sensor_names=[sensor], max_passes=1)
        outcome, _, message = report.skipped.get(sensor, "").partition(": ")
        return {"outcome": outcome, "message": message}

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "tick":
            out: dict[str, object] = tick()
        elif cmd == "tick_until":
            deadline = time.monotonic() + float(args[0])
            n = 0
            while time.monotonic() < deadline:
                n += 1
                tick()
                time.sleep(0.2)
            out = {"outcome": "timeout", "ticks": n}
        elif cmd == "deploy":
            from mlcicd_dagster.pipeline.deploy_ops import run_deploy_job

            out = run_deploy_job(p, definitions.defs, instance, args[0], *args[1:])
        elif cmd == "hotfix":
            from mlcicd_dagster.pipeline.hotfix import register_unvetted_model

            rows = pd.read_csv(p.spec.sample_path).head(2000)
            out = {"version": register_unvetted_model(p.spec, home, rows, p.spec.label)}
        else:
            out = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
