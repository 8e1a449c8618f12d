"""Running the model server: blocking (``mlcicd serve``), in a thread, or as a subprocess.

The listening socket is bound before uvicorn starts, so the real port is known (``port=0``
picks a free one) and written to ``Home.server_file`` at startup; graceful shutdown
(SIGINT/SIGTERM) answers what is in flight, flushes the logs and removes the file.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.serving.config import ServerConfig
from mlcicd_dagster.serving.deployment import Loader


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _uvicorn_server(app: Any, host: str, port: int) -> Any:
    import uvicorn

    has = importlib.util.find_spec
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop" if has("uvloop") else "asyncio",
        http="httptools" if has("httptools") else "h11",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=30,
    )
    return uvicorn.Server(config)


def build(
    home: Home,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ServerConfig | None = None,
    loader: Loader | None = None,
) -> tuple[Any, socket.socket, Any]:
    """(uvicorn server, bound socket, app): run with ``server.run(sockets=[sock])``."""
    from mlcicd_dagster.serving.app import ServerAddress, create_app

    sock = bind_socket(host, port)
    real_port = sock.getsockname()[1]
    app = create_app(home, model_name, config, loader, ServerAddress(host, real_port))
    return _uvicorn_server(app, host, real_port), sock, app


def serve(
    home: Home,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    config: ServerConfig | None = None,
) -> None:
    """Serve ``model_name`` as its deployment state says until SIGINT/SIGTERM (blocking)."""
    server, sock, _ = build(home, model_name, host, port, config)
    server.run(sockets=[sock])


class ServerThread:
    """A server running in a daemon thread of this process (tests, notebooks)."""

    def __init__(
        self,
        home: Home,
        model_name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        config: ServerConfig | None = None,
        loader: Loader | None = None,
    ):
        self.server, self._sock, self.app = build(home, model_name, host, port, config, loader)
        self.host = host
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True,
            name=f"mlcicd-serve-{self.port}",
        )  # fmt: skip

    @property
    def model_server(self) -> Any:
        return self.app.state.server

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"model server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def wait_ready(self, timeout_s: float = 60.0, revision: int | None = None) -> None:
        """Block until a stable model is loaded (and ``revision`` or later is served)."""
        deadline = time.monotonic() + timeout_s
        follower = self.model_server.deployment
        while time.monotonic() < deadline:
            snap = follower.snapshot
            if follower.ready and (revision is None or (snap and snap.revision >= revision)):
                return
            time.sleep(0.02)
        raise TimeoutError(f"model server not ready: {follower.load_error or 'still loading'}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful: in-flight requests answered, logs flushed, server file removed."""
        self.server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_subprocess(
    home: Home,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    timeout_s: float = 120.0,
    log_path: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m mlcicd_dagster.serving`` and wait for its server file; (proc, url).

    With ``port=0`` the child picks a free port and reports it in ``Home.server_file``.
    """
    server_file = home.server_file
    server_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "mlcicd_dagster.serving", "--model", model_name]
    cmd += ["--host", host, "--port", str(port), *(extra_args or [])]
    child_env = {**os.environ, **(env or {}), "MLCICD_HOME": str(home.root)}
    out: Any = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=child_env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    import json

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"model server exited with {proc.returncode} ({cmd})")
        try:
            doc = json.loads(server_file.read_text())
            if doc.get("pid") == proc.pid:
                return proc, f"http://{doc['host']}:{doc['port']}"
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"model server did not start within {timeout_s}s")
