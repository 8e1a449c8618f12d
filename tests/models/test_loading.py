"""Round trips through a real MLflow store: what is logged is what is loaded, fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlcicd_dagster.models.loading import (
    ModelLoadError,
    SklearnPredictor,
    check_skops_types,
    load_predictor,
    log_and_register,
    to_matrix,
)
from mlcicd_dagster.models.predictor import Predictor


class NotTrusted:
    """A class skops does not know: a model containing it must be refused."""

    def __init__(self) -> None:
        self.x = 1


def test_sklearn_round_trip_by_version_and_alias(tracking_uri, pool, features, small_model):
    from mlflow import MlflowClient

    reg = log_and_register(
        small_model,
        model_name="rt_sklearn",
        X_example=pool[features].head(20),
        tracking_uri=tracking_uri,
        params={"max_iter": 40},
        version_tags={"origin": "test"},
    )
    assert reg.flavor == "sklearn" and reg.model_uri == f"models:/rt_sklearn/{reg.version}"
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    client.set_registered_model_alias("rt_sklearn", "champion", reg.version)
    assert client.get_model_version("rt_sklearn", reg.version).tags["origin"] == "test"
    assert client.get_run(reg.run_id).data.params["max_iter"] == "40"

    for uri in (reg.model_uri, "models:/rt_sklearn@champion"):
        pred = load_predictor(uri, tracking_uri=tracking_uri)
        assert isinstance(pred, Predictor)
        assert pred.version == reg.version
        assert pred.feature_names == features
        rows = pool[features].iloc[4000:4500]
        expected = small_model.predict_proba(rows.to_numpy(np.float64))[:, 1]
        np.testing.assert_array_equal(pred.predict_proba(rows), expected)
        # column order and extra columns do not matter; one row works
        shuffled = pool.iloc[4000:4001][list(reversed(pool.columns))]
        assert pred.predict_proba(shuffled)[0] == expected[0]
    # the artifact is skops, with our trusted list recorded
    import yaml
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(artifact_uri=reg.model_uri, tracking_uri=tracking_uri)
    mlmodel = yaml.safe_load(open(f"{local}/MLmodel"))
    assert mlmodel["flavors"]["sklearn"]["serialization_format"] == "skops"
    assert mlmodel["flavors"]["python_function"]["predict_fn"] == "predict_proba"


def test_torch_round_trip_pt2(tracking_uri, pool, features):
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(len(features), 1)
            self.register_buffer("scale", torch.full((len(features),), 1e-5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.lin(x * self.scale)).squeeze(-1)

    net = Net()
    reg = log_and_register(
        net, model_name="rt_torch", X_example=pool[features].head(20), tracking_uri=tracking_uri
    )
    assert reg.flavor == "torch"
    pred = load_predictor(reg.model_uri, tracking_uri=tracking_uri)
    rows = pool[features].iloc[:300]
    with torch.no_grad():
        expected = net(torch.from_numpy(rows.to_numpy(np.float32))).double().numpy()
    np.testing.assert_allclose(pred.predict_proba(rows), expected, rtol=0, atol=1e-6)
    assert pred.predict_proba(rows.head(1))[0] == pytest.approx(expected[0], abs=1e-6)
    assert pred.predict_proba(rows.head(0)).shape == (0,)


def test_bad_inputs_name_the_problem(pool, features, small_model):
    pred = SklearnPredictor(small_model, features, "7")
    with pytest.raises(ValueError, match="missing feature column.*PAY_0"):
        pred.predict_proba(pool[features].drop(columns=["PAY_0"]).head(3))
    bad = pool[features].head(3).astype(object)
    bad.loc[bad.index[1], "AGE"] = "old"
    with pytest.raises(ValueError, match="non-numeric.*AGE"):
        pred.predict_proba(bad)
    nan = pool[features].head(3).copy()
    nan.loc[nan.index[0], "LIMIT_BAL"] = np.nan
    with pytest.raises(ValueError, match="missing or infinite.*LIMIT_BAL"):
        pred.predict_proba(nan)
    with pytest.raises(ValueError, match="2-d array"):
        to_matrix(np.zeros((2, 3)), features)


def test_unknown_model_or_alias(tracking_uri, pool, features, small_model):
    with pytest.raises(ModelLoadError, match="cannot resolve"):
        load_predictor("models:/no_such_model@champion", tracking_uri=tracking_uri)
    log_and_register(
        small_model,
        model_name="rt_alias",
        X_example=pool[features].head(5),
        tracking_uri=tracking_uri,
    )
    with pytest.raises(ModelLoadError, match="cannot resolve"):
        load_predictor("models:/rt_alias@nobody", tracking_uri=tracking_uri)


def test_pickled_model_is_refused(tracking_uri, tmp_path, pool, features, small_model):
    import mlflow

    path = tmp_path / "pickled"
    mlflow.sklearn.save_model(small_model, str(path), serialization_format="cloudpickle")
    with pytest.raises(ModelLoadError, match="refusing to load"):
        from mlcicd_dagster.models.loading import load_predictor_from_dir

        load_predictor_from_dir(path)


def test_untrusted_types_are_refused_not_pickled(small_model):
    from sklearn.preprocessing import FunctionTransformer

    sneaky = FunctionTransformer(kw_args={"payload": NotTrusted()})
    with pytest.raises(ModelLoadError, match="NotTrusted"):
        check_skops_types(sneaky)
    assert "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor" in (
        check_skops_types(small_model)
    )


def test_non_model_is_rejected(tracking_uri, pool, features):
    with pytest.raises(TypeError, match="cannot log"):
        log_and_register(
            object(),
            model_name="x",
            X_example=pd.DataFrame(pool[features].head(3)),
            tracking_uri=tracking_uri,
        )
