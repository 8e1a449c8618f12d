"""A recording Kubernetes API server on loopback, for the K8sTarget tests.

No real API server can run here, so this one speaks just enough of the protocol
for the requests K8sTarget sends: server-side apply (PATCH, apply-patch+yaml),
GET, LIST with labelSelector, DELETE, and the Service proxy to model-server pods
(whose answers follow the pod-state ConfigMap, as the real server would). The
client under test is a real ``kubernetes.client.ApiClient`` over real HTTP, so the
recorded requests are the exact bytes a cluster would receive.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    authorization: str
    body: Any


@dataclass
class FakeApiServer:
    requests: list[Recorded] = field(default_factory=list)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # item path -> object
    auto_ready: bool = True  # Deployments become available as soon as they are applied
    pods_down: set[str] = field(default_factory=set)  # Services whose pods do not answer
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method in ("PATCH", "DELETE", "POST", "PUT")]

    def clear(self) -> None:
        self.requests.clear()

    # -- behaviour ------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes):
        split = urlsplit(raw_path)
        path, query = split.path, dict(parse_qsl(split.query))
        body = json.loads(raw_body) if raw_body else None
        with self.lock:
            self.requests.append(
                Recorded(
                    method,
                    path,
                    query,
                    headers.get("Content-Type", ""),
                    headers.get("Authorization", ""),
                    body,
                )
            )
            if "/proxy/" in path:
                return self._proxy(method, path, body)
            if method == "PATCH":
                return self._apply(path, body, headers.get("Content-Type", ""))
            if method == "GET":
                if path in self.objects:
                    return 200, self.objects[path], {}
                items = [
                    o
                    for p, o in sorted(self.objects.items())
                    if p.rsplit("/", 1)[0] == path and _matches(o, query.get("labelSelector"))
                ]
                if _is_collection(path):
                    return 200, {"kind": "List", "items": items}, {}
                return 404, _status(404, "NotFound"), {}
            if method == "DELETE":
                if self.objects.pop(path, None) is None:
                    return 404, _status(404, "NotFound"), {}
                return 200, _status(200, "Success"), {}
        return 405, _status(405, "MethodNotAllowed"), {}

    def _apply(self, path: str, body: dict[str, Any], content_type: str):
        if content_type != "application/apply-patch+yaml":
            return 415, _status(415, "UnsupportedMediaType"), {}
        old = self.objects.get(path)
        obj = json.loads(json.dumps(body))
        gen = int((old or {}).get("metadata", {}).get("generation", 0))
        if old is None or old.get("spec") != obj.get("spec"):
            gen += 1
        obj["metadata"]["generation"] = gen
        if obj["kind"] == "Deployment":
            obj["status"] = (old or {}).get("status", {})
            if self.auto_ready:
                obj["status"] = _ready_status(gen)
        self.objects[path] = obj
        return (201 if old is None else 200), obj, {}

    def make_ready(self) -> None:
        with self.lock:
            for obj in self.objects.values():
                if obj["kind"] == "Deployment":
                    obj["status"] = _ready_status(obj["metadata"]["generation"])

    def _proxy(self, method: str, path: str, body: Any):
        # /api/v1/namespaces/<ns>/services/<svc>:<port>/proxy/<rest>
        parts = path.split("/")
        ns, svc_port, rest = parts[4], parts[6], "/".join(parts[8:])
        svc_name = svc_port.split(":")[0]
        svc = self.objects.get(f"/api/v1/namespaces/{ns}/services/{svc_name}")
        if svc is None or svc_name in self.pods_down:
            return 503, _status(503, "ServiceUnavailable"), {}
        version = svc["spec"]["selector"]["mlcicd.io/model-version"]
        cms = [
            o
            for p, o in self.objects.items()
            if o["kind"] == "ConfigMap"
            and o["metadata"]["labels"].get("mlcicd.io/model-version") == version
        ]
        if not cms:
            return 503, _status(503, "NoPods"), {}
        (doc_text,) = cms[0]["data"].values()
        doc = json.loads(doc_text)
        if method == "GET" and rest == "deployment":
            return 200, {"revision": doc["revision"], "serving": doc}, {}
        if method == "POST" and rest == "invocations":
            n = len(body["dataframe_split"]["data"])
            serving = doc["canary"] or doc["stable"]
            return 200, {"predictions": [0.25] * n}, {"X-Model-Version": serving["version"]}
        return 404, _status(404, "NotFound"), {}


def _is_collection(path: str) -> bool:
    # /api/v1/namespaces/<ns>/<plural>  or  /apis/<g>/<v>/namespaces/<ns>/<plural>
    parts = path.strip("/").split("/")
    return (parts[0] == "api" and len(parts) == 5) or (parts[0] == "apis" and len(parts) == 6)


def _matches(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    labels = obj.get("metadata", {}).get("labels", {})
    return all(labels.get(k) == v for k, v in (term.split("=", 1) for term in selector.split(",")))


def _status(code: int, reason: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "code": code, "reason": reason}


def _ready_status(generation: int) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "replicas": 2,
        "updatedReplicas": 2,
        "availableReplicas": 2,
        "readyReplicas": 2,
    }


@pytest.fixture
def fake_apiserver() -> Iterator[FakeApiServer]:
    state = FakeApiServer()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            code, payload, extra = state.handle(self.command, self.path, self.headers, raw)
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PATCH = do_DELETE = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def api_client(fake_apiserver: FakeApiServer):
    """A real kubernetes ApiClient pointed at the loopback server, with a bearer token."""
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = fake_apiserver.url
    cfg.api_key = {"BearerToken": "test-token"}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    api = client.ApiClient(cfg)
    yield api
    api.close()
