from __future__ import annotations

import datetime as dt

import pytest

from mlcicd_dagster.platform.home import Home

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Home:
    monkeypatch.setenv("MLCICD_HOME", str(tmp_path / "home"))
    return Home.from_env().ensure("ds")
