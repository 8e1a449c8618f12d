"""The model server's HTTP application (Starlette; PRODUCT.md "Model server HTTP API").

Plain Starlette routes rather than FastAPI models: ``/invocations`` is the hot path and
validates the body itself (``payload``), decodes JSON with orjson and never touches
pandas, so a single-row request costs tens of microseconds plus its share of a batched
model call.

Routes
  POST /invocations  MLflow scoring protocol -> {"predictions": [P(positive), ...]}
                     headers: X-Request-Id (one per row, comma-separated), X-Model-Version,
                     X-Track. Request headers: X-Routing-Key (sticky routing), X-Track
                     (smoke tests: score on exactly that track; not logged).
  POST /feedback     {"request_id", "label"} or a list of them; 404 names unknown ids
  GET  /health       alive
  GET  /ready        200 when a stable model is loaded, else 503
  GET  /metrics      Prometheus text format
  GET  /deployment   deployment state document + what is loaded (``served_revision``...)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlcicd_dagster.models.tasks import one_score_per_row
from mlcicd_dagster.platform.atomic import atomic_write_json
from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.serving import routing
from mlcicd_dagster.serving.config import ServerConfig
from mlcicd_dagster.serving.deployment import TRACKS, DeploymentFollower, Loader, ServedModel
from mlcicd_dagster.serving.ids import IdMinter, RecentIds, ids_on_disk
from mlcicd_dagster.serving.logs import (
    FeedbackEntry,
    PredictionEntry,
    feedback_log,
    prediction_log,
)
from mlcicd_dagster.serving.metrics import ServerMetrics
from mlcicd_dagster.serving.payload import PayloadError, Table, parse_body

log = logging.getLogger(__name__)

JSON = "application/json"
MAX_FEEDBACK_ITEMS = 10_000
_perf = time.perf_counter


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type=JSON
    )


def error_response(status: int, message: str, **extra: Any) -> Response:
    return json_response({"error": message, "status": status, **extra}, status)


@dataclass
class ServerAddress:
    host: str
    port: int


class ModelServer:
    """State of one running server: deployment follower, logs, metrics, ids."""

    def __init__(
        self,
        home: Home,
        model_name: str,
        config: ServerConfig | None = None,
        loader: Loader | None = None,
        address: ServerAddress | None = None,
    ):
        self.home = home
        self.model_name = model_name
        self.config = config or ServerConfig()
        self.address = address
        self.metrics = ServerMetrics()
        self.ids = IdMinter()
        self.recent = RecentIds(self.config.recent_ids)
        from concurrent.futures import ThreadPoolExecutor

        self._executor = (
            ThreadPoolExecutor(self.config.scoring_threads, thread_name_prefix="mlcicd-score")
            if self.config.scoring_threads > 0
            else None
        )
        self.deployment = DeploymentFollower(
            home.deployment_state(model_name),
            model_name,
            home.tracking_uri,
            self.config,
            self.metrics,
            self._executor,
            loader,
        )
        m = self.metrics
        self.predlog = prediction_log(
            home.predictions(model_name),
            flush_interval_s=self.config.flush_interval_s,
            max_pending_rows=self.config.max_pending_log_rows,
            on_written=m.log_rows_written.labels("predictions").inc,
            on_dropped=m.log_rows_dropped.labels("predictions").inc,
        )
        self.feedlog = feedback_log(
            home.feedback(model_name),
            flush_interval_s=self.config.flush_interval_s,
            max_pending_rows=self.config.max_pending_log_rows,
            on_written=m.log_rows_written.labels("feedback").inc,
            on_dropped=m.log_rows_dropped.labels("feedback").inc,
        )
        self._shadow_tasks: set[asyncio.Task[None]] = set()
        self.started_at: str | None = None

    # -- lifecycle ------------------------------------------------------------------
    async def startup(self) -> None:
        self.started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.predlog.start()
        self.feedlog.start()
        self.deployment.start()  # first load happens in the background; /ready says when
        self._write_server_file()

    async def shutdown(self) -> None:
        await self.deployment.stop()
        if self._shadow_tasks:
            await asyncio.wait(self._shadow_tasks, timeout=self.config.drain_timeout_s)
        await asyncio.to_thread(self.predlog.close)
        await asyncio.to_thread(self.feedlog.close)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._remove_server_file()

    def _write_server_file(self) -> None:
        if self.address is None:
            return
        atomic_write_json(
            self.home.server_file,
            {
                "host": self.address.host,
                "port": self.address.port,
                "url": f"http://{self.address.host}:{self.address.port}",
                "pid": os.getpid(),
                "model_name": self.model_name,
                "started_at": self.started_at,
            },
        )

    def _remove_server_file(self) -> None:
        """Remove the server file only if it is still ours (another server may have started)."""
        if self.address is None:
            return
        path = self.home.server_file
        try:
            doc = orjson.loads(Path(path).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return
        if doc.get("pid") == os.getpid() and doc.get("port") == self.address.port:
            path.unlink(missing_ok=True)

    # -- helpers -----------------------------------------------------------------------
    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise PayloadError(f"invalid Content-Length {declared!r}") from None
            if size > limit:
                raise PayloadError(f"body of {size} bytes exceeds the {limit} byte limit", 413)
        chunks = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadError(f"body exceeds the {limit} byte limit", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _read_json(self, request: Request) -> Any:
        ctype = request.headers.get("content-type")
        if ctype and not ctype.lower().startswith(JSON):
            raise PayloadError(
                f"unsupported content type {ctype!r}; send application/json", status=415
            )
        body = await self._read_body(request)
        if not body:
            raise PayloadError("empty body; expected a JSON object")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc) or "recursion" in str(exc).lower():
                raise PayloadError(f"JSON nested too deeply: {exc}") from None
            raise PayloadError(f"malformed JSON: {exc}") from None

    # -- /invocations --------------------------------------------------------------------
    async def invocations(self, request: Request) -> Response:
        t0 = _perf()
        snap = self.deployment.snapshot
        forced = request.headers.get("x-track") or ""
        # A named track answers even before anything is stable: blue-green smoke-tests
        # the first green model on its weight-0 track before switching traffic to it.
        track_only = bool(forced) and snap is not None and snap.tracks.get(forced) is not None
        if snap is None or (snap.stable is None and not track_only):
            self.metrics.errors.labels("", "none", "unavailable").inc()
            why = self.deployment.load_error or (
                "models are loading"
                if self.deployment.state and self.deployment.state.stable
                else f"no model deployed yet for {self.model_name!r}"
            )
            return error_response(503, f"not ready: {why}")
        try:
            table = parse_body(await self._read_json(request), self.config.max_rows_per_request)
        except PayloadError as exc:
            self.metrics.errors.labels("", "none", "client").inc()
            return error_response(exc.status, exc.message)
        n = table.n_rows
        ids = self.ids.mint(n)
        key = request.headers.get("x-routing-key") or ids[0]
        if forced:
            model = snap.tracks.get(forced)
            if model is None:
                self.metrics.errors.labels("", "none", "client").inc()
                if forced not in TRACKS:
                    return error_response(400, f"unknown track {forced!r}; one of {TRACKS}")
                return error_response(404, f"no model on track {forced!r}")
            track = forced
        elif snap.canary is not None and routing.goes_to_canary(key, snap.canary_weight):
            model, track = snap.canary, "canary"
        elif snap.stable is not None:
            model, track = snap.stable, "stable"
        else:  # unreachable: without a stable model only a named track gets this far
            return error_response(503, "not ready: no stable model")
        mm = model.metrics(track)
        try:
            matrix = table.matrix(model.feature_names)
        except PayloadError as exc:
            mm.client_errors.inc()
            return error_response(exc.status, exc.message)
        model.inflight += 1
        try:
            preds = await model.batcher.submit(matrix)
        except Exception as exc:
            mm.server_errors.inc()
            log.exception("model %s failed", model.version)
            return error_response(500, f"model {model.version} failed: {type(exc).__name__}")
        finally:
            model.inflight -= 1
        latency = _perf() - t0
        mm.requests.inc()
        mm.rows.inc(n)
        mm.latency.observe(latency)
        values = preds.tolist()  # the task's output: (n,) or class probabilities (n, k)
        scores = one_score_per_row(preds)  # one number per row for metrics and the log
        observe = mm.prediction.observe
        for p in scores.tolist():
            observe(p)
        if not forced:
            if self.config.log_predictions:
                self.predlog.append(
                    PredictionEntry(
                        ids, time.time(), model.version, track, key, latency * 1000.0, scores,
                        matrix, model.feature_names,
                    )
                )  # fmt: skip
            self.recent.add(ids)
            shadow = snap.shadow
            if shadow is not None and routing.mirrored_to_shadow(key, snap.shadow_weight):
                self._mirror(shadow, table, ids, key)
        return Response(
            orjson.dumps({"predictions": values}),
            200,
            {"X-Request-Id": ",".join(ids), "X-Model-Version": model.version, "X-Track": track},
            media_type=JSON,
        )

    def _mirror(self, shadow: ServedModel, table: Table, ids: list[str], key: str) -> None:
        """Score the request on the shadow too, after answering; never returned."""
        dropped = self.metrics.shadow_dropped.labels(shadow.version)
        if shadow.batcher.queued_rows > self.config.max_shadow_queue_rows:
            dropped.inc()
            return
        try:
            matrix = table.matrix(shadow.feature_names)
        except PayloadError:
            dropped.inc()
            return
        task = asyncio.get_running_loop().create_task(self._score_shadow(shadow, matrix, ids, key))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _score_shadow(
        self, shadow: ServedModel, matrix: np.ndarray, ids: list[str], key: str
    ) -> None:
        mm = shadow.metrics("shadow")
        t0 = _perf()
        shadow.inflight += 1
        try:
            preds = await shadow.batcher.submit(matrix)
        except Exception:
            mm.server_errors.inc()
            return
        finally:
            shadow.inflight -= 1
        latency = _perf() - t0
        mm.requests.inc()
        mm.rows.inc(len(ids))
        mm.latency.observe(latency)
        preds = one_score_per_row(preds)
        for p in preds.tolist():
            mm.prediction.observe(p)
        if self.config.log_predictions:
            self.predlog.append(
                PredictionEntry(
                    ids, time.time(), shadow.version, "shadow", key, latency * 1000.0, preds,
                    matrix, shadow.feature_names,
                )
            )  # fmt: skip

    # -- /feedback ---------------------------------------------------------------------------
    async def feedback(self, request: Request) -> Response:
        try:
            obj = await self._read_json(request)
            items = _parse_feedback(obj)
        except PayloadError as exc:
            return error_response(exc.status, exc.message)
        unknown = [rid for rid, _ in items if rid not in self.recent]
        if unknown:
            found = await asyncio.to_thread(
                ids_on_disk, self.home.predictions(self.model_name), unknown
            )
            unknown = [rid for rid in dict.fromkeys(unknown) if rid not in found]
        if unknown:
            self.metrics.feedback_unknown.inc(len(unknown))
            shown = unknown[:20]
            return error_response(
                404,
                f"unknown request_id(s): {', '.join(shown)}"
                + (f" and {len(unknown) - len(shown)} more" if len(unknown) > len(shown) else "")
                + "; nothing was recorded",
                unknown=unknown,
            )
        now = time.time()
        for rid, label in items:
            self.feedlog.append(FeedbackEntry(rid, label, now))
        self.metrics.feedback.inc(len(items))
        return json_response({"accepted": len(items)})

    # -- the small routes ------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def ready(self, request: Request) -> Response:
        d = self.deployment
        snap = d.snapshot
        if not d.ready or snap is None:
            why = d.load_error or (
                "models are loading" if d.state and d.state.stable else "nothing deployed yet"
            )
            return json_response({"ready": False, "reason": why}, 503)
        return json_response(
            {
                "ready": True,
                "revision": snap.revision,
                "versions": {t: m.version for t, m in snap.tracks.items()},
            }
        )

    async def metrics_route(self, request: Request) -> Response:
        m = self.metrics
        m.log_pending.labels("predictions").set(self.predlog.pending_rows)
        m.log_pending.labels("feedback").set(self.feedlog.pending_rows)
        body, ctype = await asyncio.to_thread(m.exposition)
        return Response(body, headers={"Content-Type": ctype})

    async def deployment_route(self, request: Request) -> Response:
        doc = self.deployment.describe()
        doc["server"] = {
            "pid": os.getpid(),
            "started_at": self.started_at,
            "host": self.address.host if self.address else None,
            "port": self.address.port if self.address else None,
        }
        doc["prediction_log"] = {
            "path": str(self.home.predictions(self.model_name)),
            "pending_rows": self.predlog.pending_rows,
            "last_error": self.predlog.last_error,
        }
        return json_response(doc)


def _parse_feedback(obj: Any) -> list[tuple[str, float]]:
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        raise PayloadError("empty feedback list")
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise PayloadError(
            f"{len(items)} feedback items in one request; the limit is {MAX_FEEDBACK_ITEMS}", 413
        )
    out = []
    for i, item in enumerate(items):
        where = f"feedback item {i}" if isinstance(obj, list) else "feedback"
        if not isinstance(item, dict):
            raise PayloadError(f"{where} must be an object with request_id and label")
        rid = item.get("request_id")
        if not isinstance(rid, str) or not rid:
            raise PayloadError(f"{where}: request_id must be a non-empty string")
        if "label" not in item:
            raise PayloadError(f"{where}: label is missing")
        label = item["label"]
        if isinstance(label, bool):
            label = float(label)
        if not isinstance(label, (int, float)) or not math.isfinite(label):
            raise PayloadError(f"{where}: label must be a finite number, got {label!r}")
        out.append((rid, float(label)))
    return out


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}")


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return error_response(500, f"internal error: {type(exc).__name__}")


def create_app(
    home: Home,
    model_name: str,
    config: ServerConfig | None = None,
    loader: Loader | None = None,
    address: ServerAddress | None = None,
) -> Starlette:
    """The ASGI app; ``app.state.server`` is the :class:`ModelServer`."""
    server = ModelServer(home, model_name, config, loader, address)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.startup()
        try:
            yield
        finally:
            await server.shutdown()

    app = Starlette(
        routes=[
            Route("/invocations", server.invocations, methods=["POST"]),
            Route("/feedback", server.feedback, methods=["POST"]),
            Route("/health", server.health, methods=["GET"]),
            Route("/ping", server.health, methods=["GET"]),  # MLflow's name for it
            Route("/ready", server.ready, methods=["GET"]),
            Route("/metrics", server.metrics_route, methods=["GET"]),
            Route("/deployment", server.deployment_route, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.server = server
    return app
