"""Monitoring of served models and the feedback loop (Dagster-free library).

``compute_window`` joins the prediction log with feedback labels and measures one
window (live metrics with intervals, label coverage and delay, feature and
prediction drift with the data gate's statistics); ``evaluate``/``run_policy``
turn results into retraining triggers; ``export_feedback_batch`` lands labelled
production rows as an ordinary batch of the dataset.
"""

from mlcicd_dagster.monitoring.feedback_batch import FeedbackBatch, export_feedback_batch
from mlcicd_dagster.monitoring.policy import (
    PolicyState,
    RetrainPolicy,
    RetrainTrigger,
    evaluate,
    load_state,
    run_policy,
    save_state,
)
from mlcicd_dagster.monitoring.result import (
    CheckOutcome,
    DriftSummary,
    MonitorConfig,
    MonitoringResult,
    VersionMetrics,
)
from mlcicd_dagster.monitoring.store import load_results, monitoring_status, save_result
from mlcicd_dagster.monitoring.window import MonitoringError, compute_window, load_window

__all__ = [
    "CheckOutcome",
    "DriftSummary",
    "FeedbackBatch",
    "MonitorConfig",
    "MonitoringError",
    "MonitoringResult",
    "PolicyState",
    "RetrainPolicy",
    "RetrainTrigger",
    "VersionMetrics",
    "compute_window",
    "evaluate",
    "export_feedback_batch",
    "load_results",
    "load_state",
    "load_window",
    "monitoring_status",
    "run_policy",
    "save_result",
    "save_state",
]
