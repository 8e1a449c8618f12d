"""The demo's story as one end-to-end test: `mlcicd demo` on a fresh home, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import ROOT

DEMO_TIMEOUT_S = 900  # the story waits for a few one-minute monitoring windows
# pytest-timeout counts the module fixture (the whole demo) against the first test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(DEMO_TIMEOUT_S + 300)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo") / "home"
    env = {**os.environ, "MLCICD_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    exe = str(Path(sys.executable).with_name("mlcicd"))
    out = subprocess.run(
        [exe, "demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=DEMO_TIMEOUT_S
    )
    status = subprocess.run(
        [exe, "status", "--json", "--pipeline", "credit_default"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out, json.loads(status.stdout), home


def test_demo_tells_the_whole_story_and_exits_zero(demo):
    out, _, _ = demo
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    text = out.stdout
    summary = text[text.index("SUMMARY") :]
    assert "first batch -> first champion     v1 serves" in summary
    assert "quarantined: 2005-06 statements (export v2).csv" in summary
    assert "promoted: v2 stable" in summary  # the good canary
    assert "rolled_back: v2 stable" in summary  # the hand-registered hotfix, and why
    bad = summary[summary.index("bad canary") :].splitlines()[0]
    assert "(canary_analysis: canary worse on" in bad, bad
    assert "drift trigger," in summary and "retraining trigger: drift sustained" in text
    # the poisoned batch: rejected on the golden set, found by bisect, revoked; then promotion
    rejected = re.search(r"v\d+ rejected by ([^\n]*)", text)
    assert rejected and "non_inferiority" in rejected.group(1), text[-6000:]
    blamed = text[text.index("bisect blamed 2005-08_statements.csv (") :].splitlines()[0]
    assert "retrains), revoked; promoted:" in blamed, blamed
    assert "following good batch" in summary
    following = summary[summary.index("following good batch") :].splitlines()[0]
    assert "promoted:" in following, following
    assert "make ui" in summary
    # act 9: the other tasks through the same loop
    assert "digits v1 serves (k=10): accuracy" in summary
    assert "diabetes v1 serves: live MAE" in summary
    # canary promotion and rollback happened under live traffic without one failed request
    assert ", 0 failed" in summary[summary.index("Traffic:") :]


def test_after_the_demo_status_is_consistent(demo):
    _, status, home = demo
    d = status["deployment"]
    assert d["stable"] is not None and d["canary"] is None
    assert d["alias_mismatches"] == []
    assert status["mlflow_tracking_uri"] == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    assert len(status["quarantine"]) >= 1
    (revoked,) = status["revoked"]
    assert revoked["batch"] == "2005-08_statements.csv" and revoked["by"] == "data bisect"
    triggers = status["monitoring"]["retraining_triggers"]
    assert triggers and triggers[-1]["cause"] == "drift" and triggers[-1]["reason"]
    # the landing zone was never edited: every landed file is still there
    assert len(list((home / "landing" / "credit_default").glob("*.*"))) >= 4


def test_demo_refuses_a_home_it_did_not_make(tmp_path):
    from assets.credit_default.story import reset_home

    foreign = tmp_path / "prod"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="did not make"):
        reset_home(foreign)
    assert (foreign / "precious.txt").exists()
    # a demo home is reset, so a second demo starts clean
    demo_home = tmp_path / "demo"
    reset_home(demo_home)
    (demo_home / "state").write_text("old run")
    reset_home(demo_home)
    assert not (demo_home / "state").exists()
