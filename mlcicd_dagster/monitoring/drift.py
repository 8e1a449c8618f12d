"""Feature and prediction drift of a window: the data gate's statistics, not a second copy.

Everything statistical (KS and PSI for numeric columns, chi-square and PSI for
categorical ones, Holm or BH across features, the effect-size floor) lives in
:mod:`mlcicd_dagster.data.drift`; this module only builds or narrows its
:class:`~mlcicd_dagster.data.drift.ReferenceProfile`, calls ``compare`` and converts
the report into the monitoring result's :class:`DriftSummary`.

What a window's drift check controls: under "the served rows come from the
reference distribution", the probability that a window flags any feature is at
most ``alpha`` (Holm, family-wise), as documented in the data gate. Prediction
drift is the same test on the model's outputs: its scores against its scores on
reference rows; for a multiclass model (class probabilities, ``(n, k)``) two columns,
the predicted class's probability (KS + PSI) and the predicted class (chi-square + PSI).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlcicd_dagster.monitoring.result import DriftSummary

if TYPE_CHECKING:
    from mlcicd_dagster.data.drift import DriftReport, ReferenceProfile

ReferenceLike = Any  # a DataFrame of reference rows, or the data gate's ReferenceProfile
PREDICTION_COLUMN = "prediction"
PREDICTED_CLASS_COLUMN = "predicted_class"


def _prediction_frame(predictions: Any) -> pd.DataFrame:
    """One number per row as ``prediction``; class probabilities ``(n, k > 2)`` as the
    predicted class's probability and the predicted class (its index, as text). Rows
    with a missing probability (NaN) are left out."""
    arr = np.asarray(predictions, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] > 2:
        arr = arr[~np.isnan(arr).any(axis=1)]
        return pd.DataFrame(
            {
                PREDICTION_COLUMN: arr.max(axis=1),
                PREDICTED_CLASS_COLUMN: arr.argmax(axis=1).astype(str),
            }
        )
    return pd.DataFrame({PREDICTION_COLUMN: arr.ravel()})


def reference_profile(
    reference: ReferenceLike, *, numeric: Sequence[str], categorical: Sequence[str]
) -> ReferenceProfile:
    """The data gate's profile of ``reference`` restricted to the given features.

    A DataFrame is profiled (do this once per deployment and reuse the profile:
    it is the expensive part); a profile is narrowed to the requested columns, and
    a requested column it lacks is an error naming it.
    """
    from mlcicd_dagster.data.drift import ReferenceProfile

    if isinstance(reference, pd.DataFrame):
        missing = [c for c in (*numeric, *categorical) if c not in reference.columns]
        if missing:
            raise ValueError(f"reference data lacks columns {missing}")
        return ReferenceProfile.from_frame(reference, numeric=numeric, categorical=categorical)
    if not isinstance(reference, ReferenceProfile):
        raise TypeError(
            f"reference must be a DataFrame or a ReferenceProfile, not {type(reference).__name__}"
        )
    missing = [c for c in numeric if c not in reference.numeric] + [
        c for c in categorical if c not in reference.categorical
    ]
    if missing:
        raise ValueError(f"reference profile lacks features {missing}")
    return ReferenceProfile(
        {c: reference.numeric[c] for c in numeric},
        {c: reference.categorical[c] for c in categorical},
    )


def feature_drift(
    reference: ReferenceLike,
    current: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    alpha: float,
    correction: str = "holm",
    psi_floor: float | None = None,
) -> DriftSummary:
    profile = reference_profile(reference, numeric=numeric, categorical=categorical)
    return _summary(_compare(profile, current, alpha, correction, psi_floor))


def prediction_reference(predictions: Any) -> ReferenceProfile:
    """Profile of the deployed model's scores on reference rows (reuse it per deployment)."""
    from mlcicd_dagster.data.drift import ReferenceProfile

    if isinstance(predictions, ReferenceProfile):
        if PREDICTION_COLUMN not in predictions.numeric:
            raise ValueError(f"prediction reference profile lacks column {PREDICTION_COLUMN!r}")
        return predictions
    frame = _prediction_frame(predictions)
    categorical = [PREDICTED_CLASS_COLUMN] if PREDICTED_CLASS_COLUMN in frame.columns else []
    return ReferenceProfile.from_frame(frame, numeric=[PREDICTION_COLUMN], categorical=categorical)


def prediction_drift(
    reference: Any,
    predictions: np.ndarray,
    *,
    alpha: float,
    correction: str = "holm",
    psi_floor: float | None = None,
) -> DriftSummary:
    """``predictions``: one number per row, or class probabilities ``(n, k)`` (multiclass:
    the predicted class is compared too, when the reference has it)."""
    profile = prediction_reference(reference)
    current = _prediction_frame(predictions)
    if PREDICTED_CLASS_COLUMN not in current.columns and profile.categorical:
        from mlcicd_dagster.data.drift import ReferenceProfile

        profile = ReferenceProfile(dict(profile.numeric), {})  # the log has no probabilities
    return _summary(_compare(profile, current, alpha, correction, psi_floor))


def for_version(reference_predictions: Any, version: str) -> Any:
    """The prediction reference of one version (a mapping per version, or one for all)."""
    if isinstance(reference_predictions, Mapping):
        return reference_predictions.get(version)
    return reference_predictions


def _compare(
    profile: ReferenceProfile,
    current: pd.DataFrame,
    alpha: float,
    correction: str,
    psi_floor: float | None,
) -> DriftReport:
    kw: dict[str, Any] = {"alpha": alpha, "correction": correction}
    if psi_floor is not None:
        kw["psi_floor"] = psi_floor
    return profile.compare(current, **kw)


def _summary(report: DriftReport) -> DriftSummary:
    rows = tuple(r.to_dict() for r in report.rows)
    floors = sorted({r.floor for r in report.rows})
    method = (
        f"KS + PSI (numeric), chi-square + PSI (categorical); {report.correction} across "
        f"{len(rows)} features at alpha={report.alpha:g}; drifted also needs PSI >= "
        f"{', '.join(f'{f:g}' for f in floors) or '-'}"
    )
    return DriftSummary(
        n_reference=max((r.n_reference for r in report.rows), default=0),
        n_current=max((r.n_current for r in report.rows), default=0),
        alpha=report.alpha,
        method=method,
        rows=rows,
        drifted=tuple(r.feature for r in report.drifted),
    )
