"""Prometheus metrics of one server (its own registry, so servers in one process differ).

Per model version and track: requests, rows, errors, request latency, batch sizes,
scoring time, and the distribution of predictions (what canary analysis and drift
dashboards compare). Label children are cached per served model so the request path
does a dictionary-free ``inc``/``observe``.
"""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
PREDICTION_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


class ServerMetrics:
    def __init__(self) -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # ``*_created`` series double the exposition for nothing a dashboard uses.
        prometheus_client.disable_created_metrics()

        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model_version", "track")
        r = self.registry
        self.requests = Counter("mlcicd_requests", "Scoring requests answered", labels, registry=r)
        self.rows = Counter("mlcicd_rows", "Rows scored", labels, registry=r)
        self.errors = Counter(
            "mlcicd_request_errors",
            "Requests answered with an error (kind: client = 4xx, server = 5xx, "
            "unavailable = nothing deployed)",
            ("model_version", "track", "kind"),
            registry=r,
        )
        self.latency = Histogram(
            "mlcicd_request_latency_seconds",
            "Time from request to answer (scoring requests)",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "mlcicd_batch_size_rows",
            "Rows per model call (micro-batch size)",
            ("model_version",),
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_seconds = Histogram(
            "mlcicd_batch_scoring_seconds",
            "Time of one model call",
            ("model_version",),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prediction = Histogram(
            "mlcicd_prediction",
            "Distribution of predictions (P(positive class))",
            labels,
            buckets=PREDICTION_BUCKETS,
            registry=r,
        )
        self.shadow_dropped = Counter(
            "mlcicd_shadow_dropped",
            "Shadow scorings skipped (queue full or features missing)",
            ("model_version",),
            registry=r,
        )
        self.feedback = Counter("mlcicd_feedback", "Feedback labels accepted", registry=r)
        self.feedback_refused = Counter(
            "mlcicd_feedback_refused",
            "Feedback requests refused for a missing or wrong token (401)",
            registry=r,
        )
        self.feedback_unknown = Counter(
            "mlcicd_feedback_unknown_ids", "Feedback for request ids never served", registry=r
        )
        self.log_rows_written = Counter(
            "mlcicd_log_rows_written", "Rows written to the log", ("log",), registry=r
        )
        self.log_rows_dropped = Counter(
            "mlcicd_log_rows_dropped",
            "Log rows dropped because the writer could not keep up",
            ("log",),
            registry=r,
        )
        self.log_pending = Gauge(
            "mlcicd_log_pending_rows", "Rows buffered for the next flush", ("log",), registry=r
        )
        self.revision = Gauge(
            "mlcicd_deployment_revision", "Deployment state revision being served", registry=r
        )
        self.loaded = Gauge(
            "mlcicd_model_loaded", "1 for each loaded model version and track", labels,
            registry=r,
        )  # fmt: skip
        self.load_failures = Counter("mlcicd_model_load_failures", "Failed model loads", registry=r)

    def for_model(self, version: str, track: str) -> ModelMetrics:
        return ModelMetrics(self, version, track)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ModelMetrics:
    """The label children of one (version, track), resolved once."""

    __slots__ = ("requests", "rows", "client_errors", "server_errors", "latency", "prediction")

    def __init__(self, m: ServerMetrics, version: str, track: str):
        self.requests: Any = m.requests.labels(version, track)
        self.rows: Any = m.rows.labels(version, track)
        self.client_errors: Any = m.errors.labels(version, track, "client")
        self.server_errors: Any = m.errors.labels(version, track, "server")
        self.latency: Any = m.latency.labels(version, track)
        self.prediction: Any = m.prediction.labels(version, track)
