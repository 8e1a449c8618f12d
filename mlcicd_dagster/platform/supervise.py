"""Run child processes together and stop them all together (``mlcicd ui``).

``supervise`` starts each command, waits, and on SIGTERM/SIGINT (or when one child
exits) sends SIGTERM to every child still running, waits up to ``grace_s`` for them
to finish (``dagster dev`` stops its webserver and daemon on SIGTERM), then kills
what is left: nothing outlives the command that started it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

GRACE_S = 30.0
POLL_S = 0.2


def supervise(
    commands: Mapping[str, Sequence[str]],
    env: Mapping[str, str] | None = None,
    *,
    grace_s: float = GRACE_S,
) -> int:
    """Run ``commands`` (name -> argv) until a signal or the first exit; the exit code:
    128 + signal number when stopped by a signal, else the first child's own code."""
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:  # noqa: ARG001
        received.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, cmd in commands.items():
            children[name] = subprocess.Popen(list(cmd), env=dict(env) if env else None)
        code = None
        while not received and code is None:
            for proc in children.values():
                if proc.poll() is not None:
                    code = proc.returncode
                    break
            time.sleep(POLL_S)
    finally:
        stop_all(children.values(), grace_s)
        for s, h in old.items():
            signal.signal(s, h)
    return 128 + received[0] if received else int(code or 0)


def stop_all(children: object, grace_s: float = GRACE_S) -> None:
    procs = [p for p in children if p.poll() is None]  # type: ignore[attr-defined]
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
