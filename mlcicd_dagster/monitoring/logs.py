"""Writers of prediction/feedback log parts in the documented schema.

The model server has its own writer; these exist so tests, benchmarks and
simulations produce exactly the files monitoring reads (``part-<epoch_ms>-<uuid8>.parquet``,
written to a dot-temp name then renamed, ``ts`` as ``timestamp[us, UTC]``).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pandas as pd

from mlcicd_dagster.platform.atomic import atomic_write_with

PREDICTION_BASE = (
    "request_id",
    "ts",
    "model_version",
    "track",
    "routing_key",
    "latency_ms",
    "prediction",
)
FEEDBACK_COLUMNS = ("request_id", "label", "ts")


def _part_name() -> str:
    return f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"


def _write(folder: Path, df: pd.DataFrame, row_group_size: int | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = df.copy()
    df["ts"] = pd.to_datetime(df["ts"], utc=True).astype("datetime64[us, UTC]")
    table = pa.Table.from_pandas(df, preserve_index=False)
    path = Path(folder) / _part_name()
    atomic_write_with(path, lambda tmp: pq.write_table(table, tmp, row_group_size=row_group_size))
    return path


def write_prediction_part(folder: Path, df: pd.DataFrame, **kw: int) -> Path:
    """``df``: request_id, ts, model_version, prediction, features (track, routing_key,
    latency_ms get defaults when absent)."""
    df = df.copy()
    if "track" not in df:
        df["track"] = "stable"
    if "routing_key" not in df:
        df["routing_key"] = df["request_id"].astype(str)
    if "latency_ms" not in df:
        df["latency_ms"] = 1.0
    df["request_id"] = df["request_id"].astype(str)
    df["model_version"] = df["model_version"].astype(str)
    df["prediction"] = df["prediction"].astype("float64")
    df["latency_ms"] = df["latency_ms"].astype("float64")
    features = [c for c in df.columns if c not in PREDICTION_BASE]
    return _write(folder, df[[*PREDICTION_BASE, *features]], **kw)


def write_feedback_part(folder: Path, df: pd.DataFrame, **kw: int) -> Path:
    """``df``: request_id, label, ts."""
    df = df.copy()
    df["request_id"] = df["request_id"].astype(str)
    df["label"] = df["label"].astype("float64")
    return _write(folder, df[list(FEEDBACK_COLUMNS)], **kw)
