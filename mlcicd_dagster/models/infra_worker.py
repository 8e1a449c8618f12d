"""The fresh process behind the ``infra_validation`` gate, kept warm between jobs.

The gate must show that the *registered artifact*, loaded by the serving code in a
process that never held the trained model, answers requests exactly as the in-memory
model did. A new interpreter for that costs ~5 s of imports on a 2-core machine
(mlflow and its SQL store, scikit-learn, skops, whose default trusted-type list walks
every scikit-learn module and so imports torch): more than training the model.

So the fresh process comes in two parts, in the manner of multiprocessing's forkserver:

* the **worker** (``python -m mlcicd_dagster.models.infra_worker``) imports what the
  model server imports, and nothing model-specific, then waits for jobs on stdin, one
  JSON line each;
* each job is served by a **child forked from that clean state**: a process that has
  never seen a model. It opens its own MLflow connection, loads the artifact with the
  server's loader (``serving.deployment.default_loader`` -> ``load_predictor``) and
  answers the job's rows the way the server answers ``/invocations``: a JSON body
  decoded by orjson, parsed by ``serving.payload.parse_body``, turned into the feature
  matrix and scored by ``serving.deployment.score_fn``. Its answers go to files next to
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

import gc
import json
import os
import select
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass

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
            [sys.executable, "-m", __name__],
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


# ---------------------------------------------------------------------------
# inside the worker process
# ---------------------------------------------------------------------------
def _preload() -> None:
    """Import what answering a job needs, so that forked children start with it loaded.

    Exactly what the model server imports to load and score a model (plus MLflow's SQL
    stores, which its client imports on first use): no model, no connection, no thread
    pool is created here.
    """
    import mlflow.artifacts  # noqa: F401
    import mlflow.models  # noqa: F401
    import mlflow.sklearn  # noqa: F401
    import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import orjson  # noqa: F401
    import pandas  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import skops.io  # noqa: F401

    import mlcicd_dagster.models.loading  # noqa: F401
    import mlcicd_dagster.serving.deployment  # noqa: F401
    import mlcicd_dagster.serving.payload  # noqa: F401


def answer(job: Job) -> None:
    """Load the artifact as the server does and answer the rows as ``/invocations`` does."""
    import numpy as np
    import orjson
    import pandas as pd

    from mlcicd_dagster.models.trust import declare_trusted_types, model_name_of
    from mlcicd_dagster.rollout.state import ModelRef
    from mlcicd_dagster.serving.config import ServerConfig
    from mlcicd_dagster.serving.deployment import default_loader, score_fn
    from mlcicd_dagster.serving.mlflow_compat import MlflowParser, plan_for
    from mlcicd_dagster.serving.payload import fast_matrix, parse_body

    # As a server started from the pipeline's code location knows them (`mlcicd serve`)
    declare_trusted_types(model_name_of(job.model_uri) or "", job.trusted_types)
    predictor = default_loader(ModelRef(version="", model_uri=job.model_uri), job.tracking_uri)
    score = score_fn(predictor)
    names = list(predictor.feature_names)
    max_rows = ServerConfig().max_rows_per_request
    # the model's columns in its order: MLflow takes a tensor (torch) model's by position
    rows = pd.read_parquet(job.rows_path)[names]

    # The request body becomes the feature matrix as the server makes it (serving.app):
    # the fast path, else MLflow's parsing for a model with a signature, else our parser.
    meta = getattr(predictor, "mlmodel", None)
    fast, use_mlflow = plan_for(meta, names)
    parser = MlflowParser(meta, names) if use_mlflow else None

    def matrix(body: bytes) -> np.ndarray:
        obj = orjson.loads(body)
        out = fast_matrix(obj, fast) if fast is not None else None
        if out is not None:
            return out
        if parser is not None:
            parsed = parser.parse(body, "application/json")
            if not isinstance(parsed, np.ndarray):
                raise RuntimeError(f"the server would answer {parsed}")
            return parsed
        return parse_body(obj, max_rows).matrix(names)

    def request(frame: pd.DataFrame) -> np.ndarray:
        data = frame.astype(object).where(frame.notna(), None).values.tolist()
        body = orjson.dumps({"dataframe_split": {"columns": list(frame.columns), "data": data}})
        return np.asarray(score(matrix(body)))

    batch = request(rows)
    single = np.array([request(rows.iloc[[i]])[0] for i in range(min(job.single_rows, len(rows)))])
    np.save(job.out + ".batch.npy", batch)
    np.save(job.out + ".single.npy", single)
    with open(job.out + ".json", "w") as f:
        json.dump(
            {
                "version": predictor.version,
                "features": names,
                "flavor": getattr(predictor, "flavor", ""),
                "pid": os.getpid(),
            },
            f,
        )


def _child(job: Job) -> int:
    """Runs in the forked child: answer the job with stdout/stderr in ``<out>.log``."""
    log = os.open(job.out + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    try:
        answer(job)
        return 0
    except BaseException:  # noqa: BLE001 - reported through the log and the exit code
        import traceback

        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _serve_one(job: Job) -> int:
    pid = os.fork()  # POSIX only, as the rest of the local environment
    if pid == 0:
        gc.enable()
        os._exit(_child(job))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> None:
    # CPython's advice for a process that forks workers: no collection in the parent,
    # its objects frozen out of the collector before forking (a child's collections then
    # neither scan nor copy-on-write the preloaded modules), collection on in the child.
    gc.disable()
    try:
        _preload()
    except Exception:  # noqa: BLE001 - each child imports again and logs the real error
        pass
    gc.freeze()
    out = sys.stdout
    for line in sys.stdin:  # ends when the parent closes the pipe (or exits)
        if not line.strip():
            continue
        code = _serve_one(Job(**json.loads(line)))
        out.write(json.dumps({"exit": code}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
