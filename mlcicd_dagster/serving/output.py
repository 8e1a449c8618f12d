"""What a served model answers: exactly what its logged pyfunc's ``predict`` returns.

The answer of ``/invocations`` is the logged pyfunc's output (``mlflow models serve``
parity): for a scikit-learn classifier logged with ``pyfunc_predict_fn="predict_proba"``
that is one row of class probabilities per input row (``[[P(0), P(1)], ...]``); for a
model whose pyfunc returns one number per row, one number per row. The serving code
stays shape-agnostic: a predictor that knows what its pyfunc returns says so with a
``pyfunc_predict(matrix)`` method; the micro-batcher slices whatever comes back by rows.

Monitoring, canary analysis and the prediction log read one number per row: for a
binary classifier P(positive) (:func:`positive_scores`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def pyfunc_output_fn(predictor: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Scores a float64 feature matrix as the model's logged pyfunc would."""
    from mlcicd_dagster.models.predictor import score_fn

    own = getattr(predictor, "pyfunc_predict", None)
    if callable(own):
        return own  # type: ignore[no-any-return]
    try:
        from mlcicd_dagster.models.loading import SklearnPredictor
    except ImportError:  # pragma: no cover - the models package is part of the library
        SklearnPredictor = None  # type: ignore[assignment,misc]  # noqa: N806
    if SklearnPredictor is not None and isinstance(predictor, SklearnPredictor):
        return _sklearn_predict_proba(predictor)
    return score_fn(predictor)  # torch: P(positive) per row, as its pyfunc returns


def _sklearn_predict_proba(predictor: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The estimator's own ``predict_proba`` (``predict`` for regression), as the logged
    pyfunc calls it (``pyfunc_predict_fn``), on one OpenMP thread for micro-batches."""
    import pandas as pd

    from mlcicd_dagster.models.loading import SINGLE_THREAD_MAX_ROWS, _openmp_single_thread

    estimator = predictor.estimator
    names = list(predictor.feature_names)
    wants_frame = bool(getattr(predictor, "_wants_frame", hasattr(estimator, "feature_names_in_")))
    task = getattr(getattr(predictor, "task", None), "name", "binary")
    method = estimator.predict if task == "regression" else estimator.predict_proba
    text = set(getattr(predictor, "string_features", ()) or ())

    def frame(matrix: np.ndarray) -> pd.DataFrame:
        if matrix.dtype != object:
            return pd.DataFrame(matrix, columns=names)
        # text features (an object matrix): text columns as they came, numbers as float64,
        # what the estimator was fitted on (models.loading.to_frame)
        return pd.DataFrame(
            {
                n: matrix[:, j] if n in text else matrix[:, j].astype(np.float64)
                for j, n in enumerate(names)
            },
            columns=names,
        )

    def predict(matrix: np.ndarray) -> np.ndarray:
        x: Any = frame(matrix) if wants_frame or matrix.dtype == object else matrix
        if matrix.shape[0] <= SINGLE_THREAD_MAX_ROWS:
            with _openmp_single_thread():
                return np.asarray(method(x))
        return np.asarray(method(x))

    return predict


def warm_matrix(predictor: Any, rows: int = 2) -> np.ndarray:
    """Rows of zeros (empty text for text features) to make a model's first call on."""
    names = list(predictor.feature_names)
    text = set(getattr(predictor, "string_features", ()) or ())
    if not text:
        return np.zeros((rows, len(names)))
    out = np.zeros((rows, len(names)), dtype=object)
    for j, n in enumerate(names):
        if n in text:
            out[:, j] = ""
    return out


def positive_index(predictor: Any) -> int:
    """Which column of a two-column output is P(positive) (the encoded class 1)."""
    column = getattr(predictor, "_column", None)
    return int(column) if column is not None else 1


def positive_scores(outputs: Any, positive: int = 1) -> np.ndarray:
    """One float per row from a model's output: P(positive) for a binary classifier.

    ``(n,)`` and ``(n, 1)`` outputs are that number already; ``(n, 2)`` class
    probabilities give column ``positive``; wider outputs (multiclass) give the largest
    class probability (the confidence of the predicted class).
    """
    arr = np.asarray(outputs, dtype=np.float64)
    if arr.ndim <= 1:
        return arr.reshape(-1)
    flat = arr.reshape(arr.shape[0], -1)
    if flat.shape[1] == 1:
        return flat[:, 0]
    if flat.shape[1] == 2:
        return flat[:, positive]
    return flat.max(axis=1)
