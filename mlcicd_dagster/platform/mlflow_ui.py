"""The MLflow UI beside the Dagster UI (``mlcicd ui`` / ``make ui``), on the same store.

The MLflow run links in asset metadata (``models.tracking.run_link``) open
``$MLCICD_MLFLOW_UI_URL``: ``mlcicd ui`` starts ``mlflow ui`` on the home's tracking
store and sets that variable for the Dagster processes it starts. A remote tracking
server (``MLFLOW_TRACKING_URI=http...``) is its own UI: nothing is started and the links
open it (or ``$MLCICD_MLFLOW_UI_URL`` where the browser reaches it by another address,
as in ``deploy/``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

UI_URL_ENV = "MLCICD_MLFLOW_UI_URL"
DEFAULT_PORT = 5000


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when ``mlcicd ui`` dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_mlflow_ui(
    tracking_uri: str,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
) -> tuple[subprocess.Popen[bytes] | None, str]:
    """Start ``mlflow ui`` on ``tracking_uri``; (process or None, the UI's URL).

    None when the tracking URI is already a server (it is the UI).
    """
    if tracking_uri.startswith(("http://", "https://")):
        from mlcicd_dagster import settings

        return None, settings.get(UI_URL_ENV) or tracking_uri
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "ui", "--backend-store-uri", tracking_uri]
    cmd += ["--host", host, "--port", str(port)]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
    )
    return proc, f"http://{host}:{port}"


def wait_until_up(url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float = 60.0) -> bool:
    """True once the UI answers ``/health``; False if it exited or did not come up in time."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
