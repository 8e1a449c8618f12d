"""The fresh process behind the ``infra_validation`` gate, kept warm between jobs.

The gate must show that the *registered artifact*, loaded by the serving code in a
process that never held the trained model, answers requests exactly as the in-memory
model did. A new interpreter for that costs ~5 s of imports on a 2-core machine
(mlflow and its SQL store, scikit-learn, skops, whose default trusted-type list walks
every scikit-learn module and so imports torch): more than training the model.

So the fresh process comes in two parts, in the manner of multiprocessing's forkserver:

* the **worker** (``python -m mlcicd_dagster.serving.infra_answer``) imports what the
  model server imports, and nothing model-specific, then waits for jobs on stdin, one
  JSON line each;
* each job is served by a **child forked from that clean state**: a process that has
  never seen a model. It opens its own MLflow connection, loads the artifact with the
  server's loader (``serving.deployment.default_loader`` -> ``load_predictor``) and
  answers the job's rows the way the server answers ``/invocations``: a JSON body
  decoded by orjson, parsed by ``serving.payload.parse_body``, turned into the feature
  matrix and scored by ``models.predictor.score_fn``. Its answers go to files next to
  ``Job.out``; its stdout and stderr to ``<out>.log``. The worker replies one JSON line
  per job: the child's exit code.

The worker outlives its jobs: a long-lived process (``mlcicd cycle`` running several
jobs, the demo, a test session) pays the imports once. It exits when its stdin closes,
that is when the process that started it exits. The pipeline starts it at the run's
first step (``prewarm``) so that in a fresh run process the imports overlap the data
gate and training.

Kept explicit rather than ``multiprocessing``'s forkserver because the gate hands the
job over without blocking while the worker may still be importing (the other gates run
meanwhile), reads the child's log to say why a load failed, and must not share a
process-wide forkserver (and its preload list) with anything else in the Dagster run.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass

#: The worker's code runs the serving code, so it lives in ``serving`` (which may import
#: ``models``); this module only starts it by name, so ``models`` never imports ``serving``.
WORKER_MODULE = "mlcicd_dagster.serving.infra_answer"

SINGLE_ROW_REQUESTS = 20
"""Single-row requests answered by the child besides the one batch request: single
rows take the server's small-batch path (one OpenMP thread), which must agree too."""


@dataclass(frozen=True)
class Job:
    """One artifact to load and answer. Paths are local files both processes can see."""

    model_uri: str
    tracking_uri: str
    rows_path: str  # Parquet file of feature rows (the request bodies are built from it)
    out: str  # prefix of the answer files: <out>.batch.npy, .single.npy, .json, .log
    single_rows: int = SINGLE_ROW_REQUESTS
    trusted_types: tuple[str, ...] = ()  # the skops types the model's pipeline declared


class WorkerGone(RuntimeError):
    """The worker process died (or closed its stdout) before replying."""


class Worker:
    """One worker process and its pipes. Not thread-safe: one job at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # each child logs to its own file
            # Its own process group: a timeout kills the worker and a hung child together.
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, job: Job) -> None:
        """Hand a job over; returns at once even while the worker is still importing."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(asdict(job)).encode() + b"\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float) -> int | None:
        """The exit code of the job's child, or None when ``timeout`` passed (the worker and
        its child are then killed). Raises ``WorkerGone`` if the worker died."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.kill()
            return None
        line = self.proc.stdout.readline()
        if not line:
            self.kill()
            raise WorkerGone(f"infra-validation worker exited with code {self.proc.wait()}")
        return int(json.loads(line)["exit"])

    def kill(self) -> None:
        if self.alive:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self._close_pipes()

    def close(self) -> None:
        """Close stdin: the worker finishes the job in hand, if any, and exits."""
        self._close_pipes()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                try:
                    pipe.close()
                except OSError:
                    pass


# ---------------------------------------------------------------------------
# the one idle worker of this process
# ---------------------------------------------------------------------------
_IDLE: Worker | None = None
_LOCK = threading.Lock()


def prewarm() -> None:
    """Make sure an idle worker exists (started now if needed) for the next job."""
    global _IDLE
    with _LOCK:
        if _IDLE is None or not _IDLE.alive:
            _IDLE = Worker()


def take() -> Worker:
    """The idle worker (started now if there is none); give it back with ``release``."""
    global _IDLE
    with _LOCK:
        worker, _IDLE = _IDLE, None
    return worker if worker is not None and worker.alive else Worker()


def release(worker: Worker) -> None:
    """Keep ``worker`` as the idle one for the next job, or close it if one is idle."""
    global _IDLE
    if not worker.alive:
        return
    with _LOCK:
        keep = _IDLE is None or not _IDLE.alive
        if keep:
            _IDLE = worker
    if not keep:
        worker.close()


def idle_worker() -> Worker | None:
    """The idle worker, if any (for tests and diagnostics)."""
    return _IDLE
