"""A steady trickle of landings never starves training.

The training sensor waits while data gates run, so that a burst trains once. Under a
trickle some gate is always running: the sensor must still train, on the batches
validated so far, once the oldest of them has waited ``MLCICD_TRAINING_MAX_WAIT_S``.
Here a real ingest-job run stays in flight (a real process) while batches keep arriving
in the lake, and the real sensor body is ticked as the daemon would.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
import time

import dagster as dg
import pandas as pd
from tests_support import DATA

# A data gate that never finishes while the trickle lasts: a run of the ingest job's name,
# executed by its own process on the home's instance.
GATE = textwrap.dedent(
    """
    import sys, time
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    @dg.op
    def validate():
        print("running", flush=True)
        time.sleep(120)

    @dg.job(name=sys.argv[2])
    def gate():
        validate()

    inst = dg.DagsterInstance.from_ref(InstanceRef.from_dir(sys.argv[1]))
    gate.execute_in_process(instance=inst)
    """
)


def test_a_trickle_of_batches_still_trains_within_the_maximum_wait(instance, home_dir, monkeypatch):
    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.pipeline.training import training_tick
    from mlcicd_dagster.platform.home import Home

    max_wait = 4.0
    monkeypatch.setenv("MLCICD_TRAINING_MAX_WAIT_S", str(max_wait))
    import definitions

    p = importlib.reload(definitions).location.pipeline("credit_default")
    home = Home(home_dir).ensure("credit_default")
    lake = Lake(home.lake("credit_default"))
    rows = pd.read_csv(DATA / "pool.csv.gz", nrows=400)
    gate = subprocess.Popen(
        [sys.executable, "-c", GATE, str(home.dagster_home), p.job_name("ingest")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert gate.stdout is not None and gate.stdout.readline().strip() == "running"
        ctx = dg.build_sensor_context(instance=instance)
        first = time.monotonic()
        seen: list[str] = []
        request = None
        for i in range(40):  # a batch every 0.25 s, the sensor ticking after each
            lake.write_validated(f"b{i:02d}.csv", rows.iloc[i * 10 : i * 10 + 10])
            result = training_tick(p, home, ctx)
            if isinstance(result, dg.SkipReason):
                seen.append(result.skip_message or "")
                time.sleep(0.25)
                continue
            request = result.run_requests[0]
            break
        waited = time.monotonic() - first
        assert gate.poll() is None, "the data gate must stay in flight throughout"
    finally:
        gate.kill()
        gate.wait(timeout=30)
    assert seen and all("waiting for 1 data gate run(s)" in m for m in seen), seen
    assert request is not None, f"no training after {waited:.1f} s of trickle: {seen[-1]}"
    # ``written_at`` has a resolution of one second
    assert max_wait - 1.0 <= waited <= max_wait + 3.0, waited
    trained = int(request.tags["mlcicd/batches"])
    assert trained >= 2 and request.tags["mlcicd/trigger"] == "new_data"
    assert request.job_name == p.job_name("retrain")
