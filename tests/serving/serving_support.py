"""Helpers for the model server tests (importable as ``serving_support``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

DATA = Path(__file__).resolve().parents[2] / "assets" / "credit_default" / "data"
LABEL = "default.payment.next.month"
MODEL = "credit_default"

# Test servers poll and flush fast so tests wait little; behaviour is the same.
FAST = dict(poll_interval_s=0.05, flush_interval_s=0.2, load_retry_s=0.5)


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    features: list[str]
    rows: pd.DataFrame  # held-out feature rows to send
    versions: dict[str, Any]  # "1" -> RegisteredModel


def deploy(home: Any, event: str = "test", **tracks: tuple[str, float] | str | None) -> Any:
    """Write a deployment state: deploy(home, stable="1", canary=("2", 0.3))."""
    from mlcicd_dagster.rollout.state import ModelRef, transition

    def change(_: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for track, spec in tracks.items():
            if spec is None:
                out[track] = None
                continue
            version, weight = (spec, 1.0) if isinstance(spec, str) else spec
            out[track] = ModelRef(version, f"models:/{MODEL}/{version}", weight=weight)
        return out

    return transition(home.deployment_state(MODEL), MODEL, event, change)


def split_body(features: list[str], rows: pd.DataFrame) -> dict[str, Any]:
    return {"dataframe_split": {"columns": features, "data": rows[features].values.tolist()}}


def read_log(directory: Path) -> pd.DataFrame:
    """The prediction (or feedback) log as DuckDB reads it."""
    import duckdb

    if not any(Path(directory).glob("part-*.parquet")):
        return pd.DataFrame()
    glob = str(Path(directory) / "part-*.parquet")
    return duckdb.sql(f"SELECT * FROM read_parquet('{glob}', union_by_name=true)").df()
