"""Fixtures for rollout tests: a real MLflow store with three small registered versions,
a fake clock, and a simulated traffic source that follows the canary weight."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.rollout import analysis as an
from mlcicd_dagster.rollout.state import DeploymentState, ModelRef

DATA = Path(__file__).resolve().parents[2] / "assets" / "credit_default" / "data"
LABEL = "default.payment.next.month"
MODEL = "rollout_test"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def frame() -> pd.DataFrame:
    return pd.read_csv(DATA / "pool.csv.gz", nrows=3000)


@pytest.fixture(scope="session")
def features(frame) -> list[str]:
    return [c for c in frame.columns if c not in ("ID", LABEL)]


@pytest.fixture(scope="session")
def registered(tmp_path_factory, frame, features) -> tuple[str, dict[str, ModelRef]]:
    """(tracking URI, {"v1","v2","v3"} -> ModelRef): three logistic regressions, registered."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlcicd_dagster.models.loading import log_and_register

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    refs = {}
    for i, c in enumerate((1.0, 0.1, 0.01), start=1):
        rows = frame.iloc[: 1000 * i]
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=300))
        model.fit(rows[features], rows[LABEL])
        out = log_and_register(
            model, model_name=MODEL, X_example=rows[features].head(5), tracking_uri=uri
        )
        refs[f"v{i}"] = ModelRef(version=out.version, model_uri=out.model_uri, run_id=out.run_id)
    return uri, refs


@pytest.fixture
def client(registered):
    from mlflow import MlflowClient

    uri, _ = registered
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def home(tmp_path) -> Home:
    return Home(tmp_path / "home").ensure()


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.sleeps += 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@dataclass
class SimTraffic:
    """A traffic source: each ``collect`` is one interval of ``per_interval`` requests split
    by the canary weight in the state; per-request log-loss, latency and predictions are
    drawn from normal laws, the canary's shifted by ``loss_shift`` etc."""

    per_interval: int = 400
    loss_shift: float = 0.0
    latency_ratio: float = 1.0
    label_fraction: float = 1.0
    seed: int = 0
    fail_on_call: int | None = None  # raise (or run ``on_fail``) at this collect call
    on_fail: object = None
    calls: int = 0
    weights_seen: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.arms: dict[str, dict[str, list[np.ndarray]]] = {
            "canary": {"log_loss": [], "latency": [], "prediction_shift": []},
            "stable": {"log_loss": [], "latency": [], "prediction_shift": []},
        }

    def collect(self, state: DeploymentState, since) -> an.Evidence:
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            if callable(self.on_fail):
                self.on_fail()
            raise RuntimeError("injected failure: the deploy op died here")
        w = state.canary.weight if state.canary else 0.0
        self.weights_seen.append(w)
        n_c = int(self.rng.binomial(self.per_interval, w))
        for arm, n in (("canary", n_c), ("stable", self.per_interval - n_c)):
            shift = self.loss_shift if arm == "canary" else 0.0
            ratio = self.latency_ratio if arm == "canary" else 1.0
            n_lab = int(self.rng.binomial(n, self.label_fraction))
            self.arms[arm]["log_loss"].append(self.rng.normal(0.45 + shift, 0.4, n_lab))
            self.arms[arm]["latency"].append(self.rng.normal(math.log(5 * ratio), 0.3, n))
            self.arms[arm]["prediction_shift"].append(self.rng.normal(0.22, 0.15, n))
        return an.Evidence(
            canary={k: an.Moments.of(np.concatenate(v)) for k, v in self.arms["canary"].items()},
            stable={k: an.Moments.of(np.concatenate(v)) for k, v in self.arms["stable"].items()},
        )


@pytest.fixture
def traffic():
    """Factory for ``SimTraffic`` sources."""
    return SimTraffic
