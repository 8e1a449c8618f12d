"""Inside the ``infra_validation`` gate's worker process (``python -m`` this module).

The worker imports what the model server imports, then serves each job (a
:class:`~mlcicd_dagster.models.infra_worker.Job`, one JSON line on stdin) in a child
forked from that clean state: the child loads the registered artifact with the server's
loader and answers the rows the way ``/invocations`` does. The pool that starts and
feeds workers is :mod:`mlcicd_dagster.models.infra_worker` (see there for why).
"""

from __future__ import annotations

import gc
import json
import os
import sys

from mlcicd_dagster.models.infra_worker import Job


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

    from mlcicd_dagster.models.predictor import score_fn
    from mlcicd_dagster.models.trust import declare_trusted_types, model_name_of
    from mlcicd_dagster.rollout.state import ModelRef
    from mlcicd_dagster.serving.config import ServerConfig
    from mlcicd_dagster.serving.deployment import default_loader
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
