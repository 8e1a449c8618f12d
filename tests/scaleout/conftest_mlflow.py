"""A real ``mlflow server`` on loopback: backend store on the test PostgreSQL, artifacts
proxied (``--serve-artifacts``) to a local destination (S3 on the cluster)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SERVER_START_TIMEOUT_S = 180  # alembic migrations of a fresh database run at first start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_mlflow_server(postgres, root: Path, database: str) -> Iterator[tuple[str, Path]]:
    """Yields (tracking URL, artifact folder); stops the server (its process group) after."""
    import httpx

    postgres.create_database(database)
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", postgres.uri(database),
             "--artifacts-destination", (root / "artifacts").as_uri(),
             "--serve-artifacts", "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
            env={**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"},
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        try:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"mlflow server exited: {log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"mlflow server not up: {log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield url, root / "artifacts"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
