"""Task types end to end at the model layer: labels, trainers per task, the user's own
estimators and torch modules, text categoricals with missing values, and refusal of a
model whose output does not fit its task (real MLflow store, real skops/pt2 artifacts)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from mlcicd_dagster.models.loading import (
    ModelLoadError,
    declare_trusted_types,
    load_predictor,
    log_and_register,
)
from mlcicd_dagster.models.stats import PROB_CLIP
from mlcicd_dagster.models.tasks import TaskError, make_task
from mlcicd_dagster.models.trainers import make_trainer


# ---------------------------------------------------------------------------
# the task interface
# ---------------------------------------------------------------------------
def test_registry_labels_and_encoding():
    with pytest.raises(TaskError, match="task: unknown task 'ranking'"):
        make_task("ranking")
    with pytest.raises(TaskError, match="classes: a multiclass task must declare"):
        make_task("multiclass")
    with pytest.raises(TaskError, match="classes: a regression task has no classes"):
        make_task("regression", ["a"])
    ints = make_task("multiclass", [0, 1, 2])
    # 3 kinds of the same label: int, float from a CSV column with a gap, text
    assert ints.encode(pd.Series([2, 1.0, "0"], dtype=object)).tolist() == [2, 1, 0]
    words = make_task("multiclass", ["cat", "dog", "bird"])
    assert words.encode(["bird", "cat"]).tolist() == [2, 0]
    check = words.check_labels(pd.Series(["cat", "fish", None, "fish"]))
    assert check.bad.tolist() == [False, True, True, True]
    assert "fish (2 rows)" in check.reason and "<missing> (1 rows)" in check.reason
    reg = make_task("regression")
    check = reg.check_labels(pd.Series([1.5, "abc", np.inf, 3]))
    assert check.bad.tolist() == [False, True, True, False]
    assert "not a finite number" in check.reason
    binary = make_task("binary", ["no", "yes"])
    assert binary.encode(["yes", "no"]).tolist() == [1, 0]
    with pytest.raises(TaskError, match="only one class"):
        binary.check_trainable(np.zeros(10, np.int64))
    with pytest.raises(TaskError, match=r"class\(es\) \['bird'\] declared"):
        words.check_trainable(np.array([0, 1, 0, 1]))
    with pytest.raises(TaskError, match="labels that vary"):
        reg.check_trainable(np.full(5, 3.0))


def test_outputs_that_do_not_fit_are_refused_never_reshaped():
    binary, multi = make_task("binary"), make_task("multiclass", ["a", "b", "c"])
    with pytest.raises(TaskError, match=r"shape \(3, 2\) for 3 rows; a binary model"):
        binary.check_output(np.full((3, 2), 0.5), 3)
    # the old bug: a (1, 3) softmax row flattened into 3 "P(positive)" values
    with pytest.raises(TaskError, match=r"shape \(3,\) for 3 rows; a multiclass model"):
        multi.check_output(np.array([0.2, 0.3, 0.5]), 3)
    with pytest.raises(TaskError, match="not logits"):
        multi.check_output(np.array([[2.0, -1.0, 0.5]]), 1)
    with pytest.raises(TaskError, match="outside \\[0, 1\\]"):
        binary.check_output(np.array([1.7, 0.2]), 2)
    assert binary.check_output(np.array([[0.25], [0.5]]), 2).tolist() == [0.25, 0.5]
    # per-row losses are bounded by the one clipping constant
    worst = -np.log(PROB_CLIP)
    assert binary.row_loss(np.array([1]), np.array([0.0]))[0] == pytest.approx(worst)
    assert multi.row_loss(np.array([2]), np.array([[1.0, 0.0, 0.0]]))[0] == pytest.approx(worst)
    m = multi.metrics(np.array([0, 1, 2, 2]), np.eye(3)[[0, 1, 2, 0]])
    assert m["accuracy"] == 0.75 and 0 < m["macro_f1"] < 1
    r = make_task("regression").metrics(np.array([1.0, 2.0]), np.array([2.0, 2.0]))
    assert r["mae"] == 0.5 and r["rmse"] == pytest.approx(np.sqrt(0.5))


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    d = load_digits(as_frame=True)
    frame = d.frame.rename(columns={"target": "digit"})
    return frame.sample(600, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True, scaled=False).frame


def people(n: int, seed: int) -> pd.DataFrame:
    """Text categoricals with missing values, missing numbers, a text id, text labels."""
    rng = np.random.default_rng(seed)
    city = rng.choice(np.array(["paris", "lyon", "nice", None], dtype=object), n)
    income = rng.normal(50, 15, n)
    income[rng.random(n) < 0.1] = np.nan
    score = (city == "paris") * 1.5 + np.nan_to_num(income - 50) / 10 + rng.normal(0, 1, n)
    tier = np.where(score > 1.2, "gold", np.where(score > -0.2, "silver", "bronze"))
    return pd.DataFrame(
        {"customer": [f"c-{i:05d}" for i in range(n)], "city": city, "income": income, "tier": tier}
    )


def _register(trained, name, X, uri, **kw):
    return log_and_register(
        trained.model,
        model_name=name,
        X_example=X.head(8),
        tracking_uri=uri,
        feature_names=trained.feature_names,
        task=trained.task,
        string_features=trained.string_features,
        allow_missing=trained.allow_missing,
        **kw,
    )


# ---------------------------------------------------------------------------
# built-in trainers, one per task, through a real artifact
# ---------------------------------------------------------------------------
def test_default_sklearn_multiclass_and_regression_round_trip(tracking_uri, digits, diabetes):
    feats = [c for c in digits.columns if c != "digit"]
    task = make_task("multiclass", list(range(10)))
    trained = make_trainer("sklearn", {"max_iter": 20}, task=task).fit(
        digits[feats], digits["digit"]
    )
    reg = _register(trained, "digits_sk", digits[feats], tracking_uri)
    loaded = load_predictor(reg.model_uri, tracking_uri=tracking_uri)
    out = loaded.predict(digits[feats].head(50))
    assert out.shape == (50, 10) and loaded.task == task
    np.testing.assert_allclose(out, trained.predictor.predict(digits[feats].head(50)), atol=1e-12)
    assert task.metrics(task.encode(digits["digit"].head(50)), out)["accuracy"] > 0.8
    with pytest.raises(TaskError, match="use predict"):
        loaded.predict_proba(digits[feats].head(2))

    dfe = [c for c in diabetes.columns if c != "target"]
    rtask = make_task("regression")
    rt = make_trainer("sklearn", {"max_iter": 30}, task=rtask).fit(
        diabetes[dfe], diabetes["target"]
    )
    rreg = _register(rt, "diabetes_sk", diabetes[dfe], tracking_uri)
    rl = load_predictor(rreg.model_uri, tracking_uri=tracking_uri)
    pred = rl.predict(diabetes[dfe].head(20))
    assert pred.shape == (20,) and rl.task.name == "regression"
    np.testing.assert_allclose(pred, rt.predictor.predict(diabetes[dfe].head(20)))
    assert rtask.metrics(diabetes["target"].to_numpy(), rl.predict(diabetes[dfe]))["r2"] > 0.3


def test_text_categoricals_missing_values_text_labels(tracking_uri):
    train, fresh = people(1500, 0), people(50, 1)
    feats = ["city", "income"]  # the text id "customer" is not a feature
    task = make_task("multiclass", ["bronze", "silver", "gold"])
    trained = make_trainer("sklearn", {"max_iter": 40}, task=task).fit(train[feats], train["tier"])
    assert trained.string_features == ["city"] and trained.allow_missing
    reg = _register(trained, "people", train[feats], tracking_uri)
    loaded = load_predictor(reg.model_uri, tracking_uri=tracking_uri)
    fresh.loc[0, "city"] = "marseille"  # a category never seen: treated as missing
    fresh.loc[1, ["city", "income"]] = [None, np.nan]
    out = loaded.predict(fresh[feats])
    assert out.shape == (50, 3)
    np.testing.assert_allclose(out, trained.predictor.predict(fresh[feats]), atol=1e-12)
    acc = task.metrics(task.encode(fresh["tier"]), out)["accuracy"]
    assert acc > 0.5, acc
    bad = fresh[feats].head(2).copy()
    bad["income"] = ["high", 3.0]
    with pytest.raises(ValueError, match="non-numeric value.*income"):
        loaded.predict(bad)


# ---------------------------------------------------------------------------
# the user's own model
# ---------------------------------------------------------------------------
def test_user_estimators_with_declared_trust(tracking_uri, diabetes):
    data = diabetes.assign(high=(diabetes["target"] > 140).astype(int))
    feats = [c for c in diabetes.columns if c != "target"]
    forest = make_trainer(
        "sklearn",
        factory="tests.models.user_models:random_forest",
        model_params={"n_estimators": 5},
    ).fit(data[feats], data["high"], seed=1)
    # a random forest needs sklearn.tree._tree.Tree: refused until the pipeline declares it
    with pytest.raises(ModelLoadError, match=r"sklearn\.tree\._tree\.Tree.*trusted_types"):
        _register(forest, "user_forest", data[feats], tracking_uri)
    declare_trusted_types("user_forest", ["sklearn.tree._tree.Tree"])
    try:
        reg = _register(forest, "user_forest", data[feats], tracking_uri)
        loaded = load_predictor(reg.model_uri, tracking_uri=tracking_uri)
        np.testing.assert_allclose(
            loaded.predict_proba(data[feats].head(30)),
            forest.predictor.predict_proba(data[feats].head(30)),
        )
    finally:
        declare_trusted_types("user_forest", [])
    with pytest.raises(ModelLoadError, match=r"untrusted types: sklearn\.tree\._tree\.Tree"):
        load_predictor(reg.model_uri, tracking_uri=tracking_uri)  # trust withdrawn: refused

    # a Pipeline by column name, text feature with missing values, text binary labels
    rows = people(800, 2).assign(vip=lambda d: np.where(d["tier"] == "gold", "yes", "no"))
    own = make_trainer(
        "sklearn",
        factory="tests.models.user_models.text_pipeline",
        task=make_task("binary", ["no", "yes"]),
    ).fit(rows[["city", "income"]], rows["vip"])
    # OneHotEncoder keeps a numpy.dtype: this pipeline declares it
    declare_trusted_types("user_pipeline", ["numpy.dtype"])
    try:
        reg = _register(own, "user_pipeline", rows[["city", "income"]], tracking_uri)
        loaded = load_predictor(reg.model_uri, tracking_uri=tracking_uri)
    finally:
        declare_trusted_types("user_pipeline", [])
    p = loaded.predict_proba(rows[["city", "income"]].head(40))
    assert p.shape == (40,) and ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(p, own.predictor.predict(rows[["city", "income"]].head(40)))


def test_torch_per_task_and_user_module(tracking_uri, digits, diabetes):
    import torch

    feats = [c for c in digits.columns if c != "digit"]
    task = make_task("multiclass", list(range(10)))
    own = make_trainer(
        "torch",
        {"max_epochs": 8, "batch_size": 128},
        task=task,
        factory="tests.models.user_models:linear_scores",
    ).fit(digits[feats], digits["digit"])
    reg = _register(own, "digits_torch", digits[feats], tracking_uri)
    loaded = load_predictor(reg.model_uri, tracking_uri=tracking_uri)
    out = loaded.predict(digits[feats].head(3))
    assert out.shape == (3, 10)  # three rows, ten class probabilities each: not flattened
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out, own.predictor.predict(digits[feats].head(3)), atol=1e-6)
    one = loaded.predict(digits[feats].head(1))
    assert one.shape == (1, 10)

    # a module whose output does not fit the task is refused when trained ...
    with pytest.raises(TaskError, match=r"returned shape \(2, 3\).*binary task"):
        make_trainer(
            "torch",
            {"max_epochs": 1},
            factory="tests.models.user_models:returns_probabilities_twice",
        ).fit(digits[feats], (digits["digit"] > 4).astype(int))
    # ... and when logged as the wrong task (a multiclass module presented as binary)
    wrong = dataclasses.replace(own, task=make_task("binary"))
    with pytest.raises(TaskError, match=r"shape \(8, 10\) for 8 rows; a binary model"):
        _register(wrong, "digits_wrong", digits[feats], tracking_uri)

    dfe = [c for c in diabetes.columns if c != "target"]
    rt = make_trainer(
        "torch", {"max_epochs": 30, "batch_size": 64}, task=make_task("regression")
    ).fit(diabetes[dfe], diabetes["target"])
    pred = rt.predictor.predict(diabetes[dfe])
    assert pred.shape == (len(diabetes),)
    # the target's scale lives in the module: predictions are in the label's units
    assert 60 < float(pred.mean()) < 250 and torch.is_tensor(rt.model.y_mu)
