"""What every consumer of a trained model sees: a ``Predictor``.

The server, the gates, canary smoke tests and ``mlcicd ci`` all score through
this one interface so that "the model answers the same in a fresh process"
(infra validation) means the same code path everywhere.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class Predictor(Protocol):
    """Scores a frame of features; returns P(positive class) per row."""

    version: str
    feature_names: list[str]

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray: ...
