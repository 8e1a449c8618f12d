"""The model server's HTTP application (Starlette; the HTTP API is described in docs/serving.md).

Plain Starlette routes rather than FastAPI models, and the two scoring routes answered by
``ServingApp`` straight from the ASGI scope (``RawRequest``): ``/invocations`` is the hot
path and validates the body itself (``payload``, ``mlflow_compat``), decodes JSON with
orjson and never touches pandas on the fast path, so a single-row request costs tens of
microseconds plus its share of a batched model call.

Routes
  POST /invocations  MLflow scoring protocol -> {"predictions": ...}, what the logged
                     pyfunc returns ([[P(0), P(1)], ...] for a binary classifier)
                     headers: X-Request-Id (one per row, comma-separated), X-Model-Version,
                     X-Track. Request headers: X-Routing-Key (sticky routing), X-Track
                     (smoke tests: score on exactly that track; not logged).
  POST /v2/models/<name>[/versions/<v>]/infer   Open Inference Protocol (``v2``)
  POST /feedback     {"request_id", "label"} or a list of them; 404 names unknown ids
  GET  /ping, /version, /health, /ready, /metrics, /deployment, /v2/...
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
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
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from mlcicd_dagster.platform.atomic import atomic_write_json
from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.serving import routing, v2
from mlcicd_dagster.serving.batching import BatcherClosed
from mlcicd_dagster.serving.config import FEEDBACK_TOKEN_ENV, ServerConfig
from mlcicd_dagster.serving.deployment import (
    TRACKS,
    DeploymentFollower,
    Loader,
    ServedModel,
    Snapshot,
)
from mlcicd_dagster.serving.ids import IdMinter, RecentIds, ids_on_disk
from mlcicd_dagster.serving.logs import (
    FeedbackEntry,
    PredictionEntry,
    feedback_log,
    multiclass_outputs,
    prediction_log,
)
from mlcicd_dagster.serving.metrics import ServerMetrics
from mlcicd_dagster.serving.mlflow_compat import (
    MODEL_ERROR_MESSAGE,
    Answer,
    content_type_fast_json,
    error_body,
    mlflow_version,
)
from mlcicd_dagster.serving.output import positive_scores
from mlcicd_dagster.serving.payload import PayloadError, fast_matrix, parse_body

log = logging.getLogger(__name__)

JSON = "application/json"
MAX_FEEDBACK_ITEMS = 10_000
_perf = time.perf_counter


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type=JSON
    )


def error_response(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    error_code: str | None = None,
    **extra: Any,
) -> Response:
    """MLflow's error document ``{"error_code", "message"}`` (plus ``extra`` keys)."""
    return Response(
        error_body(status, message, error_code, **extra), status, headers, media_type=JSON
    )


class RawRequest:
    """What the scoring handlers read of a request, straight from the ASGI scope: the two
    scoring routes skip Starlette's request, routing and middleware objects (the hot path;
    every other route goes through Starlette)."""

    __slots__ = ("headers", "path_params", "_receive")

    def __init__(self, scope: Any, receive: Any, path_params: dict[str, str]):
        # ASGI header names are lower-case; the first of repeated headers wins, as Starlette's
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1")
            if name not in headers:
                headers[name] = v.decode("latin-1")
        self.headers = headers
        self.path_params = path_params
        self._receive = receive

    async def stream(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()


def scoring_route(path: str) -> tuple[str, dict[str, str]] | None:
    """("invocations" | "v2", path params) for the two scoring routes, else None."""
    if path == "/invocations":
        return "invocations", {}
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[len("/v2/models/") : -len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            return "v2", {"model": parts[0]}
        if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            return "v2", {"model": parts[0], "version": parts[2]}
    return None


class ServingApp(Starlette):
    """Starlette, with ``POST /invocations`` and ``POST /v2/.../infer`` answered without
    Starlette's per-request objects (``RawRequest``): the same handlers, less overhead."""

    server: ModelServer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = scoring_route(scope["path"])
            if route is not None:
                kind, params = route
                server = self.server
                handler = server.invocations if kind == "invocations" else server.v2_infer
                try:
                    response = await handler(RawRequest(scope, receive, params))
                except ClientDisconnect:
                    return
                except Exception as exc:  # as Starlette's ServerErrorMiddleware would
                    log.exception("unhandled error on %s", scope["path"])
                    response = error_response(500, f"internal error: {type(exc).__name__}")
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


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
        self._token = self.config.resolved_feedback_token().encode()
        self._mlflow_version = mlflow_version()

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
                "home": str(self.home.root),
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
    async def _read_body(self, request: Request | RawRequest) -> bytes:
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
        """A JSON body (``Content-Type: application/json`` or none) decoded, or PayloadError."""
        ctype = request.headers.get("content-type")
        if not content_type_fast_json(ctype):
            raise PayloadError(
                f"unsupported content type {ctype!r}; send application/json", status=415
            )
        return _decode(await self._read_body(request))

    # -- scoring: /invocations and the v2 infer route share routing, batching, logging ---
    def _route(
        self, request: Request | RawRequest, rid: str, pinned: str = ""
    ) -> tuple[ServedModel, str, str, bool, Snapshot, dict[str, str]] | Response:
        """(model, track, routing key, forced, snapshot, headers), or the error answer.

        ``pinned``: a version the request names (v2 ``/versions/<v>``): scored on the
        track serving it, like ``X-Track``, and not logged.
        """
        snap = self.deployment.snapshot
        forced = request.headers.get("x-track") or ""
        # A named track answers even before anything is stable: blue-green smoke-tests
        # the first green model on its weight-0 track before switching traffic to it.
        track_only = bool(forced) and snap is not None and snap.tracks.get(forced) is not None
        if pinned and snap is not None:
            forced = next((t for t, m in snap.tracks.items() if m.version == pinned), "")
            track_only = bool(forced)
        stable_version = snap.stable.version if snap is not None and snap.stable else ""
        headers = {"X-Request-Id": rid, "X-Model-Version": stable_version}
        if pinned and not forced:
            self.metrics.errors.labels("", "none", "client").inc()
            return error_response(404, f"version {pinned!r} is not being served", headers)
        if snap is None or (snap.stable is None and not track_only):
            self.metrics.errors.labels("", "none", "unavailable").inc()
            why = self.deployment.load_error or (
                "models are loading"
                if self.deployment.state and self.deployment.state.stable
                else f"no model deployed yet for {self.model_name!r}"
            )
            return error_response(503, f"not ready: {why}", headers)
        key = request.headers.get("x-routing-key") or rid
        if forced:
            model = snap.tracks.get(forced)
            if model is None:
                self.metrics.errors.labels("", "none", "client").inc()
                if forced not in TRACKS:
                    return error_response(
                        400, f"unknown track {forced!r}; one of {TRACKS}", headers
                    )
                return error_response(404, f"no model on track {forced!r}", headers)
            track = forced
        elif snap.canary is not None and routing.goes_to_canary(key, snap.canary_weight):
            model, track = snap.canary, "canary"
        elif snap.stable is not None:
            model, track = snap.stable, "stable"
        else:  # unreachable: without a stable model only a named track gets this far
            return error_response(503, "not ready: no stable model", headers)
        headers["X-Model-Version"] = model.version
        return model, track, key, bool(forced), snap, headers

    async def _predict(
        self, model: ServedModel, track: str, key: str, forced: bool, snap: Snapshot,
        matrix: np.ndarray, rid: str, headers: dict[str, str], t0: float,
    ) -> np.ndarray | Response:  # fmt: skip
        """Score ``matrix`` on ``model`` (micro-batched), log it, mirror it; the outputs."""
        mm = model.metrics(track)
        n = len(matrix)
        ids = [rid, *self.ids.mint(n - 1)] if n > 1 else [rid]
        try:
            outputs = await model.batcher.submit(matrix)
        except BatcherClosed:  # unreachable while the caller holds model.inflight
            mm.server_errors.inc()
            return error_response(503, "model retired while answering; retry", headers)
        except Exception:
            # As MLflow: an exception in the model's predict is a 400 BAD_REQUEST.
            mm.client_errors.inc()
            log.warning("model %s failed on a request", model.version, exc_info=True)
            return error_response(400, MODEL_ERROR_MESSAGE, headers)
        latency = _perf() - t0
        mm.requests.inc()
        mm.rows.inc(n)
        mm.latency.observe(latency)
        scores = positive_scores(outputs, model.positive)
        observe = mm.prediction.observe
        for p in scores.tolist():
            observe(p)
        if not forced:
            if self.config.log_predictions:
                self.predlog.append(
                    PredictionEntry(
                        ids, time.time(), model.version, track, key, latency * 1000.0, scores,
                        matrix, model.feature_names, multiclass_outputs(outputs),
                    )
                )  # fmt: skip
            self.recent.add(ids)
            shadow = snap.shadow
            if shadow is not None and routing.mirrored_to_shadow(key, snap.shadow_weight):
                self._mirror(shadow, matrix, model.feature_names, ids, key)
        headers["X-Request-Id"] = ",".join(ids)
        headers["X-Track"] = track
        return outputs

    async def invocations(self, request: Request | RawRequest) -> Response:
        t0 = _perf()
        rid = self.ids.mint(1)[0]  # every answer carries an id, errors too
        try:
            body = await self._read_body(request)
        except PayloadError as exc:
            return self._early_error(exc, rid)
        routed = self._route(request, rid)
        if isinstance(routed, Response):
            return routed
        model, track, key, forced, snap, headers = routed
        # Held from routing to the answer: the model is not retired under this request.
        model.inflight += 1
        try:
            try:
                matrix = await self._matrix(request, body, model)
            except PayloadError as exc:
                model.metrics(track).client_errors.inc()
                return error_response(exc.status, exc.message, headers)
            if isinstance(matrix, Answer):
                model.metrics(track).client_errors.inc()
                return Response(matrix.body, matrix.status, headers, media_type=matrix.media_type)
            out = await self._predict(model, track, key, forced, snap, matrix, rid, headers, t0)
        finally:
            model.inflight -= 1
        if isinstance(out, Response):
            return out
        return Response(orjson.dumps({"predictions": out.tolist()}), 200, headers, JSON)

    def _early_error(self, exc: PayloadError, rid: str) -> Response:
        """An error before routing (body too large): the stable version's headers."""
        self.metrics.errors.labels("", "none", "client").inc()
        snap = self.deployment.snapshot
        version = snap.stable.version if snap is not None and snap.stable else ""
        headers = {"X-Request-Id": rid, "X-Model-Version": version}
        return error_response(exc.status, exc.message, headers)

    # -- the Open Inference Protocol (v2) ------------------------------------------------
    async def v2_infer(self, request: Request | RawRequest) -> Response:
        t0 = _perf()
        rid = self.ids.mint(1)[0]
        name = request.path_params["model"]
        if name != self.model_name:
            return error_response(404, f"unknown model {name!r}; this server serves "
                                  f"{self.model_name!r}", {"X-Request-Id": rid})  # fmt: skip
        try:
            body = await self._read_body(request)
        except PayloadError as exc:
            return self._early_error(exc, rid)
        routed = self._route(request, rid, request.path_params.get("version", ""))
        if isinstance(routed, Response):
            return routed
        model, track, key, forced, snap, headers = routed
        try:
            obj, tail = v2.split_binary(
                body, request.headers.get("inference-header-content-length")
            )
            matrix, req_id = v2.infer_matrix(obj, tail, model.feature_names, model.text)
            limit = self.config.max_rows_per_request
            if len(matrix) > limit:
                raise PayloadError(f"{len(matrix)} rows in one request; the limit is {limit}", 413)
        except PayloadError as exc:
            model.metrics(track).client_errors.inc()
            return error_response(exc.status, exc.message, headers)
        model.inflight += 1
        try:
            out = await self._predict(model, track, key, forced, snap, matrix, rid, headers, t0)
        finally:
            model.inflight -= 1
        if isinstance(out, Response):
            return out
        return Response(
            v2.infer_response(self.model_name, model.version, req_id, out), 200, headers, JSON
        )

    async def v2_live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        ready = self.deployment.ready
        return json_response({"ready": ready}, 200 if ready else 503)

    async def v2_server(self, request: Request) -> Response:
        from mlcicd_dagster.serving.mlflow_compat import package_version

        return json_response(
            {
                "name": "mlcicd-dagster",
                "version": package_version(),
                "extensions": ["binary_tensor_data"],
            }
        )

    def _v2_model(self, request: Request) -> ServedModel | Response:
        name = request.path_params["model"]
        snap = self.deployment.snapshot
        if name != self.model_name:
            return error_response(404, f"unknown model {name!r}")
        if snap is None or not snap.tracks:
            return error_response(503, "not ready: no model loaded")
        pinned = request.path_params.get("version")
        if pinned:
            model = next((m for m in snap.tracks.values() if m.version == pinned), None)
            if model is None:
                return error_response(404, f"version {pinned!r} is not being served")
            return model
        return snap.stable or next(iter(snap.tracks.values()))

    async def v2_model(self, request: Request) -> Response:
        model = self._v2_model(request)
        if isinstance(model, Response):
            return model
        snap = self.deployment.snapshot
        versions = sorted({m.version for m in snap.tracks.values()}) if snap else []
        fast = model.fast
        integer = fast.integer if fast is not None else (False,) * len(model.feature_names)
        return json_response(
            v2.model_metadata(
                self.model_name, versions, model.feature_names, integer, model.output_shape,
                model.text,
            )
        )  # fmt: skip

    async def v2_model_ready(self, request: Request) -> Response:
        model = self._v2_model(request)
        if isinstance(model, Response):
            return json_response(
                {"name": request.path_params["model"], "ready": False}, model.status_code
            )
        return json_response({"name": self.model_name, "ready": True})

    async def _matrix(
        self, request: Request | RawRequest, body: bytes, model: ServedModel
    ) -> np.ndarray | Answer:
        """The request's feature matrix for ``model``: the fast path, else MLflow's code."""
        ctype = request.headers.get("content-type")
        fast_json = content_type_fast_json(ctype)
        limit = self.config.max_rows_per_request
        if fast_json and model.fast is not None:
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError:
                obj = None
            if obj is not None:
                matrix = fast_matrix(obj, model.fast)
                if matrix is not None:
                    if len(matrix) > limit:
                        raise PayloadError(
                            f"{len(matrix)} rows in one request; the limit is {limit}", 413
                        )
                    return matrix
        if model.parser is not None:
            out = await asyncio.to_thread(model.parser.parse, body, ctype)
        else:  # a model without a column signature: our own parser
            if not fast_json:
                raise PayloadError(
                    f"unsupported content type {ctype!r}; send application/json", status=415
                )
            out = parse_body(_decode(body), limit).matrix(model.feature_names)
        if isinstance(out, np.ndarray):
            if len(out) > limit:
                raise PayloadError(f"{len(out)} rows in one request; the limit is {limit}", 413)
            if model.finite_only and out.dtype != object and not np.isfinite(out).all():
                bad = np.flatnonzero(~np.isfinite(out).all(axis=0))
                cols = [model.feature_names[int(j)] for j in bad if j < len(model.feature_names)]
                raise PayloadError(
                    f"missing or infinite value(s) in feature column(s): {', '.join(cols)} "
                    "(this model cannot score them)"
                )
        return out

    def _mirror(
        self, shadow: ServedModel, matrix: np.ndarray, names: tuple[str, ...], ids: list[str],
        key: str,
    ) -> None:  # fmt: skip
        """Score the request on the shadow too, after answering; never returned."""
        dropped = self.metrics.shadow_dropped.labels(shadow.version)
        if shadow.batcher.queued_rows > self.config.max_shadow_queue_rows:
            dropped.inc()
            return
        if shadow.feature_names != names:
            try:
                matrix = matrix[:, [names.index(f) for f in shadow.feature_names]]
            except ValueError:  # the shadow needs a feature the request's model does not
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
        scores = positive_scores(preds, shadow.positive)
        for p in scores.tolist():
            mm.prediction.observe(p)
        if self.config.log_predictions:
            self.predlog.append(
                PredictionEntry(
                    ids, time.time(), shadow.version, "shadow", key, latency * 1000.0, scores,
                    matrix, shadow.feature_names, multiclass_outputs(preds),
                )
            )  # fmt: skip

    # -- /feedback ---------------------------------------------------------------------------
    def _authorized(self, request: Request) -> Response | None:
        """None when the request may change state, else the 401 answer (token configured)."""
        token = self._token
        if not token:
            return None
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token):
            return None
        self.metrics.feedback_refused.inc()
        why = "missing" if not given else "wrong"
        return error_response(
            401,
            f"{why} token: labels need 'Authorization: Bearer <token>' "
            f"(the server's {FEEDBACK_TOKEN_ENV})",
            {"WWW-Authenticate": 'Bearer realm="mlcicd"'},
        )

    async def feedback(self, request: Request) -> Response:
        refused = self._authorized(request)
        if refused is not None:
            return refused
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
        """Liveness: the process answers (Kubernetes' liveness probe)."""
        return json_response({"status": "ok"})

    async def ping(self, request: Request) -> Response:
        """As MLflow's ``/ping``: 200 (body a newline) once a model is loaded; else 503."""
        if self.deployment.ready:
            return Response("\n", 200, media_type=JSON)
        return await self.ready(request)

    async def version(self, request: Request) -> Response:
        """As MLflow's ``/version``: the MLflow version, as plain text."""
        return Response(self._mlflow_version, 200, media_type=JSON)

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


def _decode(body: bytes) -> Any:
    if not body:
        raise PayloadError("empty body; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc) or "recursion" in str(exc).lower():
            raise PayloadError(f"JSON nested too deeply: {exc}") from None
        raise PayloadError(f"malformed JSON: {exc}") from None


def _parse_feedback(obj: Any) -> list[tuple[str, float | str]]:
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
        out.append((rid, _feedback_label(item["label"], where)))
    return out


MAX_LABEL_CHARS = 200


def _feedback_label(label: Any, where: str) -> float | str:
    """A finite number, or a non-empty text class label (``"setosa"``), kept as sent."""
    if isinstance(label, bool):
        return float(label)
    if isinstance(label, str):
        text = label.strip()
        if not text or len(text) > MAX_LABEL_CHARS:
            raise PayloadError(
                f"{where}: a text label must be 1 to {MAX_LABEL_CHARS} characters, "
                f"got {label[:40]!r}"
            )
        return text
    if not isinstance(label, (int, float)) or not math.isfinite(label):
        raise PayloadError(f"{where}: label must be a finite number or a text class, got {label!r}")
    return float(label)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown route or method: ``{"detail": ...}`` as ``mlflow models serve`` (FastAPI)."""
    assert isinstance(exc, HTTPException)
    return json_response({"detail": exc.detail}, exc.status_code, dict(exc.headers or {}))


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

    app = ServingApp(
        routes=[
            Route("/invocations", server.invocations, methods=["POST"]),
            Route("/feedback", server.feedback, methods=["POST"]),
            Route("/health", server.health, methods=["GET"]),
            Route("/ping", server.ping, methods=["GET"]),
            Route("/version", server.version, methods=["GET"]),
            Route("/ready", server.ready, methods=["GET"]),
            Route("/metrics", server.metrics_route, methods=["GET"]),
            Route("/deployment", server.deployment_route, methods=["GET"]),
            Route("/v2", server.v2_server, methods=["GET"]),
            Route("/v2/health/live", server.v2_live, methods=["GET"]),
            Route("/v2/health/ready", server.v2_ready, methods=["GET"]),
            Route("/v2/models/{model}", server.v2_model, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}", server.v2_model, methods=["GET"]),
            Route("/v2/models/{model}/ready", server.v2_model_ready, methods=["GET"]),
            Route(
                "/v2/models/{model}/versions/{version}/ready",
                server.v2_model_ready,
                methods=["GET"],
            ),
            Route("/v2/models/{model}/infer", server.v2_infer, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", server.v2_infer, methods=["POST"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.server = server
    app.server = server
    return app
