"""Land a batch the way the landing convention asks: write a dot-temp name, then rename."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def land_frame(landing_dir: Path, name: str, df: pd.DataFrame) -> Path:
    """Write ``df`` as ``name`` (.csv or .parquet) into the landing folder atomically."""
    landing_dir.mkdir(parents=True, exist_ok=True)
    target = landing_dir / name
    tmp = landing_dir / f".{name}.tmp"
    if name.endswith(".parquet"):
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, target)
    return target


def land_bytes(landing_dir: Path, name: str, data: bytes) -> Path:
    landing_dir.mkdir(parents=True, exist_ok=True)
    tmp = landing_dir / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, landing_dir / name)
    return landing_dir / name
