"""Plays a user through a pipeline's story: lands files, runs cycles, calls the server.

Generic over the pipeline (it reads the ``PipelineDefs`` of the code location);
the story itself (which rows, which defects) belongs to the shipped pipeline.
Every act goes through the real system: files into the landing zone, sensors
and runs via :func:`run_cycle` on the home's Dagster instance, the model server
as a child process over HTTP.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from mlcicd_dagster import settings
from mlcicd_dagster.demo.landing import land_frame
from mlcicd_dagster.demo.traffic import TrafficReplayer
from mlcicd_dagster.platform.home import Home

MONITOR_WINDOW_MINUTES = 1  # demo windows: the story cannot wait for hourly ones
TRAFFIC_RATE = 100.0  # requests per second replayed by the demo's clients
# A demo canary moves in seconds, not the production minutes (see deploy_ops.CANARY_ENV).
DEMO_CANARY = {
    "MLCICD_CANARY_CHECK_INTERVAL_S": "2",
    "MLCICD_CANARY_STEP_MIN_DURATION_S": "4",
    "MLCICD_CANARY_STEP_MIN_SAMPLES": "60",
    "MLCICD_CANARY_MAX_DURATION_S": "240",
    "MLCICD_LANDING_SETTLE_SECONDS": "0.5",
}


class StoryRunner:
    def __init__(self, module: Any, *, reset: Callable[[Path], None]) -> None:
        self.module = module
        self.p = module.location.pipeline("credit_default")
        self.spec = self.p.spec
        self.home = Home.from_env()
        self.reset = reset
        for key, value in DEMO_CANARY.items():
            os.environ.setdefault(key, value)
        self.server: Any = None
        self.url = ""
        self.traffic: TrafficReplayer | None = None
        self.cycles: list[Any] = []
        self.landed: list[str] = []

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> StoryRunner:
        from mlcicd_dagster.serving import start_subprocess

        self.reset(self.home.root)
        self.home.ensure(self.spec.dataset)
        print(f"Demo home: {self.home.root}")
        print(f"MLflow tracking URI: {self.home.tracking_uri}\n")
        self.server, self.url = start_subprocess(
            self.home,
            self.spec.model_name,
            port=0,
            log_path=self.home.root / "server.log",
        )
        print(f"Model server: {self.url} (log: {self.home.root / 'server.log'})\n")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        if self.server is not None:
            self.server.terminate()
            with contextlib.suppress(Exception):
                self.server.wait(timeout=30)

    # -- acts ----------------------------------------------------------------
    def say(self, text: str) -> None:
        print(text, flush=True)

    def land(self, name: str, df: pd.DataFrame) -> None:
        land_frame(self.home.landing(self.spec.dataset), name, df)
        self.landed.append(name)
        print(f"  landed {name!r}: {len(df)} rows", flush=True)

    def cycle(self) -> Any:
        from mlcicd_dagster.pipeline.cycle import run_cycle
        from mlcicd_dagster.pipeline.summary import print_cycle

        settle = settings.get_float("MLCICD_LANDING_SETTLE_SECONDS", 0.5)
        time.sleep(settle + 0.2)  # let the landed files settle (landing convention)
        report = run_cycle(self.module.defs, self._instance())
        self.cycles.append(report)
        print_cycle(report)
        if not report.ok:
            raise SystemExit("the demo hit an error: see the runs above")
        self.settle()
        return report

    def settle(self) -> None:
        """Tick the rollout controller (as the daemon would) until no rollout is in flight."""
        from mlcicd_dagster.pipeline.cycle import settle_rollouts

        limit = settings.get_float("MLCICD_CANARY_MAX_DURATION_S", 240.0) + 30
        interval = settings.get_float("MLCICD_CANARY_CHECK_INTERVAL_S", 2.0)
        settle_rollouts(self.module.defs, self._instance(), timeout_s=limit, interval_s=interval)

    def start_traffic(self, rows: pd.DataFrame, label: str) -> None:
        self.traffic = TrafficReplayer(self.url, rows, label, rate_per_s=TRAFFIC_RATE).start()

    def replace_traffic(self, rows: pd.DataFrame, label: str) -> None:
        assert self.traffic is not None
        self.traffic.replace_rows(rows, label)

    def wait_for_feedback(self, min_labels: int, timeout_s: float = 120.0) -> None:
        assert self.traffic is not None
        deadline = time.monotonic() + timeout_s
        while self.traffic.stats.feedback_sent < min_labels and time.monotonic() < deadline:
            time.sleep(0.5)

    def register_hotfix(self, rows: pd.DataFrame, label: str) -> str:
        """A model registered by hand, outside the pipeline: trained on shuffled labels."""
        from mlcicd_dagster.pipeline.hotfix import register_unvetted_model

        return register_unvetted_model(self.spec, self.home, rows, label)

    def deploy(self, version: str) -> None:
        from mlcicd_dagster.pipeline.deploy_ops import run_deploy_job

        outcome = run_deploy_job(self.p, self.module.defs, self._instance(), version)
        print(f"  deploy run {outcome['run_id'][:8]}: {outcome['status']}")
        self.settle()

    def monitor_until_retrain(self, max_windows: int) -> None:
        """Serve the drifted traffic window after window until the policy retrains."""
        from mlcicd_dagster.pipeline import records

        triggers = records.monitoring_dir(self.home, self.spec) / "triggers.jsonl"
        before = len(records.read_jsonl(triggers))
        for _ in range(max_windows + 1):
            _sleep_to_next_window()
            self.cycle()
            if len(records.read_jsonl(triggers)) > before:
                # the trigger exported labelled traffic as a batch: ingest it
                self.cycle()
                return
        print("  (no retraining was triggered within the demo's windows)")

    # -- lines for the summary ----------------------------------------------
    def _state(self) -> Any:
        from mlcicd_dagster.rollout.state import read_state

        return read_state(self.home.deployment_state(self.spec.model_name), self.spec.model_name)

    def serving_line(self) -> str:
        s = self._state()
        return f"v{s.stable.version} serves (strategy {s.strategy})" if s.stable else "nothing"

    def rollout_line(self) -> str:
        s = self._state()
        last = s.history[-1]["event"] if s.history else "-"
        stable = s.stable.version if s.stable else "-"
        return f"{s.phase}: v{stable} stable; last event: {last}{self._rollback_reason(s)}"

    def _rollback_reason(self, state: Any) -> str:
        """Why the last rollout rolled back (its deciding check), for a rolled-back phase."""
        if state.phase != "rolled_back":
            return ""
        from mlcicd_dagster.pipeline import records
        from mlcicd_dagster.pipeline.deploy_ops import last_rollout_path

        last = records.read_json(last_rollout_path(self.spec, self.home)) or {}
        said_no = [d for d in last.get("decisions", []) if d.get("verdict") == "rollback"]
        return f" ({said_no[-1]['check']}: {said_no[-1]['reason']})" if said_no else ""

    def retrain_line(self) -> str:
        from mlcicd_dagster.pipeline import records

        triggers = records.read_jsonl(
            records.monitoring_dir(self.home, self.spec) / "triggers.jsonl"
        )
        if not triggers:
            return f"no retrain triggered; {self.rollout_line()}"
        t = triggers[-1]
        print(f"  retraining trigger: {t['reason']}")
        return f"{t['cause']} trigger, {t.get('rows')} labelled rows -> {self.rollout_line()}"

    def traffic_line(self) -> str:
        assert self.traffic is not None
        st = self.traffic.stats
        return f"{st.answered} answered, {st.feedback_sent} labels returned, {st.failed} failed"

    def quarantine_line(self) -> str:
        from mlcicd_dagster.pipeline.status import _quarantined

        q = _quarantined(self.home, self.spec.dataset)
        return f"quarantined: {q[0]['file']}: {q[0]['summary']}" if q else "nothing quarantined"

    def gate_line(self) -> str:
        from mlcicd_dagster.pipeline import records

        cand = records.read_candidate(self.home, self.spec) or {}
        gates = records.read_gates(self.home, self.spec, str(cand.get("version")))
        failed = {  # in the order the gates recorded them: quality first
            k: v.get("summary") for k, v in gates.items() if not v.get("passed")
        }
        for name, why in failed.items():
            print(f"  {name}: {why}")
        s = self._state()
        stable = s.stable.version if s.stable else "-"
        verdict = f"rejected by {', '.join(failed)}" if failed else "passed every gate"
        return f"v{cand.get('version')} {verdict}; still serving v{stable}"

    def bisect_line(self) -> str:
        """The rejection, the data bisect's verdict, and what serves after it."""
        import json

        from mlcicd_dagster.pipeline import records

        found = sorted(
            records.model_dir(self.home, self.spec).glob("bisect-*.json"),
            key=lambda p: p.stat().st_mtime,
        )
        if not found:
            return f"no data bisect ran; {self.gate_line()}"
        rec = json.loads(found[-1].read_text())
        gates = records.read_gates(self.home, self.spec, str(rec["candidate"]))
        failed = [k for k, g in gates.items() if not g.get("passed")]
        print(f"  v{rec['candidate']} rejected by {', '.join(failed) or '?'}")
        for name in failed:
            print(f"    {name}: {gates[name].get('summary')}")
        print(f"  data bisect of v{rec['candidate']}: {rec['explanation']}")
        for trial in rec.get("trials", []):
            verdict = "passes" if trial["passed"] else "FAILS"
            print(f"    retrained with {', '.join(trial['included'])}: {verdict} on golden")
        if rec.get("verdict") != "found":
            return (
                f"v{rec['candidate']} rejected; bisect {rec.get('verdict')}; {self.rollout_line()}"
            )
        revoked = "revoked" if rec.get("revoked") else "reported"
        return (
            f"v{rec['candidate']} rejected; bisect blamed {', '.join(rec['culprits'])} "
            f"({rec['retrains']} retrains), {revoked}; {self.rollout_line()}"
        )

    def summary(self, story: Any) -> None:
        from mlcicd_dagster.pipeline.status import collect_status

        status = collect_status(self.p)
        print("=" * 78)
        print("SUMMARY")
        print(f"{'act':<34}{'outcome'}")
        for act in story.acts:
            outcome = act.outcome if len(act.outcome) <= 110 else act.outcome[:107] + "..."
            print(f"{act.title:<34}{outcome}")
        d = status["deployment"]
        print("-" * 78)
        print(
            f"Serving: v{d['stable']['version'] if d['stable'] else '-'} "
            f"(revision {d['revision']}); aliases in sync: {not d['alias_mismatches']}"
        )
        print(
            f"Landed files: {len(self.landed)}; quarantined: {len(status['quarantine'])}; "
            f"revoked: {', '.join(r['batch'] for r in status.get('revoked', [])) or 'none'}"
        )
        if self.traffic is not None:
            print(f"Traffic: {self.traffic_line()}")
        print(f"MLflow: {status['mlflow_tracking_uri']}")
        print("Look at it all: `make ui` (Dagster UI on http://127.0.0.1:3000, same home), and")
        print(f"  .venv/bin/mlflow ui --backend-store-uri {status['mlflow_tracking_uri']}")
        print("=" * 78)

    def _instance(self) -> Any:
        import dagster as dg

        from mlcicd_dagster.platform.dagster_home import ensure_dagster_home

        os.environ["DAGSTER_HOME"] = str(ensure_dagster_home(self.home))
        return dg.DagsterInstance.get()


def _sleep_to_next_window() -> None:
    """Sleep until just after the next monitoring window boundary."""
    period = MONITOR_WINDOW_MINUTES * 60
    time.sleep(period - (time.time() % period) + 1.0)
