"""Shared fixtures: every test gets its own MLCICD_HOME (never the repo's .mlcicd)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# Set before anything imports definitions.py (which defaults MLCICD_HOME to the repo).
os.environ.setdefault("MLCICD_HOME", str(ROOT / ".mlcicd-test-session"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture
def home_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MLCICD_HOME for one test (MLFLOW_TRACKING_URI cleared: the embedded store)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MLCICD_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLCICD_ALERT_WEBHOOK", raising=False)
    return home


@pytest.fixture
def instance(home_dir: Path):
    """A real, persistent Dagster instance under the test's home (same dagster.yaml as prod)."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    from mlcicd_dagster.platform.dagster_home import ensure_dagster_home
    from mlcicd_dagster.platform.home import Home

    path = ensure_dagster_home(Home(home_dir))
    inst = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(path)))
    yield inst
    inst.dispose()


@pytest.fixture(autouse=True, scope="module")
def _code_location_isolation():
    """A test module that loads a code location of its own (a scratch folder with its own
    ``definitions.py``) puts that folder first on ``sys.path``, as the command line does in
    its one process. Afterwards the repo's code location must be the one imported again:
    ``sys.path`` and the code-location modules are restored after each test module."""
    path = list(sys.path)
    modules = dict(sys.modules)
    yield
    sys.path[:] = path
    for name in list(sys.modules):
        top = name.split(".")[0]
        if (
            top in ("definitions", "assets", "sensors")
            and modules.get(name) is not sys.modules[name]
        ):
            if name in modules:
                sys.modules[name] = modules[name]
            else:
                del sys.modules[name]
