"""Infra validation compares with a stated tolerance: a LogisticRegression answers in a
fresh process within float64 rounding of the in-memory model (it once differed by
1.9e-17 and an exact comparison rejected it)."""

from __future__ import annotations

from mlcicd_dagster.models.loading import load_predictor
from mlcicd_dagster.models.trainers import make_trainer

LABEL = "default.payment.next.month"


def test_logistic_regression_passes_infra_validation(tracking_uri, pool, golden, features):
    from mlcicd_dagster.models.config import GateConfig
    from mlcicd_dagster.models.gates import run_all_gates
    from mlcicd_dagster.models.loading import log_and_register

    trained = make_trainer("sklearn", factory="tests.models.user_models:scaled_logistic").fit(
        pool[features].head(3000), pool[LABEL].head(3000)
    )
    reg = log_and_register(
        trained.model,
        model_name="logistic",
        X_example=pool[features].head(8),
        tracking_uri=tracking_uri,
        feature_names=features,
    )
    candidate = load_predictor(reg.model_uri, tracking_uri=tracking_uri)
    config = GateConfig(label=LABEL)
    assert config.infra_atol > 0 and config.infra_rtol > 0  # stated, not exact
    (result,) = run_all_gates(
        candidate,
        None,
        holdout=golden.head(300),
        golden=golden.head(300),
        config=config,
        candidate_uri=reg.model_uri,
        tracking_uri=tracking_uri,
        only=["infra_validation"],
    )
    assert result.passed, result.to_markdown()
    batch = next(r for r in result.rows if r["check"] == "batch request")
    assert batch["max_abs_diff"] <= config.infra_atol + config.infra_rtol
    assert "rtol" in batch
