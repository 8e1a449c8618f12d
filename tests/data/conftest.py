"""Fixtures for the data-gate tests: the shipped suite, real rows, a temporary home."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # --import-mode=importlib

from data_support import DATA, DATASET, SUITE_FILE  # noqa: E402

from mlcicd_dagster.data.lake import Lake
from mlcicd_dagster.data.suite import Suite, load_suite
from mlcicd_dagster.platform.home import Home


@pytest.fixture(scope="session")
def suite() -> Suite:
    return load_suite(SUITE_FILE)


@pytest.fixture(scope="session")
def pool() -> pd.DataFrame:
    return pd.read_csv(DATA / "pool.csv.gz")


@pytest.fixture(scope="session")
def golden() -> pd.DataFrame:
    return pd.read_csv(DATA / "golden.csv.gz")


@pytest.fixture
def sample(pool: pd.DataFrame) -> pd.DataFrame:
    """300 real rows, a fresh copy per test (tests mutate it)."""
    return pool.iloc[:300].copy()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.setenv("MLCICD_HOME", str(tmp_path / "home"))
    return Home.from_env().ensure(DATASET)


@pytest.fixture
def lake(home: Home) -> Lake:
    return Lake(home.lake(DATASET))
