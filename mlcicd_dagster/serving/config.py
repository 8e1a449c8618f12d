"""Tunables of the model server, with the reason for each default."""

from __future__ import annotations

from dataclasses import dataclass

FEEDBACK_TOKEN_ENV = "MLCICD_FEEDBACK_TOKEN"
"""When set (a Kubernetes Secret sets it in deploy/), ``/feedback`` requires
``Authorization: Bearer <token>``; scoring stays open."""


@dataclass(frozen=True)
class ServerConfig:
    # Micro-batching: a batch is scored as soon as the model is free; while it is busy,
    # requests queue up and are scored together. ``max_wait_ms`` lets the first request of
    # an idle model wait a little for company (0 = never wait: lowest latency at low load).
    max_batch_rows: int = 256  # beyond ~256 rows per call sklearn gains nothing more
    max_wait_ms: float = 0.0
    # Request limits: every request is bounded, so no input can make the server hang.
    max_body_bytes: int = 8 * 1024 * 1024
    max_rows_per_request: int = 10_000
    # Prediction / feedback log: written by a background thread, never on the request path.
    flush_interval_s: float = 1.0  # a crash loses at most this much log
    max_pending_log_rows: int = 2_000_000  # memory bound if the disk is down; oldest dropped
    log_predictions: bool = True
    # /feedback knows this many recent request ids in memory; older ones are looked up on disk.
    recent_ids: int = 500_000
    # Deployment state watcher: how often the state file is stat()ed.
    poll_interval_s: float = 0.2
    # A failed model load is retried this often while the state file stays the same.
    load_retry_s: float = 5.0
    # Shadow scoring is best effort: beyond this many queued rows shadow requests are dropped.
    max_shadow_queue_rows: int = 4_096
    # A retired model is released once its in-flight requests finish, or after this long.
    drain_timeout_s: float = 30.0
    # Scoring threads: with >0 the event loop keeps parsing requests while a batch is scored
    # in a thread; 0 scores inline on the event loop (no thread hand-off; best on few cores).
    scoring_threads: int = 1
    # Threads a model may use inside one call (OpenMP/BLAS/torch). Micro-batches are small:
    # a thread team costs more than it gains and its spin-waits starve the event loop.
    model_threads: int | None = 1
    # Who may write labels: /feedback (the only route that changes state) requires
    # ``Authorization: Bearer <token>`` when a token is set. None: ``$MLCICD_FEEDBACK_TOKEN``;
    # "": no token even if the variable is set.
    feedback_token: str | None = None

    def resolved_feedback_token(self) -> str:
        """The token /feedback requires ("" = open)."""
        if self.feedback_token is not None:
            return self.feedback_token
        from mlcicd_dagster import settings

        return settings.get(FEEDBACK_TOKEN_ENV) or ""
