"""What every consumer of a trained model sees: a ``Predictor``.

The server, the gates, canary smoke tests and ``mlcicd ci`` all score through
this one interface so that "the model answers the same in a fresh process"
(infra validation) means the same code path everywhere.

``predict(features)`` is the task's output (``models.tasks``): P(positive) ``(n,)``
for binary, class probabilities ``(n, k)`` in the declared class order for
multiclass, the predicted value ``(n,)`` for regression. ``predict_proba`` is kept
for binary consumers: P(positive) ``(n,)``; on other tasks it raises ``TaskError``
rather than hand a caller something that is not a probability of a positive class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlcicd_dagster.models.tasks import Task


@runtime_checkable
class Predictor(Protocol):
    """Scores a frame of features."""

    version: str
    feature_names: list[str]
    task: Task

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """The task's output for each row (see the module docstring)."""
        ...

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        """P(positive class) per row; binary tasks only."""
        ...


def score_fn(predictor: Any) -> Callable[[np.ndarray], np.ndarray]:
    """What scores a request's feature matrix, as the model server calls a model (also the
    serving-budget and infra-validation gates).

    Our own predictors take the matrix as is; any other ``Predictor`` gets a DataFrame.
    ``predict`` is the task's output (P(positive) for binary, as ``predict_proba``).
    """
    try:
        from mlcicd_dagster.models.loading import SklearnPredictor, TorchPredictor

        takes_matrix = isinstance(predictor, (SklearnPredictor, TorchPredictor))
    except ImportError:  # pragma: no cover - the models package is part of the library
        takes_matrix = False
    if takes_matrix:
        return predictor.predict  # type: ignore[no-any-return]
    names = list(predictor.feature_names)

    def score(matrix: np.ndarray) -> np.ndarray:
        fn = getattr(predictor, "predict", None) or predictor.predict_proba
        return np.asarray(fn(pd.DataFrame(matrix, columns=names)))

    return score
