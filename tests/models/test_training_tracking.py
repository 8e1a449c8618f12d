"""Trainers, MLflow tracking (params, metrics, plots, tags), fingerprints, card, CI report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlcicd_dagster.models.ci import judge_candidate
from mlcicd_dagster.models.config import load_gate_config
from mlcicd_dagster.models.registry import (
    delete_alias,
    get_alias,
    get_version_tags,
    set_alias,
)
from mlcicd_dagster.models.tracking import data_fingerprint, train_and_track
from mlcicd_dagster.models.trainers import TorchTabularTrainer, make_trainer

LABEL = "default.payment.next.month"
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "credit_default"


def test_torch_trainer_is_seeded_and_stops_early(pool, features):
    train = pool.iloc[:2500]
    kw = {"max_epochs": 30, "patience": 2, "hidden": (16,)}
    a = TorchTabularTrainer(**kw).fit(train[features], train[LABEL].to_numpy(), seed=3)
    b = TorchTabularTrainer(**kw).fit(train[features], train[LABEL].to_numpy(), seed=3)
    rows = pool[features].iloc[5000:5200]
    np.testing.assert_array_equal(a.predictor.predict_proba(rows), b.predictor.predict_proba(rows))
    assert a.info["device"] == "cpu" and a.info["mixed_precision"] == "off"
    assert a.info["best_epoch"] <= a.info["epochs"] <= 30
    assert len(a.info["val_curve"]) == a.info["epochs"]


def test_trainer_errors(pool, features):
    with pytest.raises(ValueError, match="unknown trainer"):
        make_trainer("xgboost")
    with pytest.raises(ValueError, match="bad parameters"):
        make_trainer("sklearn", {"nope": 1})
    with pytest.raises(ValueError, match="unknown feature"):
        make_trainer("sklearn", {"monotonic_increase": ["PAY_9"]}).fit(
            pool[features].head(500), pool[LABEL].head(500).to_numpy()
        )
    with pytest.raises(ValueError, match=r"label not one of the declared binary classes.*2 \(500"):
        make_trainer("sklearn").fit(pool[features].head(500), np.full(500, 2))
    with pytest.raises(ValueError, match="only one class"):
        make_trainer("sklearn").fit(pool[features].head(500), np.zeros(500))
    with pytest.raises(ValueError, match="too few training rows"):
        make_trainer("sklearn").fit(pool[features].head(20), pool[LABEL].head(20))


def test_track_reuse_card_and_ci(tracking_uri, pool, golden, features, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from mlcicd_dagster.models.card import card, store_card

    monkeypatch.setenv("MLCICD_CODE_VERSION", "test-code-1")
    train, holdout = pool.iloc[:5000], pool.iloc[16000:18000]
    trainer = make_trainer("sklearn", {"max_iter": 60})
    first = train_and_track(
        trainer,
        train,
        holdout,
        label=LABEL,
        features=features,
        tracking_uri=tracking_uri,
        model_name="tracked",
        dagster_run_id="dagster-run-1",
    )
    assert not first.reused and first.registered.version == "1"
    c = MlflowClient(tracking_uri=tracking_uri)
    run = c.get_run(first.registered.run_id)
    assert run.data.tags["dagster_run_id"] == "dagster-run-1"
    assert run.data.tags["mlcicd.code_version"] == "test-code-1"
    assert run.data.tags["mlcicd.data_fingerprint"] == data_fingerprint(train[[*features, LABEL]])
    assert run.data.params["max_iter"] == "60"
    assert 0.7 < run.data.metrics["holdout_auc"] < 0.85
    arts = {a.path for a in c.list_artifacts(run.info.run_id, "plots")}
    assert "plots/holdout_curves.png" in arts
    # unchanged inputs: no retraining
    again = train_and_track(
        trainer,
        train,
        holdout,
        label=LABEL,
        features=features,
        tracking_uri=tracking_uri,
        model_name="tracked",
    )
    assert again.reused and again.registered.version == "1" and again.trained is None
    # changed params: a new version
    monkeypatch.setenv("MLCICD_CODE_VERSION", "test-code-2")
    changed = train_and_track(
        make_trainer("sklearn", {"max_iter": 60}),
        train.iloc[:4000],
        holdout,
        label=LABEL,
        features=features,
        tracking_uri=tracking_uri,
        model_name="tracked",
    )
    assert not changed.reused and changed.registered.version == "2"

    # aliases
    set_alias(tracking_uri, "tracked", "champion", "1")
    assert get_alias(tracking_uri, "tracked", "champion") == "1"
    set_alias(tracking_uri, "tracked", "challenger", "2")
    delete_alias(tracking_uri, "tracked", "challenger")
    delete_alias(tracking_uri, "tracked", "challenger")  # idempotent
    assert get_alias(tracking_uri, "tracked", "challenger") is None

    # CI judgement of v2 against champion v1, then the card
    cfg = load_gate_config(ASSETS / "gates.yaml")
    report = judge_candidate(
        "models:/tracked/2",
        tracking_uri=tracking_uri,
        model_name="tracked",
        holdout=holdout,
        golden=golden,
        config=cfg,
    )
    md = report.to_markdown()
    assert report.champion == "1" and "non_inferiority" in md and "infra_validation" in md
    assert ("PASSED" in md) == report.passed
    assert report.to_dict()["gates"][0]["rows"]
    text = card(
        model_name="tracked",
        version="2",
        trainer="sklearn_hgb",
        params=changed.trained.params,
        metrics=changed.metrics,
        data={"rows": 4000, "features": features},
        gates=report.gates,
        champion_version="1",
        run_url=changed.run_url,
    )
    assert "## Slices" in text and "## Limits" in text and "SEX=male" in text
    store_card(tracking_uri, "tracked", "2", changed.registered.run_id, text)
    assert c.get_model_version("tracked", "2").description.startswith("# Model card")
    local = mlflow.artifacts.download_artifacts(
        run_id=changed.registered.run_id, artifact_path="model_card.md", tracking_uri=tracking_uri
    )
    assert Path(local).read_text() == text
    assert get_version_tags(tracking_uri, "tracked", "2")["mlcicd.fingerprint"] == (
        changed.fingerprint
    )


def test_card_description_fits_mlflows_column_limit():
    # PostgreSQL enforces MLflow's 5000-character description column; SQLite does not.
    from mlcicd_dagster.models.card import DESCRIPTION_MAX_CHARS, description_of

    long_card = "# card\n" + "x" * 20_000
    assert len(description_of(long_card)) == DESCRIPTION_MAX_CHARS
    assert "model_card.md" in description_of(long_card)
    assert description_of("# short") == "# short"
