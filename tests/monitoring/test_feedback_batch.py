"""Labelled production rows become an ordinary landed batch of the dataset."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlcicd_dagster.monitoring import export_feedback_batch
from mlcicd_dagster.monitoring.feedback_batch import deterministic_id, hard_examples
from mlcicd_dagster.monitoring.logs import write_feedback_part, write_prediction_part

from .conftest import T0

H = dt.timedelta(hours=1)
S = dt.timedelta(seconds=1)


def _log(home, n=20, with_id=False):
    rng = np.random.default_rng(0)
    p = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "ts": [T0 + i * S for i in range(n)],
            "model_version": "1",
            "track": "stable",
            "prediction": np.linspace(0.05, 0.95, n),
            "LIMIT": (np.arange(n) + 1) * 10000.0,  # distinct rows: no repeated requests
            "SEX": rng.integers(1, 3, n).astype(float),
        }
    )
    if with_id:
        p["ID"] = np.arange(100, 100 + n)
    shadow = p.iloc[:5].copy()
    shadow["track"], shadow["model_version"] = "shadow", "2"
    write_prediction_part(home.predictions("m"), pd.concat([p, shadow]))
    # labels for 15 of 20 rows: label 1 for even i; one invalid label
    labels = [float(i % 2 == 0) for i in range(15)]
    labels[14] = 3.0
    write_feedback_part(
        home.feedback("m"),
        pd.DataFrame({"request_id": [f"r{i}" for i in range(15)], "label": labels, "ts": T0 + H}),
    )
    return p


@pytest.mark.parametrize("task", [None, "binary"])
def test_export_has_exactly_the_dataset_columns_and_flags_hard_examples(home, task):
    from mlcicd_dagster.models.tasks import make_task

    p = _log(home)
    b = export_feedback_batch(
        home,
        "m",
        "ds",
        T0,
        T0 + H,
        features=["LIMIT", "SEX"],
        label="y",
        id_column="ID",
        dtypes={"SEX": "int64", "y": "int64"},
        as_of=T0 + 2 * H,
        task=make_task(task) if task else None,  # the pipeline's task: the same batch
    )
    assert b.created and b.path.parent == home.landing("ds") and b.path.name.startswith("feedback-")
    df = pd.read_parquet(b.path)
    assert list(df.columns) == ["ID", "LIMIT", "SEX", "y"]
    assert len(df) == 14  # labelled and valid; shadow duplicates and unlabelled rows left out
    assert df["SEX"].dtype == np.int64 and df["y"].dtype == np.int64
    assert df["ID"].tolist() == [deterministic_id(f"r{i}") for i in range(14)]
    assert df["ID"].is_unique and (df["ID"] > 0).all()
    # features from the log, labels from feedback
    np.testing.assert_array_equal(df["LIMIT"], p["LIMIT"].iloc[:14])
    np.testing.assert_array_equal(df["y"], [i % 2 == 0 for i in range(14)])
    # hard examples: prediction >= 0.5 disagrees with the label
    pred = p["prediction"].iloc[:14].to_numpy()
    wrong = np.flatnonzero((pred >= 0.5) != (df["y"].to_numpy() == 1))
    assert b.n_hard == len(wrong) > 0
    assert list(b.hard_example_ids) == df["ID"].iloc[wrong].tolist()
    assert hard_examples(b.path) == list(b.hard_example_ids)
    assert b.metadata["id_source"] == "request_id hash"
    # no temp files left behind in landing
    assert [x.name for x in home.landing("ds").iterdir()] == [b.path.name]


def test_export_is_idempotent(home):
    _log(home)
    kw = dict(features=["LIMIT", "SEX"], label="y", as_of=T0 + 2 * H)
    first = export_feedback_batch(home, "m", "ds", T0, T0 + H, **kw)
    mtime = first.path.stat().st_mtime_ns
    second = export_feedback_batch(home, "m", "ds", T0, T0 + H, **kw)
    assert not second.created and second.path == first.path
    assert second.n_rows == first.n_rows and second.hard_example_ids == first.hard_example_ids
    assert first.path.stat().st_mtime_ns == mtime
    assert len(list(home.landing("ds").iterdir())) == 1
    assert pq.read_table(first.path).column_names == ["LIMIT", "SEX", "y"]


def test_logged_id_is_used_and_empty_window_writes_nothing(home):
    _log(home, with_id=True)
    b = export_feedback_batch(
        home,
        "m",
        "ds",
        T0,
        T0 + H,
        features=["LIMIT", "SEX"],
        label="y",
        id_column="ID",
        as_of=T0 + 2 * H,
    )
    assert pd.read_parquet(b.path)["ID"].tolist() == list(range(100, 114))
    assert b.metadata["id_source"] == "logged"
    empty = export_feedback_batch(
        home, "m", "ds", T0 + 5 * H, T0 + 6 * H, features=["LIMIT", "SEX"], label="y"
    )
    assert empty.path is None and not empty.created and empty.n_rows == 0


def test_bad_casts_and_columns_are_refused(home):
    _log(home)
    with pytest.raises(ValueError, match="change when cast"):
        export_feedback_batch(
            home,
            "m",
            "ds",
            T0,
            T0 + H,
            features=["LIMIT"],
            label="y",
            dtypes={"LIMIT": "int8"},
            as_of=T0 + 2 * H,
        )
    with pytest.raises(ValueError, match="distinct"):
        export_feedback_batch(home, "m", "ds", T0, T0 + H, features=["y"], label="y")
    assert list(home.landing("ds").iterdir()) == []


def test_repeated_identical_requests_are_one_example(home):
    # A client polling with the same features and the same label: one training row.
    n = 30
    p = pd.DataFrame(
        {
            "request_id": [f"q{i}" for i in range(n)],
            "ts": [T0 + i * S for i in range(n)],
            "model_version": "1",
            "track": "stable",
            "prediction": 0.3,
            "LIMIT": np.where(np.arange(n) < 20, 50000.0, (np.arange(n) + 1) * 1000.0),
            "SEX": 1.0,
        }
    )
    write_prediction_part(home.predictions("m"), p)
    write_feedback_part(
        home.feedback("m"),
        pd.DataFrame({"request_id": p["request_id"], "label": 0.0, "ts": T0 + H}),
    )
    b = export_feedback_batch(
        home, "m", "ds", T0, T0 + H, features=["LIMIT", "SEX"], label="y", as_of=T0 + 2 * H
    )
    df = pd.read_parquet(b.path)
    assert len(df) == 11  # 20 identical requests -> 1, plus 10 distinct ones
    assert b.metadata["n_repeats_dropped"] == 19
