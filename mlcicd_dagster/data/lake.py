"""The Parquet data lake of one dataset (``Home.lake(ds)``).

Layout (docs/architecture.md)::

    <root>/validated/<partition>.parquet        accepted rows of one landed batch
    <root>/training_set/{train,holdout}.parquet  the current training set ...
    <root>/training_set/manifest.json            ... and what it was built from
    <root>/_dedupe/                              the duplicate index (fingerprint.py)

No partial rows are ever visible: a validated partition is written to a hidden
temporary file and renamed into place. The training set is three files that must
change together, so ``training_set`` is a symlink to a versioned folder
(``training_set.v<ns>``) that is written completely first and then swapped in with
one atomic ``rename`` of the link; readers resolve the link once and read both
files from the same version. The previous version is kept (one older is deleted)
so a reader that resolved it just before a swap still finds its files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from mlcicd_dagster.platform.atomic import atomic_write_json, atomic_write_with

VALIDATED = "validated"
TRAINING_SET = "training_set"
#: Training-set versions kept besides the current one (for readers mid-swap).
_KEEP_OLD_VERSIONS = 1


class LakeError(RuntimeError):
    pass


def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    atomic_write_with(path, lambda tmp: pq.write_table(table, tmp))


class Lake:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- validated batches ----------------------------------------------------
    @property
    def validated_dir(self) -> Path:
        return self.root / VALIDATED

    def validated_path(self, partition_key: str) -> Path:
        if "/" in partition_key or partition_key.startswith(".") or not partition_key:
            raise LakeError(f"not a safe partition key for a file name: {partition_key!r}")
        return self.validated_dir / f"{partition_key}.parquet"

    def write_validated(self, partition_key: str, df: pd.DataFrame) -> Path:
        """Store the accepted rows of one batch (atomically; replaces a re-run's rows)."""
        path = self.validated_path(partition_key)
        _write_parquet(path, df)
        return path

    def has_validated(self, partition_key: str) -> bool:
        return self.validated_path(partition_key).exists()

    def keys(self) -> list[str]:
        """Partition keys with accepted rows, sorted."""
        if not self.validated_dir.is_dir():
            return []
        return sorted(
            p.name[: -len(".parquet")]
            for p in self.validated_dir.iterdir()
            if p.name.endswith(".parquet") and not p.name.startswith(".")
        )

    def read_validated(
        self, keys: list[str] | None = None, *, with_partition: bool = False
    ) -> pd.DataFrame:
        """Accepted rows of ``keys`` (default: all, in key order).

        ``with_partition`` adds a ``_partition`` column naming each row's batch.
        """
        chosen = self.keys() if keys is None else list(keys)
        if not chosen:
            return pd.DataFrame()
        frames = []
        for key in chosen:
            path = self.validated_path(key)
            if not path.exists():
                raise LakeError(f"no validated partition {key!r} in {self.validated_dir}")
            df = pd.read_parquet(path)
            if with_partition:
                df["_partition"] = key
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def delete_validated(self, partition_key: str) -> None:
        self.validated_path(partition_key).unlink(missing_ok=True)

    # -- training set -----------------------------------------------------------
    @property
    def training_set_dir(self) -> Path:
        return self.root / TRAINING_SET

    def write_training_set(
        self, train: pd.DataFrame, holdout: pd.DataFrame, manifest: dict[str, Any]
    ) -> Path:
        """Write a new training-set version and swap it in atomically; returns its folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        link = self.training_set_dir
        if link.exists() and not link.is_symlink():
            raise LakeError(f"{link} is a real folder; the lake expects a symlink there")
        version = f"{TRAINING_SET}.v{time.time_ns()}"
        staging = self.root / f".{version}.staging"
        final = self.root / version
        staging.mkdir(parents=True)
        try:
            _write_parquet(staging / "train.parquet", train)
            _write_parquet(staging / "holdout.parquet", holdout)
            atomic_write_json(
                staging / "manifest.json",
                {
                    **manifest,
                    "version": version,
                    "train_rows": int(len(train)),
                    "holdout_rows": int(len(holdout)),
                },
            )
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        tmp_link = self.root / f".{TRAINING_SET}.link.{time.time_ns()}"
        os.symlink(version, tmp_link)
        os.replace(tmp_link, link)  # the one atomic step
        self._prune_versions(keep=version)
        return final

    def _prune_versions(self, keep: str) -> None:
        versions = sorted(
            p for p in self.root.glob(f"{TRAINING_SET}.v*") if p.is_dir() and p.name != keep
        )
        for old in versions[: max(len(versions) - _KEEP_OLD_VERSIONS, 0)]:
            shutil.rmtree(old, ignore_errors=True)

    def has_training_set(self) -> bool:
        return (self.training_set_dir / "manifest.json").exists()

    def read_training_set(self) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        """``(train, holdout, manifest)`` of one consistent version."""
        if not self.training_set_dir.exists():
            raise LakeError(f"no training set in {self.root}")
        folder = Path(os.path.realpath(self.training_set_dir))
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        train = pd.read_parquet(folder / "train.parquet")
        holdout = pd.read_parquet(folder / "holdout.parquet")
        return train, holdout, manifest
