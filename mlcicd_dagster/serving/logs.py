"""The prediction and feedback logs: Parquet parts written off the request path.

The request path only appends a small tuple to an in-memory buffer. A background
thread swaps the buffer out every ``flush_interval_s`` and writes it as one Parquet part
``part-<epoch_ms>-<uuid8>.parquet`` through ``atomic_write_with`` (temporary name, fsync,
rename): readers that glob ``part-*.parquet`` only ever see whole parts, a ``kill -9``
loses at most the rows of the last interval, and the log stays readable with DuckDB.

Schemas (docs/architecture.md):
  predictions: request_id, ts (timestamp[us, UTC]), model_version, track, routing_key,
               latency_ms, prediction, probabilities (list<float64>: every class's
               probability for a model with more than two output columns, a multiclass
               classifier; null otherwise), then one column per model feature (float64; text
               for a text feature)
  feedback:    request_id, label (float64; null for a text label), label_text (string:
               a text label as sent, e.g. "setosa"; null for a number), ts
               (timestamp[us, UTC])

``prediction`` is one number per row (P(positive), the predicted value, or the predicted
class's probability); ``probabilities`` is what the multiclass per-request loss (the
log-loss of the true class, known once feedback arrives) needs.

A batch whose rows come from models with different feature lists is written as one part
per feature list (DuckDB reads them together with ``union_by_name=true``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlcicd_dagster.platform.atomic import atomic_write_with

log = logging.getLogger(__name__)

PART_GLOB = "part-*.parquet"


def part_name() -> str:
    return f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"


@dataclass(slots=True)
class PredictionEntry:
    """The rows of one request scored by one track."""

    request_ids: list[str]
    ts: float  # epoch seconds
    model_version: str
    track: str
    routing_key: str
    latency_ms: float
    predictions: np.ndarray
    features: np.ndarray
    feature_names: tuple[str, ...]
    probabilities: np.ndarray | None = None  # (n, k) for k > 2 output columns, else None


@dataclass(slots=True)
class FeedbackEntry:
    request_id: str
    label: float | str  # a number, or a text class label ("setosa")
    ts: float


class PartLog:
    """A buffer flushed to Parquet parts in ``directory`` by a daemon thread."""

    def __init__(
        self,
        directory: Path,
        build_tables: Callable[[list[Any]], list[Any]],
        *,
        flush_interval_s: float,
        max_pending_rows: int,
        row_count: Callable[[Any], int],
        on_written: Callable[[int], None] | None = None,
        on_dropped: Callable[[int], None] | None = None,
        name: str = "log",
    ):
        self.directory = Path(directory)
        self._build_tables = build_tables
        self._interval = flush_interval_s
        self._max_pending = max_pending_rows
        self._row_count = row_count
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._buf: list[Any] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._name = name
        self.parts_written = 0
        self.last_error: str | None = None

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(
            target=self._loop, name=f"mlcicd-{self._name}-writer", daemon=True
        )
        self._thread.start()

    def append(self, entry: Any) -> None:
        """Called on the request path: O(1), no I/O."""
        n = self._row_count(entry)
        with self._lock:
            self._buf.append(entry)
            self._pending_rows += n
            if self._pending_rows > self._max_pending:
                self._drop_oldest()

    def _drop_oldest(self) -> None:
        dropped = 0
        while self._buf and self._pending_rows > self._max_pending:
            old = self._buf.pop(0)
            k = self._row_count(old)
            self._pending_rows -= k
            dropped += k
        if dropped and self._on_dropped is not None:
            self._on_dropped(dropped)

    def flush(self) -> int:
        """Write everything buffered now; returns rows written. Failed writes stay buffered."""
        with self._flush_lock:
            with self._lock:
                buf, self._buf = self._buf, []
                rows = self._pending_rows
                self._pending_rows = 0
            if not buf:
                return 0
            try:
                tables = self._build_tables(buf)
                for table in tables:
                    self._write(table)
            except Exception as exc:  # disk full, permissions: keep the rows, try again later
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("cannot write %s part to %s", self._name, self.directory)
                with self._lock:
                    self._buf[:0] = buf
                    self._pending_rows += rows
                    if self._pending_rows > self._max_pending:
                        self._drop_oldest()
                return 0
            self.last_error = None
            if self._on_written is not None:
                self._on_written(rows)
            return rows

    def _write(self, table: Any) -> None:
        import pyarrow.parquet as pq

        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_with(
            self.directory / part_name(),
            lambda tmp: pq.write_table(table, tmp, compression="zstd"),
        )
        self.parts_written += 1

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        """Stop the thread and flush what is left (graceful shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()


def _ts_array(ts: np.ndarray) -> Any:
    import pyarrow as pa

    micros = np.round(ts * 1_000_000).astype(np.int64)
    return pa.array(micros, type=pa.timestamp("us", tz="UTC"))


def build_prediction_tables(entries: list[PredictionEntry]) -> list[Any]:
    import pyarrow as pa

    groups: dict[tuple[str, ...], list[PredictionEntry]] = {}
    for e in entries:
        groups.setdefault(e.feature_names, []).append(e)
    tables = []
    for names, group in groups.items():
        counts = np.fromiter((len(e.request_ids) for e in group), dtype=np.int64, count=len(group))
        ids = [rid for e in group for rid in e.request_ids]

        def repeat(values: list[Any], counts: np.ndarray = counts) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=object), counts)

        features = np.concatenate([e.features for e in group]).reshape(-1, len(names))
        columns: dict[str, Any] = {
            "request_id": pa.array(ids, type=pa.string()),
            "ts": _ts_array(np.repeat(np.array([e.ts for e in group]), counts)),
            "model_version": pa.array(repeat([e.model_version for e in group]), pa.string()),
            "track": pa.array(repeat([e.track for e in group]), pa.string()),
            "routing_key": pa.array(repeat([e.routing_key for e in group]), pa.string()),
            "latency_ms": pa.array(
                np.repeat(np.array([e.latency_ms for e in group], dtype=np.float64), counts)
            ),
            "prediction": pa.array(
                np.concatenate([e.predictions for e in group]).astype(np.float64)
            ),
        }
        if any(e.probabilities is not None for e in group):
            columns["probabilities"] = _probability_column(group)
        for j, name in enumerate(names):
            if name in columns:  # a feature named like a log column cannot shadow it
                name = f"feature_{name}"
            columns[name] = pa.array(_log_column(features[:, j]))
        tables.append(pa.table(columns))
    return tables


def _log_column(values: np.ndarray) -> Any:
    """A feature column for the log: float64, or text (missing as null) for a text feature
    of a model that takes text (an object matrix)."""
    if values.dtype != object:
        return np.ascontiguousarray(values)
    if all(type(v) is float or type(v) is int or isinstance(v, np.number) for v in values):
        return values.astype(np.float64)
    return [None if v is None or (type(v) is float and v != v) else str(v) for v in values]


def multiclass_outputs(outputs: Any) -> np.ndarray | None:
    """A model's output as an ``(n, k)`` float64 matrix when it has more than two
    columns (class probabilities of a multiclass classifier); else ``None``."""
    arr = np.asarray(outputs)
    if arr.ndim != 2 or arr.shape[1] <= 2:
        return None
    return arr.astype(np.float64, copy=False)


def _probability_column(group: list[PredictionEntry]) -> Any:
    """One list<float64> per row: the row's class probabilities, or null."""
    import pyarrow as pa

    rows: list[Any] = []
    for e in group:
        if e.probabilities is None:
            rows.extend([None] * len(e.request_ids))
        else:
            rows.extend(np.asarray(e.probabilities, dtype=np.float64).tolist())
    return pa.array(rows, type=pa.list_(pa.float64()))


def build_feedback_tables(entries: list[FeedbackEntry]) -> list[Any]:
    import pyarrow as pa

    text = [e.label if isinstance(e.label, str) else None for e in entries]
    numbers = [float("nan") if isinstance(e.label, str) else float(e.label) for e in entries]
    columns: dict[str, Any] = {
        "request_id": pa.array([e.request_id for e in entries], pa.string()),
        "label": pa.array(np.array(numbers, dtype=np.float64), from_pandas=True),
    }
    if any(t is not None for t in text):
        columns["label_text"] = pa.array(text, pa.string())
    columns["ts"] = _ts_array(np.array([e.ts for e in entries], dtype=np.float64))
    return [pa.table(columns)]


def prediction_log(directory: Path, **kwargs: Any) -> PartLog:
    return PartLog(
        directory,
        build_prediction_tables,
        row_count=lambda e: len(e.request_ids),
        name="predictions",
        **kwargs,
    )


def feedback_log(directory: Path, **kwargs: Any) -> PartLog:
    return PartLog(
        directory, build_feedback_tables, row_count=lambda e: 1, name="feedback", **kwargs
    )
