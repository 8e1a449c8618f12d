"""`mlcicd ui`'s supervisor: a signal stops every child, nothing outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

SUPERVISOR = textwrap.dedent(
    r"""
    import sys
    from mlcicd_dagster.platform.supervise import supervise
    child = [sys.executable, "-c", "import os, time; os.write(1, b'up\\n'); time.sleep(600)"]
    stubborn = [sys.executable, "-c",
                "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "os.write(1, b'up\\n'); time.sleep(600)"]
    sys.exit(supervise({"a": child, "b": stubborn}, grace_s=2.0))
    """
)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is gone for our purpose
        return fh.read().split()[2] != "Z"


def test_sigterm_stops_every_child_even_a_stubborn_one():
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR], stdout=subprocess.PIPE, text=True)
    assert [proc.stdout.readline().strip() for _ in range(2)] == ["up", "up"]
    kids = _children(proc.pid)
    assert len(kids) == 2
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 10
    assert not [k for k in kids if _alive(k)]
