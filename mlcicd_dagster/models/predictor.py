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

from typing import TYPE_CHECKING, Protocol, runtime_checkable

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
