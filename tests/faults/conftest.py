"""One home for the fault suite: a champion, a real server on loopback, live traffic.

Every scenario runs real ``mlcicd`` processes (``cycle``, ``status``) against the same
home and kills them for real (``MLCICD_FAULT`` kill points: SIGKILL, or SIGTERM from
here). The traffic replayer calls the server throughout and sends feedback labels, so
canary analysis has evidence and every failed request is counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests_support import DATA, ROOT

LABEL = "default.payment.next.month"
MODEL = "credit_default"
# A canary decided in seconds: two steps, a few dozen samples per step, a five-minute cap.
FAST_ROLLOUT = {
    "MLCICD_CANARY_STEPS": "0.3,0.6",
    "MLCICD_CANARY_CHECK_INTERVAL_S": "0.5",
    "MLCICD_CANARY_STEP_MIN_DURATION_S": "1",
    "MLCICD_CANARY_STEP_MIN_SAMPLES": "40",
    "MLCICD_CANARY_MAX_DURATION_S": "300",
    "MLCICD_LANDING_SETTLE_SECONDS": "0",
}


def make_project(root: Path) -> Path:
    """A copy of the shipped code location whose credit_default pipeline is cheap to run
    and judged on generous serving budgets (the suite shares a busy CI machine: the
    faults, not the latency gate, are under test here)."""
    import shutil

    import yaml

    project = root / "project"
    shutil.copytree(ROOT / "assets" / "credit_default", project / "assets" / "credit_default",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "assets" / "__init__.py", project / "assets" / "__init__.py")
    shutil.copytree(ROOT / "sensors", project / "sensors",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "definitions.py", project / "definitions.py")
    pipeline = project / "assets" / "credit_default"
    gates = yaml.safe_load((pipeline / "gates.yaml").read_text())
    gates.update(serving_p99_ms=5000.0, serving_min_rows_per_s=10, serving_max_ratio=20.0)
    (pipeline / "gates.yaml").write_text(yaml.safe_dump(gates, sort_keys=False))
    defs = yaml.safe_load((pipeline / "defs.yaml").read_text())
    defs["attributes"]["training"]["params"]["max_iter"] = 30
    defs["attributes"]["rollout"]["canary_steps"] = [0.3, 0.6, 1.0]
    (pipeline / "defs.yaml").write_text(yaml.safe_dump(defs, sort_keys=False))
    return project


@dataclass
class Loop:
    """The system under test and the helpers scenarios share."""

    home: Any
    env: dict[str, str]
    pool: pd.DataFrame
    project: Path = ROOT
    url: str = ""
    server: Any = None
    traffic: Any = None
    landed: int = 0
    ticks: dict[str, int] = field(default_factory=dict)

    # -- processes -------------------------------------------------------------
    def mlcicd(self, *args: str, fault: str | None = None, timeout: float = 600) -> Any:
        env = {**os.environ, **self.env}
        env.pop("MLCICD_FAULT", None)
        if fault:
            env["MLCICD_FAULT"] = fault
        exe = Path(sys.executable).with_name("mlcicd")
        return subprocess.run(
            [str(exe), *args], cwd=self.project, env=env, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def popen(self, *args: str) -> subprocess.Popen[str]:
        env = {**os.environ, **self.env}
        env.pop("MLCICD_FAULT", None)
        exe = Path(sys.executable).with_name("mlcicd")
        return subprocess.Popen(
            [str(exe), *args], cwd=self.project, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def cycle_until(self, fault: str, *, timeout_s: float = 180, unless: Any = None) -> int:
        """Run ``cycle`` with a kill point until it dies there; how many cycles it took
        (0 when ``unless()`` became true first: the kill point can no longer be reached)."""
        deadline = time.monotonic() + timeout_s
        n = 0
        while time.monotonic() < deadline:
            n += 1
            out = self.mlcicd("cycle", fault=fault)
            if out.returncode == -signal.SIGKILL:
                return n
            assert out.returncode == 0, out.stdout + out.stderr
            if unless is not None and unless():
                return 0
            time.sleep(0.5)
        raise AssertionError(f"no cycle reached the {fault!r} kill point in {timeout_s} s")

    def heal(self, done, *, max_cycles: int = 30) -> int:
        """Plain cycles until ``done()``; how many it took (each cycle ticks the controller)."""
        for n in range(1, max_cycles + 1):
            out = self.mlcicd("cycle")
            assert out.returncode == 0, out.stdout + out.stderr
            if done():
                return n
            time.sleep(0.5)
        raise AssertionError(f"not healed after {max_cycles} cycles: {self.state().to_dict()}")

    # -- data ------------------------------------------------------------------
    def land(self, rows: int = 2500) -> str:
        from mlcicd_dagster.demo.landing import land_frame

        start = 0 if self.landed == 0 else 4000 + (self.landed - 1) * rows
        name = f"batch-{self.landed:02d}.csv"
        land_frame(self.home.landing(MODEL), name, self.pool.iloc[start : start + rows])
        self.landed += 1
        return name

    # -- views -----------------------------------------------------------------
    def state(self) -> Any:
        from mlcicd_dagster.rollout.state import read_state

        return read_state(self.home.deployment_state(MODEL), MODEL)

    def instance(self) -> Any:
        import dagster as dg
        from dagster._core.instance.ref import InstanceRef

        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home.dagster_home)))

    def runs(self, **filters: Any) -> list[Any]:
        import dagster as dg

        inst = self.instance()
        try:
            return list(inst.get_runs(filters=dg.RunsFilter(**filters)))
        finally:
            inst.dispose()

    def alias_mismatches(self) -> list[str]:
        from mlcicd_dagster.models.registry import client
        from mlcicd_dagster.rollout.registry import alias_mismatches

        return alias_mismatches(self.state(), client(self.home.tracking_uri))

    def assert_healthy(self) -> None:
        """The invariants every scenario ends with."""
        import dagster as dg

        from mlcicd_dagster.rollout.strategies import IN_FLIGHT

        state = self.state()
        assert state.stable is not None
        assert state.phase not in IN_FLIGHT or (state.canary or state.shadow), state.to_dict()
        assert self.alias_mismatches() == []
        live = self.runs(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])
        assert live == [], [(r.run_id, r.job_name, r.status) for r in live]
        assert self.traffic.stats.failed == 0, self.traffic.stats
        assert set(self.traffic.stats.statuses) <= {200}, self.traffic.stats.statuses

    def status_json(self) -> dict[str, Any]:
        out = self.mlcicd("status", "--json", "--pipeline", MODEL, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


@pytest.fixture(scope="package")
def loop(tmp_path_factory) -> Iterator[Loop]:
    from mlcicd_dagster.demo.traffic import TrafficReplayer
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.serving import start_subprocess

    root = tmp_path_factory.mktemp("faults") / "home"
    env = {"MLCICD_HOME": str(root), **FAST_ROLLOUT}
    saved = {k: os.environ.get(k) for k in [*env, "MLFLOW_TRACKING_URI", "DAGSTER_HOME"]}
    os.environ.update(env)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    home = Home(root).ensure(MODEL)
    pool = pd.read_csv(DATA / "pool.csv.gz")
    lp = Loop(home=home, env=env, pool=pool, project=make_project(root.parent))
    lp.land(4000)
    first = lp.mlcicd("cycle")
    assert first.returncode == 0, first.stdout + first.stderr
    assert lp.state().stable is not None, first.stdout
    lp.server, lp.url = start_subprocess(home, MODEL, port=0, env=env,
                                         log_path=root / "server.log")  # fmt: skip
    import httpx

    deadline = time.monotonic() + 120
    while httpx.get(f"{lp.url}/ready", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "server never became ready"
        time.sleep(0.2)
    traffic_rows = pool.iloc[-3000:]
    lp.traffic = TrafficReplayer(lp.url, traffic_rows, LABEL, rate_per_s=60.0,
                                 label_delay_s=0.1, max_seconds=3600).start()  # fmt: skip
    try:
        yield lp
    finally:
        print(f"\nfault table (cycles to heal): {json.dumps(lp.ticks)}; traffic {lp.traffic.stats}")
        lp.traffic.stop()
        lp.server.terminate()
        lp.server.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
