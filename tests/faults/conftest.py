"""One home for the fault suite: a champion, a real server on loopback, live traffic.

Every fault is real: a real process (``mlcicd cycle``, the rollout controller's ticks in
an ``agent.py`` process, a run worker the Dagster daemon launched) dies by SIGKILL at an
``MLCICD_FAULT`` kill point, or gets SIGTERM from here. The traffic replayer calls the
server throughout and sends feedback labels, so canary analysis has evidence and every
failed request is counted.

Kept fast (this suite is part of ``make test``): one trained champion for all scenarios,
a 30-tree model, canary steps of a few seconds, the controller ticked by a long-lived
agent process instead of a full ``mlcicd cycle`` per tick, and kill points instead of
sleeps. How many ticks (or cycles) each healing took is collected in ``Loop.table`` and
printed at the end (docs/rollout.md, "Fault table").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests_support import DATA, ROOT, scoped_environ

LABEL = "default.payment.next.month"
MODEL = "credit_default"
AGENT = Path(__file__).with_name("agent.py")
# A canary decided in seconds: two short steps, a few dozen samples per step.
FAST_ROLLOUT = {
    "MLCICD_CANARY_STEPS": "0.3,0.6",
    "MLCICD_CANARY_CHECK_INTERVAL_S": "0.5",
    "MLCICD_CANARY_STEP_MIN_DURATION_S": "2",
    "MLCICD_CANARY_STEP_MIN_SAMPLES": "30",
    "MLCICD_CANARY_MAX_DURATION_S": "600",
    "MLCICD_LANDING_SETTLE_SECONDS": "0",
}


def make_project(root: Path) -> Path:
    """A copy of the shipped code location whose credit_default pipeline is cheap to run:
    30 trees, and no serving-budget or infra gate (the faults, not the gates, are under
    test here)."""
    import shutil

    import yaml

    project = root / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "assets" / "credit_default", project / "assets" / "credit_default",
                    ignore=ignore)  # fmt: skip
    shutil.copy(ROOT / "assets" / "__init__.py", project / "assets" / "__init__.py")
    shutil.copytree(ROOT / "sensors", project / "sensors", ignore=ignore)
    shutil.copy(ROOT / "definitions.py", project / "definitions.py")
    pipeline = project / "assets" / "credit_default"
    gates = yaml.safe_load((pipeline / "gates.yaml").read_text())
    # The model gates that judge quality; the serving-budget load test and the fresh-process
    # infra validation are left out (they cost seconds of CPU per training, and the smoke
    # test at staging still checks the served model answers as judged).
    gates["gates"] = ["non_inferiority", "slices", "behavioral"]
    (pipeline / "gates.yaml").write_text(yaml.safe_dump(gates, sort_keys=False))
    defs = yaml.safe_load((pipeline / "defs.yaml").read_text())
    defs["attributes"]["training"]["params"]["max_iter"] = 30
    (pipeline / "defs.yaml").write_text(yaml.safe_dump(defs, sort_keys=False))
    return project


class Agent:
    """A running ``agent.py``: commands in, one JSON answer each (see its docstring)."""

    def __init__(
        self, project: Path, env: dict[str, str], log: Path, fault: str | None = None
    ) -> None:
        child = {**os.environ, **env}
        child.pop("MLCICD_FAULT", None)
        if fault:
            child["MLCICD_FAULT"] = fault
        self.fault, self.log = fault, log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(AGENT)], cwd=project, env=child, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
            )  # fmt: skip
        assert self._read(180) == {"ready": True}

    def _read(self, timeout: float) -> dict[str, Any] | None:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"agent gave no answer in {timeout} s")
        line = self.proc.stdout.readline()
        if not line:  # the process is gone
            return None
        return json.loads(line)

    def ask(self, *cmd: str, timeout: float = 300) -> dict[str, Any] | None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def die_at_kill_point(self, within_s: float) -> None:
        """Tick until this agent dies at its kill point (SIGKILL), within ``within_s``."""
        answer = self.ask("tick_until", str(within_s), timeout=within_s + 60)
        self.proc.wait(timeout=30)
        err = self.log.read_text(errors="replace")[-3000:]
        assert answer is None and self.proc.returncode == -signal.SIGKILL, (answer, err)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


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
    agent: Any = None
    landed: int = 0
    table: dict[str, str] = field(default_factory=dict)

    # -- processes -------------------------------------------------------------
    def _env(self, fault: str | None) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env.pop("MLCICD_FAULT", None)
        if fault:
            env["MLCICD_FAULT"] = fault
        return env

    def mlcicd(self, *args: str, fault: str | None = None, timeout: float = 600) -> Any:
        exe = Path(sys.executable).with_name("mlcicd")
        return subprocess.run(
            [str(exe), *args], cwd=self.project, env=self._env(fault), capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip

    def popen(self, *args: str, fault: str | None = None) -> subprocess.Popen[str]:
        exe = Path(sys.executable).with_name("mlcicd")
        return subprocess.Popen(
            [str(exe), *args], cwd=self.project, env=self._env(fault), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def cycle_killed_at(self, fault: str) -> None:
        """One ``mlcicd cycle`` that must die at the kill point ``fault``."""
        out = self.mlcicd("cycle", fault=fault)
        assert out.returncode == -signal.SIGKILL, (fault, out.returncode, out.stdout, out.stderr)

    def heal_by_cycles(self, done: Callable[[], bool], *, max_cycles: int = 5) -> int:
        """Plain cycles until ``done()``; how many it took (each cycle ticks every sensor)."""
        for n in range(1, max_cycles + 1):
            out = self.mlcicd("cycle")
            assert out.returncode == 0, out.stdout + out.stderr
            if done():
                return n
        raise AssertionError(f"not healed after {max_cycles} cycles: {self.state().to_dict()}")

    def tick(self) -> dict[str, Any]:
        answer = self.agent.ask("tick")
        assert answer is not None, "the healthy agent died"
        return answer

    def heal_by_ticks(self, done: Callable[[], bool], *, max_ticks: int = 10) -> int:
        """Controller ticks (the sensor, in the healthy agent) until ``done()``; how many."""
        for n in range(1, max_ticks + 1):
            self.tick()
            if done():
                return n
            time.sleep(0.2)
        raise AssertionError(f"not healed after {max_ticks} ticks: {self.state().to_dict()}")

    def ticks_until(self, done: Callable[[], bool], *, timeout_s: float = 120) -> int:
        """Tick (as the sensor would every poll interval) until ``done()``: the canary's
        evidence accumulating; how many ticks it took."""
        deadline = time.monotonic() + timeout_s
        n = 0
        while not done():
            assert time.monotonic() < deadline, f"not done in {timeout_s} s: {self.progress()}"
            n += 1
            self.tick()
            time.sleep(0.3)
        return n

    def faulty_agent(self, fault: str) -> Agent:
        return Agent(self.project, self.env, self.home.root / f"agent-{fault}.log", fault)

    def deploy(self, version: str, strategy: str = "") -> None:
        answer = self.agent.ask("deploy", version, *([strategy] if strategy else []))
        assert answer and answer["status"] == "success", answer

    def versions(self) -> list[str]:
        from mlcicd_dagster.models.registry import client

        found = client(self.home.tracking_uri).search_model_versions(f"name='{MODEL}'")
        return [str(mv.version) for mv in found]

    def bad_version(self) -> str:
        """The newest model trained on shuffled labels (registered here if none is)."""
        from mlcicd_dagster.models.registry import client

        c = client(self.home.tracking_uri)
        for v in sorted(self.versions(), key=int, reverse=True):
            if c.get_model_version(MODEL, v).tags.get("mlcicd.unvetted") == "true":
                return v
        answer = self.agent.ask("hotfix")
        assert answer is not None
        return str(answer["version"])

    # -- data ------------------------------------------------------------------
    def land(self, rows: int = 1500) -> str:
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

    def progress(self) -> dict[str, Any] | None:
        from mlcicd_dagster.rollout.controller import read_progress

        return read_progress(self.home.deployment_state(MODEL))

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

    def live_runs(self) -> list[Any]:
        import dagster as dg

        return self.runs(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING])

    def alias_mismatches(self) -> list[str]:
        from mlcicd_dagster.models.registry import client
        from mlcicd_dagster.rollout.registry import alias_mismatches

        return alias_mismatches(self.state(), client(self.home.tracking_uri))

    def why(self, version: str | None = None) -> dict[str, Any]:
        """The last rollout decision recorded on ``version`` (the newest candidate's if none):
        its check, verdict, reason and, for an analysis, each metric's verdict and figures."""
        from mlcicd_dagster.models.registry import client
        from mlcicd_dagster.rollout.registry import TAG_PREFIX

        c = client(self.home.tracking_uri)
        if version is None:
            version = max(self.versions(), key=int)
        tags = c.get_model_version(MODEL, version).tags
        last = tags.get(f"{TAG_PREFIX}.last")
        if not last:
            return {"version": version, "decision": None}
        d = json.loads(tags[last])
        metrics = (d.get("details") or {}).get("metrics") or []
        keep = ("metric", "verdict", "n_canary", "n_stable", "diff", "se", "log_lr_worse")
        return {
            "version": version, "check": d.get("check"), "verdict": d.get("verdict"),
            "reason": d.get("reason"), "metrics": [{k: m.get(k) for k in keep} for m in metrics],
        }  # fmt: skip

    def in_flight(self) -> bool:
        return self.state().phase in ("staged", "canary", "shadow")

    def assert_healthy(self) -> None:
        """The invariants every scenario ends with."""
        from mlcicd_dagster.rollout.strategies import IN_FLIGHT

        state = self.state()
        assert state.stable is not None
        assert state.phase not in IN_FLIGHT or (state.canary or state.shadow), state.to_dict()
        assert self.alias_mismatches() == []
        live = self.live_runs()
        assert live == [], [(r.run_id, r.job_name, r.status) for r in live]
        assert self.traffic.stats.failed == 0, self.traffic.stats
        assert set(self.traffic.stats.statuses) <= {200}, self.traffic.stats.statuses

    def status_json(self) -> dict[str, Any]:
        out = self.mlcicd("status", "--json", "--pipeline", MODEL, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def wait_ready(self, url: str, timeout_s: float = 120) -> Any:
        import httpx

        deadline = time.monotonic() + timeout_s
        while (r := httpx.get(f"{url}/ready", timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.2)
        return r


@pytest.fixture(scope="package")
def loop(tmp_path_factory) -> Iterator[Loop]:
    from mlcicd_dagster.demo.traffic import TrafficReplayer
    from mlcicd_dagster.platform.home import Home
    from mlcicd_dagster.serving import start_subprocess

    t0 = time.monotonic()
    root = tmp_path_factory.mktemp("faults") / "home"
    env = {"MLCICD_HOME": str(root), **FAST_ROLLOUT}
    with scoped_environ(env):
        home = Home(root).ensure(MODEL)
        pool = pd.read_csv(DATA / "pool.csv.gz")
        lp = Loop(home=home, env=env, pool=pool, project=make_project(root.parent))
        lp.land(4000)
        first = lp.mlcicd("cycle")
        assert first.returncode == 0, first.stdout + first.stderr
        assert lp.state().stable is not None, first.stdout
        lp.server, lp.url = start_subprocess(home, MODEL, port=0, env=env,
                                             log_path=root / "server.log")  # fmt: skip
        lp.wait_ready(lp.url)
        lp.traffic = TrafficReplayer(lp.url, pool.iloc[-3000:], LABEL, rate_per_s=60.0,
                                     label_delay_s=0.1, max_seconds=3600).start()  # fmt: skip
        lp.agent = Agent(lp.project, env, root / "agent.log")
        print(f"\nfault suite: champion, server and traffic ready in {time.monotonic() - t0:.0f} s")
        try:
            yield lp
        finally:
            print(f"\nfault table: {json.dumps(lp.table, indent=1)}\ntraffic {lp.traffic.stats}")
            lp.agent.close()
            lp.traffic.stop()
            lp.server.terminate()
            lp.server.wait(timeout=30)
