"""What the server has loaded, and how it follows the deployment state file.

The state file (``rollout.state``) says which versions should serve on which track. A
watcher task ``stat``s it every ``poll_interval_s``; when it changed it reads the new
document, loads any model version not already loaded (in a loader thread, off the
request path, with a warm-up call), and only then swaps the served :class:`Snapshot` in
one assignment. Requests that already picked the old snapshot finish on it; a model no
longer in the new snapshot is released once its in-flight requests are done. A model
that stays (weights changed, canary promoted to stable, stable kept as ``previous``) is
reused as is: promotion and rollback swap instantly.

If a new state cannot be applied (unreadable file, a stable model that fails to load) the
server keeps serving the last good snapshot and reports the error on ``/deployment``; the
deploy op sees ``served_revision`` lag behind ``revision``. A *spare* that cannot load
(``previous``, ``canary``, ``shadow``) does not stop the stable model from serving: the
snapshot is applied without that track, ``/deployment`` reports ``degraded`` (track ->
error) and the load is retried every ``load_retry_s``. (An unreadable state file falls
back to its last good copy in ``rollout.state.read_state``.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mlcicd_dagster.rollout.state import DeploymentState, ModelRef, read_state
from mlcicd_dagster.serving.batching import MicroBatcher
from mlcicd_dagster.serving.config import ServerConfig
from mlcicd_dagster.serving.metrics import ModelMetrics, ServerMetrics

log = logging.getLogger(__name__)

TRACKS = ("stable", "canary", "shadow", "previous")
Loader = Callable[[ModelRef, str], Any]  # (ref, tracking_uri) -> Predictor


def default_loader(ref: ModelRef, tracking_uri: str) -> Any:
    """The version as a ``Predictor``, with its ``MLmodel`` as ``predictor.mlmodel``.

    Downloaded once: the signature (MLflow-compatible parsing, ``mlflow_compat``) comes
    from the same folder the model is loaded from.
    """
    import tempfile
    from pathlib import Path

    from mlcicd_dagster.models.loading import (
        ModelLoadError,
        declared_trusted_types,
        load_predictor,
        model_name_of,
        resolve_model_version,
    )

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    pinned, resolved = resolve_model_version(ref.model_uri, tracking_uri)
    with tempfile.TemporaryDirectory(prefix="mlcicd-serve-") as tmp:
        local = Path(pinned)
        if not local.is_dir():
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(tracking_uri)
            try:
                local = Path(
                    mlflow.artifacts.download_artifacts(
                        artifact_uri=pinned, dst_path=tmp, tracking_uri=tracking_uri
                    )
                )
            except MlflowException as exc:
                raise ModelLoadError(f"cannot download {pinned}: {exc.message}") from exc
        # The pipeline's declared skops types, as load_predictor finds them by model name.
        trusted = declared_trusted_types(model_name_of(ref.model_uri))
        predictor = load_predictor(
            str(local), version=ref.version or resolved, trusted_types=trusted
        )
        predictor.mlmodel = Model.load(str(local / "MLmodel"))  # type: ignore[attr-defined]
    return predictor


def limit_model_threads(threads: int | None) -> None:
    """Cap OpenMP/BLAS (threadpoolctl) and torch intra-op threads of this process."""
    if threads is None:
        return
    import sys

    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
    except ImportError:  # pragma: no cover - comes with scikit-learn
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


class ServedModel:
    """One loaded model version with its micro-batcher and in-flight count."""

    def __init__(
        self, ref: ModelRef, predictor: Any, metrics: ServerMetrics, config: ServerConfig,
        executor: Executor | None, meta: Any = None, output_shape: tuple[int, ...] = (-1,),
    ):  # fmt: skip
        from mlcicd_dagster.serving.mlflow_compat import MlflowParser, plan_for
        from mlcicd_dagster.serving.output import positive_index, pyfunc_output_fn

        self.ref = ref
        self.version = ref.version
        self.model_uri = ref.model_uri
        self.predictor = predictor
        self.feature_names: tuple[str, ...] = tuple(predictor.feature_names)
        # How requests become this version's feature matrix (mlflow_compat): the fast
        # path's spec, and MLflow's own parsing for the rest (None: our parser).
        self.meta = meta
        self.fast, use_mlflow = plan_for(meta, self.feature_names)
        self.parser = MlflowParser(meta, self.feature_names) if use_mlflow else None
        text = set(getattr(predictor, "string_features", ()) or ())
        self.text: tuple[bool, ...] = tuple(n in text for n in self.feature_names)
        # A torch graph cannot take missing values: refused naming the column (MLflow
        # would answer NaN scores); scikit-learn's trees route them, as under MLflow.
        self.finite_only = getattr(predictor, "flavor", "") == "torch"
        self.positive = positive_index(predictor)
        self.output_shape = output_shape  # what one call answers; -1: the rows
        self.inflight = 0
        self._server_metrics = metrics
        self._metrics: dict[str, ModelMetrics] = {}
        batch_size = metrics.batch_size.labels(self.version)
        batch_seconds = metrics.batch_seconds.labels(self.version)

        def on_batch(rows: int, seconds: float) -> None:
            batch_size.observe(rows)
            batch_seconds.observe(seconds)

        self.batcher = MicroBatcher(
            pyfunc_output_fn(predictor),
            executor=executor,
            max_batch_rows=config.max_batch_rows,
            max_wait_s=config.max_wait_ms / 1000.0,
            on_batch=on_batch,
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.version, self.model_uri)

    def metrics(self, track: str) -> ModelMetrics:
        m = self._metrics.get(track)
        if m is None:
            m = self._metrics[track] = self._server_metrics.for_model(self.version, track)
        return m

    def describe(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model_uri": self.model_uri,
            "run_id": self.ref.run_id,
            "feature_names": list(self.feature_names),
            "inflight": self.inflight,
        }


@dataclass
class Snapshot:
    """What serves right now; replaced as a whole, never edited."""

    revision: int
    state: DeploymentState
    tracks: dict[str, ServedModel] = field(default_factory=dict)
    canary_weight: float = 0.0
    shadow_weight: float = 0.0
    loaded_at: str = ""

    @property
    def stable(self) -> ServedModel | None:
        return self.tracks.get("stable")

    @property
    def canary(self) -> ServedModel | None:
        return self.tracks.get("canary")

    @property
    def shadow(self) -> ServedModel | None:
        return self.tracks.get("shadow")


class DeploymentFollower:
    """Loads what the deployment state says and swaps it in without downtime."""

    def __init__(
        self,
        state_path: Path,
        model_name: str,
        tracking_uri: str,
        config: ServerConfig,
        metrics: ServerMetrics,
        scoring_executor: Executor | None,
        loader: Loader | None = None,
    ):
        self.state_path = Path(state_path)
        self.model_name = model_name
        self.tracking_uri = tracking_uri
        self.config = config
        self.metrics = metrics
        self.scoring_executor = scoring_executor
        self.loader = loader or default_loader
        self.snapshot: Snapshot | None = None
        self.state: DeploymentState | None = None  # the latest document read
        self.load_error: str | None = None
        self.degraded: dict[str, str] = {}  # spare track -> why it is not loaded
        self._signature: tuple[int, int, int] | None = None
        self._failed_at = 0.0
        self._attempted = False
        self._load_executor = ThreadPoolExecutor(1, thread_name_prefix="mlcicd-model-loader")
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        snap = self.snapshot
        if snap is not None:
            for model in {id(m): m for m in snap.tracks.values()}.values():
                await model.batcher.close()
        self._load_executor.shutdown(wait=False, cancel_futures=True)

    @property
    def ready(self) -> bool:
        return self.snapshot is not None and self.snapshot.stable is not None

    # -- watching ----------------------------------------------------------------
    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.state_path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    async def _watch(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the watcher die; the error is on /deployment
                log.exception("deployment watcher failed")
            await asyncio.sleep(self.config.poll_interval_s)

    async def refresh(self, force: bool = False) -> None:
        """Apply the state file if it changed since the last successful apply."""
        async with self._lock:
            sig = self._stat()
            retry = (
                self.load_error is not None or bool(self.degraded)
            ) and time.monotonic() - self._failed_at >= self.config.load_retry_s
            if not force and self._attempted and sig == self._signature and not retry:
                return
            self._attempted = True
            try:
                state = read_state(self.state_path, self.model_name)
            except Exception as exc:
                self._fail(f"cannot read deployment state: {exc}", sig)
                return
            self.state = state
            current = self.snapshot
            if (
                current is not None
                and not self.degraded
                and current.revision == state.revision
                and current.state.to_dict() == state.to_dict()
            ):
                self._signature = sig
                self.load_error = None
                return
            try:
                new = await self._build(state)
            except Exception as exc:
                self.metrics.load_failures.inc()
                self._fail(f"cannot load models of revision {state.revision}: {exc}", sig)
                return
            self._swap(new)
            # Long-lived objects (libraries, models) leave the collector's view: full
            # collections stay short and do not stall requests.
            gc.collect()
            gc.freeze()
            self._signature = sig
            self.load_error = None

    def _fail(self, message: str, sig: tuple[int, int, int] | None) -> None:
        if message != self.load_error:
            log.error("%s", message)
        self.load_error = message
        self._failed_at = time.monotonic()
        self._signature = sig

    async def _build(self, state: DeploymentState) -> Snapshot:
        loaded: dict[tuple[str, str], ServedModel] = {}
        if self.snapshot is not None:
            for m in self.snapshot.tracks.values():
                loaded[m.key] = m
        loop = asyncio.get_running_loop()
        tracks: dict[str, ServedModel] = {}
        reused = {id(m) for m in loaded.values()}
        degraded: dict[str, str] = {}
        try:
            await self._load_tracks(state, loaded, tracks, loop, degraded)
        except BaseException:  # release what this attempt loaded; the old snapshot stays
            for model in tracks.values():
                if id(model) not in reused:
                    await model.batcher.close()
            raise
        if degraded:
            self._failed_at = time.monotonic()
        self.degraded = degraded
        return Snapshot(
            revision=state.revision,
            state=state,
            tracks=tracks,
            canary_weight=state.canary.weight if state.canary and "canary" in tracks else 0.0,
            shadow_weight=state.shadow.weight if state.shadow and "shadow" in tracks else 0.0,
            loaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    async def _load_tracks(
        self,
        state: DeploymentState,
        loaded: dict[tuple[str, str], ServedModel],
        tracks: dict[str, ServedModel],
        loop: asyncio.AbstractEventLoop,
        degraded: dict[str, str],
    ) -> None:
        for track in TRACKS:
            ref: ModelRef | None = getattr(state, track)
            if ref is None:
                continue
            key = (ref.version, ref.model_uri)
            model = loaded.get(key)
            if model is None:
                try:
                    predictor, meta, shape = await loop.run_in_executor(
                        self._load_executor, self._load_and_warm, ref
                    )
                except Exception as exc:
                    if track == "stable":
                        raise
                    self.metrics.load_failures.inc()
                    degraded[track] = f"v{ref.version} cannot load: {type(exc).__name__}: {exc}"
                    log.error("serving without the %s track: %s", track, degraded[track])
                    continue
                model = ServedModel(
                    ref, predictor, self.metrics, self.config, self.scoring_executor, meta,
                    shape,
                )  # fmt: skip
                model.batcher.start()
                loaded[key] = model
            tracks[track] = model

    def _load_and_warm(self, ref: ModelRef) -> tuple[Any, Any, tuple[int, ...]]:
        from mlcicd_dagster.serving.output import pyfunc_output_fn, warm_matrix

        predictor = self.loader(ref, self.tracking_uri)
        meta = self._load_meta(ref, predictor)
        limit_model_threads(self.config.model_threads)
        names = list(predictor.feature_names)
        if not names:
            raise ValueError(f"model {ref.model_uri} has no feature names")
        shape: tuple[int, ...] = (-1,)
        try:  # the first call of a model is slow (lazy init); pay it here, not on a request
            out = np.asarray(pyfunc_output_fn(predictor)(warm_matrix(predictor)))
            shape = (-1, *out.shape[1:])
        except Exception:
            log.warning("warm-up call of %s failed", ref.model_uri, exc_info=True)
        return predictor, meta, shape

    def _load_meta(self, ref: ModelRef, predictor: Any) -> Any:
        """The version's MLmodel (signature) for MLflow-compatible parsing; None if unreadable
        (the version is then served with our own parser, and the reason is logged)."""
        # MLflow's scoring code parses what the fast path does not: import it now, not on
        # the first such request (seconds of imports on a busy machine).
        import mlflow.pyfunc.scoring_server  # noqa: F401

        from mlcicd_dagster.serving.mlflow_compat import load_meta

        if (meta := getattr(predictor, "mlmodel", None)) is not None:
            return meta  # read by the loader from the folder it loaded the model from
        try:
            return load_meta(ref.model_uri, self.tracking_uri)
        except Exception:
            log.warning("cannot read the MLmodel of %s", ref.model_uri, exc_info=True)
            return None

    def _swap(self, new: Snapshot) -> None:
        old = self.snapshot
        self.snapshot = new  # the swap: one reference assignment
        self.metrics.revision.set(new.revision)
        old_pairs = {(m.version, t) for t, m in old.tracks.items()} if old else set()
        new_pairs = {(m.version, t) for t, m in new.tracks.items()}
        for version, track in old_pairs - new_pairs:
            try:
                self.metrics.loaded.remove(version, track)
            except KeyError:
                pass
        for version, track in new_pairs:
            self.metrics.loaded.labels(version, track).set(1)
        if old is None:
            return
        keep = {id(m) for m in new.tracks.values()}
        for model in {id(m): m for m in old.tracks.values()}.values():
            if id(model) not in keep:
                task = asyncio.get_running_loop().create_task(self._retire(model))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
        log.info("serving revision %s: %s", new.revision, new.state.serving_versions())

    async def _retire(self, model: ServedModel) -> None:
        """Release ``model`` once the requests already on it are answered."""
        deadline = time.monotonic() + self.config.drain_timeout_s
        while (model.inflight or not model.batcher.idle) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await model.batcher.close()
        model.predictor = None

    # -- reporting ---------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The deployment state document plus what this server actually serves."""
        state = self.state or DeploymentState(model_name=self.model_name)
        doc = state.to_dict()
        snap = self.snapshot
        doc["served_revision"] = snap.revision if snap else None
        doc["loaded"] = {t: m.describe() for t, m in snap.tracks.items()} if snap else {}
        doc["served_weights"] = (
            {"canary": snap.canary_weight, "shadow": snap.shadow_weight} if snap else {}
        )
        doc["loaded_at"] = snap.loaded_at if snap else None
        doc["ready"] = self.ready
        doc["load_error"] = self.load_error
        doc["degraded"] = dict(self.degraded)
        return doc
