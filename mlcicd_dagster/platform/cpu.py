"""How many CPU threads a step may use when it shares the machine with its own helpers.

The local environment runs a whole run in one process and starts helper processes
beside it (the infra-validation worker imports while the model trains, its fresh
process loads the candidate while the other gates run). OpenMP thread teams are the
wrong neighbours for that: when one thread of a team is descheduled, the others wait
for it at every barrier. Measured on the 2-core machine (HistGradientBoosting, 14,000
rows): fit 0.45 s on one thread, 0.55 s on two threads alone, 1.5-1.9 s on two threads
beside one busy process; a 3,000-row prediction 0.02 s on one thread, 0.15-0.48 s on
two beside the fresh process. So a step leaves one core to the helper it started.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def cores_beside_helper() -> int:
    """Threads for work that runs while one helper process keeps a core busy."""
    return max(1, available_cores() - 1)


@contextlib.contextmanager
def openmp_threads(limit: int | None) -> Iterator[None]:
    """At most ``limit`` OpenMP threads inside the block (scikit-learn's and torch's
    OpenMP runtimes alike, through threadpoolctl); the previous limits come back after.
    ``None`` leaves the limits as they are."""
    if not limit:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, int(limit)), user_api="openmp"):
        yield
