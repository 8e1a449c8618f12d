"""The package stands alone: the built wheel in a fresh virtual environment, outside the repo.

The wheel is built from a copy of the repository without its tests, then installed with
``--no-deps --no-index`` into a new venv (no system site-packages) that holds only the
dependency closure its own metadata declares, linked from this environment
(``fresh_venv``: no network, ~15 s). Then, in scratch directories that hold no repository
file: ``dg list components`` shows the component, ``mlcicd init`` makes a pipeline from a
CSV, ``dg check defs`` loads it, ``mlcicd cycle`` trains, gates and deploys from a landed
batch, ``mlcicd serve`` and ``dg dev`` start and answer, and ``mlcicd demo`` starts on
the data shipped inside the package.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from fresh_venv import make_fresh_venv, pip_check
from tests_support import ROOT

pytestmark = [pytest.mark.slow]

LABEL = "default.payment.next.month"


def _run(cmd: list[str], *, cwd: Path, env: dict | None = None, timeout: float = 900):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("build")
    src = build / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".mlcicd*", "build", "*.egg-info", "__pycache__", "tests", "bench"
        ),
    )
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         str(src), "-w", str(build / "dist")],
        cwd=build,
    )  # fmt: skip
    (wheel,) = (build / "dist").glob("mlcicd_dagster-*.whl")
    venv = build / "venv"
    deps = make_fresh_venv(venv, wheel)
    assert "dagster-dg-cli" in deps and "mlcicd-dagster" not in deps
    check = pip_check(venv)
    assert check.returncode == 0, check.stdout + check.stderr
    return venv


def _env(venv: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        MLCICD_HOME=str(home),
        MLCICD_LANDING_SETTLE_SECONDS="0",
    )
    return env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _started(cmd: list[str], *, cwd: Path, env: dict, log: Path):
    with log.open("w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} never answered:\n{log.read_text()[-3000:]}")


def test_wheel_in_a_fresh_venv_runs_a_pipeline_of_its_own(venv, tmp_path):
    bin_ = venv / "bin"
    project = tmp_path / "project"
    project.mkdir()
    env = _env(venv, project / ".mlcicd")
    # the venv imports the installed package, not this repository
    where = _run(
        [str(bin_ / "python"), "-c", "import mlcicd_dagster; print(mlcicd_dagster.__file__)"],
        cwd=project, env=env,
    )  # fmt: skip
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout
    listed = _run([str(bin_ / "dg"), "list", "components"], cwd=project, env=env)
    assert "mlcicd_dagster.MLPipeline" in listed.stdout

    import pandas as pd

    pool = pd.read_csv(ROOT / "assets" / "credit_default" / "data" / "pool.csv.gz")
    data = tmp_path / "loans.csv"
    pool.iloc[:6000].to_csv(data, index=False)
    _run(
        [str(bin_ / "mlcicd"), "init", "loans", "--data", str(data), "--label", LABEL],
        cwd=project, env=env,
    )  # fmt: skip
    assert (project / "assets" / "loans" / "defs.yaml").is_file()
    assert (project / "definitions.py").is_file()  # init made the folder a code location
    checked = _run([str(bin_ / "dg"), "check", "defs"], cwd=project, env=env, timeout=300)
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr, checked
    landing = project / ".mlcicd" / "landing" / "loans"
    landing.mkdir(parents=True, exist_ok=True)
    pool.iloc[6000:12000].to_csv(landing / "batch-1.csv", index=False)
    out = _run([str(bin_ / "mlcicd"), "cycle", "--json"], cwd=project, env=env, timeout=900)
    report = json.loads(out.stdout[out.stdout.index("{") :])
    assert report["ok"] and "loans" in report["pipelines"], out.stdout[-3000:]
    outcomes = {r["job"]: (r["outcome"], r["failed_checks"], r["error"]) for r in report["runs"]}
    # a model that a gate rejects is the system doing its job; an error is not
    assert outcomes.get("loans_ingest", ("missing",))[0] in ("success", "rejected"), outcomes
    deployed = outcomes["loans_ingest"][0] == "success"

    port = _port()
    log = tmp_path / "serve.log"
    with _started(
        [str(bin_ / "mlcicd"), "serve", "--port", str(port)], cwd=project, env=env, log=log
    ) as proc:
        assert _wait_http(f"http://127.0.0.1:{port}/health", proc, log) == 200
        if deployed:  # /ping is 200 once the deployed model is loaded
            assert _wait_http(f"http://127.0.0.1:{port}/ping", proc, log) == 200

    port = _port()
    log = tmp_path / "dg-dev.log"
    with _started(
        [str(bin_ / "dg"), "dev", "-m", "definitions", "-p", str(port)],
        cwd=project, env=env, log=log,
    ) as proc:  # fmt: skip
        assert _wait_http(f"http://127.0.0.1:{port}/server_info", proc, log, 300) == 200


def test_demo_starts_from_the_wheel_on_its_shipped_data(venv, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _env(venv, empty / ".mlcicd")
    log = tmp_path / "demo.log"
    with _started([str(venv / "bin" / "mlcicd"), "demo"], cwd=empty, env=env, log=log) as proc:
        deadline = time.monotonic() + 600
        while "Model server:" not in log.read_text() or not list(
            (empty / ".mlcicd" / "landing").glob("*/*.csv")
        ):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)
    text = log.read_text()
    assert "shipped example pipelines" in text and "Traceback" not in text, text[-3000:]
