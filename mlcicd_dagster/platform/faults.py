"""Kill points for the fault tests: ``MLCICD_FAULT=<phase>`` makes this process die there.

``point("training")`` costs one comparison when the variable is unset (it is read once,
at import). When it names the phase, the process sends itself SIGKILL at that point:
no ``finally`` runs, no file is closed, exactly what a ``kill -9``, an OOM kill or a
lost node does. The fault tests in ``tests/faults/`` set it on real ``mlcicd cycle``
processes to prove that the next tick heals whatever such a death leaves behind.

Phases: ``training``, ``gates`` (model step and gate checks), ``staging`` (candidate
loaded, before its smoke test), ``canary_step`` (a step decided, before it is
recorded), ``promotion`` and ``rollback`` (state written, before the registry aliases
follow it).
"""

from __future__ import annotations

import os
import signal

from mlcicd_dagster import settings

ENV = "MLCICD_FAULT"
_PHASE = settings.get(ENV)


def point(phase: str) -> None:
    if _PHASE is not None and _PHASE == phase:
        os.kill(os.getpid(), signal.SIGKILL)
