"""The lease lock with real processes: one writer at a time, a dead holder never jams it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from mlcicd_dagster.platform.lease import Lease, LeaseBusy, read_holder

WRITERS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mlcicd_dagster.rollout import state as st

    path, n = Path(sys.argv[1]), int(sys.argv[2])
    for _ in range(n):
        # read-modify-write of the deployment state; lost updates would show in revision
        st.transition(path, "m", "bump", lambda s: {"strategy": "none"})
    """
)


def test_concurrent_state_transitions_never_lose_an_update(tmp_path):
    path = tmp_path / "deployment" / "m.json"
    procs = [subprocess.Popen([sys.executable, "-c", WRITERS, str(path), "15"]) for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0, 0]
    doc = json.loads(path.read_text())
    assert doc["revision"] == 60  # 4 processes x 15 transitions, each one whole
    assert json.loads((path.parent / "m.json.last-good").read_text())["revision"] == 60


HOLDER = textwrap.dedent(
    """
    import sys, time
    from mlcicd_dagster.platform.lease import Lease
    lease = Lease(sys.argv[1], owner="holder")
    lease.acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def test_a_killed_holder_frees_the_lease_at_once(tmp_path):
    path = tmp_path / "x.lease"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    assert read_holder(path)["pid"] == proc.pid
    with pytest.raises(LeaseBusy, match=f"pid {proc.pid}"):
        Lease(path, wait_s=0.3).acquire()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    t0 = time.monotonic()
    with Lease(path, wait_s=5):
        assert read_holder(path)["pid"] == os.getpid()
    assert time.monotonic() - t0 < 1.0  # no waiting for the expiry
    assert read_holder(path) is None


def test_another_hosts_lease_holds_until_it_expires(tmp_path):
    path = tmp_path / "y.lease"
    other = {"owner": "x", "pid": 1, "host": socket.gethostname() + "-other", "token": "t"}
    path.write_text(json.dumps({**other, "expires_at": time.time() + 60}))
    assert not Lease(path).try_acquire()
    path.write_text(json.dumps({**other, "expires_at": time.time() - 1}))
    lease = Lease(path)
    assert lease.try_acquire()
    assert lease.try_acquire()  # re-entrant in this process
    lease.release()
    assert read_holder(path) is not None  # still held once
    lease.release()
    assert not path.exists()


def test_a_holder_renews_its_lease_while_it_works(tmp_path):
    path = tmp_path / "z.lease"
    with Lease(path, ttl_s=0.6):
        first = json.loads(path.read_text())["expires_at"]
        time.sleep(0.9)
        assert json.loads(path.read_text())["expires_at"] > first
        assert read_holder(path) is not None
