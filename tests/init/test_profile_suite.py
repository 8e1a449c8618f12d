"""The profiler and the suite it writes, judged by the data gate's own validator.

A suite profiled from one sample must let valid batches of the same source through
(the extremes of a sample are not the population's) and still block broken ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from init_synth import draw

from mlcicd_dagster.data.suite import suite_from_dict
from mlcicd_dagster.data.validate import validate_batch
from mlcicd_dagster.init.errors import InitError
from mlcicd_dagster.init.profile import infer_task, profile_frame
from mlcicd_dagster.init.suite_writer import suite_yaml


@pytest.fixture(scope="module")
def profiled():
    df = draw(20_000, seed=0)
    profile = profile_frame(df, label="churned", id_column="customer_id")
    suite = suite_from_dict(yaml.safe_load(suite_yaml(profile, "churn", source="x.csv")))
    return df, profile, suite


def test_profile_roles_and_task(profiled):
    _, profile, suite = profiled
    assert profile.task == "binary" and profile.task_inferred
    assert set(profile.numeric_features) == {
        "age",
        "income",
        "balance",
        "claims",
        "tenure",
        "score",
    }
    assert set(profile.categorical_features) == {"products", "region"}
    assert profile.column("score").nulls > 0
    assert profile.column("region").categories == ("centre", "east", "north", "south", "west")
    assert suite.label is None and suite.id_column is None  # declared once: defs.yaml
    assert suite.columns[0] == "customer_id"


def test_valid_future_batches_pass(profiled):
    """40 valid batches of 50..5,000 rows from other seeds: none is blocked."""
    _, _, suite = profiled
    rng = np.random.default_rng(1)
    blocked = []
    for seed in range(1, 41):
        n = int(rng.choice([50, 200, 1000, 5000]))
        report = validate_batch(draw(n, seed=seed, start_id=10**6 * seed), suite, engine="fast")
        if not report.passed:
            blocked.append((seed, n, report.summary()))
    assert not blocked, blocked


def test_written_suite_is_valid_great_expectations(profiled):
    """GE itself builds and runs the whole written suite, and agrees with the fast pass."""
    _, _, suite = profiled
    batch = draw(500, seed=99, start_id=10**8)
    gx = validate_batch(batch, suite, engine="gx")
    assert gx.passed, gx.summary()
    assert not gx.disagreements


@pytest.mark.parametrize(
    ("breakage", "column"),
    [
        (lambda b: b.assign(age=np.where(np.arange(len(b)) < 5, 500, b["age"])), "age"),
        (lambda b: b.assign(churned=2), "churned"),
        (lambda b: b.drop(columns=["income"]), None),
        (lambda b: b.assign(balance="n/a"), "balance"),
        (lambda b: b.assign(region="Mars"), "region"),
        (lambda b: b.assign(customer_id=1), "customer_id"),
        (lambda b: b.assign(income=np.nan), "income"),
        (
            lambda b: b.assign(churned=np.where(np.arange(len(b)) < 3, np.nan, b["churned"])),
            "churned",
        ),
    ],
)
def test_broken_batches_are_blocked(profiled, breakage, column):
    _, _, suite = profiled
    bad = breakage(draw(300, seed=7, start_id=10**7))
    report = validate_batch(bad, suite, engine="fast")
    assert not report.passed
    if column is not None:
        assert column in {r.column for r in report.errors}, report.summary()


def test_label_domain_per_task():
    rng = np.random.default_rng(0)
    x = rng.normal(size=600)
    multi = pd.DataFrame({"x": x, "y": rng.choice(["a", "b", "c"], 600)})
    reg = pd.DataFrame({"x": x, "y": x * 3 + rng.normal(size=600)})
    assert infer_task(multi["y"]) == "multiclass"
    assert infer_task(reg["y"]) == "regression"
    assert infer_task(pd.Series(rng.integers(0, 100, 600))) == "regression"
    assert infer_task(pd.Series(rng.integers(0, 5, 600))) == "multiclass"
    assert infer_task(pd.Series(["yes", "no"] * 300)) == "binary"
    suite_m = suite_from_dict(
        yaml.safe_load(suite_yaml(profile_frame(multi, label="y"), "m", source="m.csv"))
    )
    domain = [
        s
        for s in suite_m.expectations
        if s.column == "y" and s.type == "expect_column_values_to_be_in_set"
    ]
    assert domain and domain[0].kwargs["value_set"] == ["a", "b", "c"]
    assert domain[0].severity == "critical"
    assert not validate_batch(multi.assign(y="d"), suite_m, engine="fast").passed
    suite_r = suite_from_dict(
        yaml.safe_load(suite_yaml(profile_frame(reg, label="y"), "r", source="r.csv"))
    )
    assert validate_batch(reg, suite_r, engine="fast").passed
    assert not validate_batch(reg.assign(y="high"), suite_r, engine="fast").passed
    assert not validate_batch(reg.assign(y=1e9), suite_r, engine="fast").passed


@pytest.mark.parametrize(
    ("frame", "kwargs", "message"),
    [
        (pd.DataFrame({"x": [1.0, 2.0] * 150, "y": [1] * 300}), {"label": "y"}, "one class"),
        (
            pd.DataFrame({"x": [1.0, 2.0] * 150, "y": [0, 1] * 150}),
            {"label": "z"},
            "not in the data",
        ),
        (
            pd.DataFrame({"x": [1.0, 2.0] * 150, "y": [0, 1, None] * 100}),
            {"label": "y"},
            "missing in 100",
        ),
        (
            pd.DataFrame({"x": [1.0, 2.0] * 150, "y": [0, 1, 2] * 100}),
            {"label": "y", "task": "binary"},
            "exactly two",
        ),
        (
            pd.DataFrame({"x": [1.0, 2.0] * 150, "y": ["a", "b"] * 150}),
            {"label": "y", "task": "regression"},
            "numeric label",
        ),
        (
            pd.DataFrame({"i": [1, 1] * 150, "x": [1.0, 2.0] * 150, "y": [0, 1] * 150}),
            {"label": "y", "id_column": "i"},
            "unique",
        ),
        (pd.DataFrame({"y": [0, 1] * 150}), {"label": "y"}, "no feature columns"),
    ],
)
def test_profile_refuses_unusable_data(frame, kwargs, message):
    with pytest.raises(InitError, match=message):
        profile_frame(frame, **kwargs)
