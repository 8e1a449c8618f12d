"""Replay labelled rows against a running model server, sending labels back as feedback.

A background thread plays a client population: each row is one single-row
``/invocations`` request (MLflow ``dataframe_split``) with a routing key, and its
true label is posted to ``/feedback`` after ``label_delay_s`` (delayed labels, as
in production). Bounded in rows and time; it stops by itself.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import pandas as pd

RETRY_STATUSES = {503}  # nothing deployed yet: the client waits and retries


@dataclass
class TrafficStats:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    feedback_sent: int = 0
    feedback_refused: int = 0  # answered with an error (401: the server wants a token)
    by_version: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)


class TrafficReplayer:
    def __init__(
        self,
        url: str,
        rows: pd.DataFrame,
        label: str,
        *,
        rate_per_s: float = 80.0,
        label_delay_s: float = 0.5,
        max_seconds: float = 900.0,
        loop: bool = True,
        feedback_token: str | None = None,
    ) -> None:
        """``feedback_token``: sent as ``Authorization: Bearer`` on /feedback (default:
        ``$MLCICD_FEEDBACK_TOKEN``, the server's token)."""
        from mlcicd_dagster import settings
        from mlcicd_dagster.serving.config import FEEDBACK_TOKEN_ENV

        token = feedback_token if feedback_token is not None else settings.get(FEEDBACK_TOKEN_ENV)
        self._feedback_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.features = rows.drop(columns=[label])
        self.labels = rows[label].astype(float).to_numpy()
        self.rate = rate_per_s
        self.label_delay_s = label_delay_s
        self.max_seconds = max_seconds
        self.loop = loop
        self.stats = TrafficStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._lock = threading.Lock()

    def replace_rows(self, rows: pd.DataFrame, label: str) -> None:
        """Switch what is replayed (e.g. to drifted traffic) without stopping."""
        with self._lock:
            self.features = rows.drop(columns=[label])
            self.labels = rows[label].astype(float).to_numpy()

    def start(self) -> TrafficReplayer:
        self._thread.start()
        return self

    def stop(self) -> TrafficStats:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.stats

    def _run(self) -> None:
        import httpx

        pending: deque[tuple[float, str, float]] = deque()
        deadline = time.monotonic() + self.max_seconds
        interval = 1.0 / self.rate
        i = 0
        with httpx.Client(timeout=10.0) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                tick = time.monotonic()
                with self._lock:
                    n = len(self.features)
                    if i >= n and not self.loop:
                        break
                    row = self.features.iloc[[i % n]]
                    label = float(self.labels[i % n])
                i += 1
                self._score(client, row, label, i, pending)
                self._send_due_feedback(client, pending)
                spare = interval - (time.monotonic() - tick)
                if spare > 0:
                    self._stop.wait(spare)
            self._send_due_feedback(client, pending, flush=True)

    def _score(self, client, row: pd.DataFrame, label: float, i: int, pending) -> None:
        body = {"dataframe_split": row.to_dict(orient="split")}
        body["dataframe_split"].pop("index", None)
        self.stats.sent += 1
        try:
            r = client.post(
                f"{self.url}/invocations", json=body, headers={"X-Routing-Key": f"client-{i}"}
            )
        except Exception:  # server restarting: counted, never raised into the demo
            self.stats.failed += 1
            return
        self.stats.statuses[r.status_code] += 1
        if r.status_code != 200:
            if r.status_code not in RETRY_STATUSES:
                self.stats.failed += 1
            return
        self.stats.answered += 1
        self.stats.by_version[r.headers.get("X-Model-Version", "?")] += 1
        rid = r.headers.get("X-Request-Id", "")
        if rid:
            pending.append((time.monotonic() + self.label_delay_s, rid, label))

    def _send_due_feedback(self, client, pending, flush: bool = False) -> None:
        now = time.monotonic()
        batch = []
        while pending and (flush or pending[0][0] <= now):
            _, rid, label = pending.popleft()
            batch.append({"request_id": rid, "label": label})
        if not batch:
            return
        try:
            r = client.post(f"{self.url}/feedback", json=batch, headers=self._feedback_headers)
            if r.status_code == 200:
                self.stats.feedback_sent += len(batch)
            else:
                self.stats.feedback_refused += len(batch)
        except Exception:
            pass
