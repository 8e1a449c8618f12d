"""The Parquet data lake of one dataset (``Home.lake(ds)``).

Layout (docs/architecture.md)::

    <root>/validated/<partition>.parquet        accepted rows of one landed batch
    <root>/validated/<partition>.meta.json      its content hash, rows, source file
    <root>/validated/<partition>.revoked.json   present while the batch is revoked (who/why/when)
    <root>/revocations.jsonl                    every revoke and restore, in order
    <root>/training_set/{train,holdout}.parquet  the current training set ...
    <root>/training_set/manifest.json            ... and what it was built from
    <root>/_dedupe/                              the duplicate index (fingerprint.py)

A *revoked* batch stays in the lake, byte for byte, marked by its ``.revoked.json``;
:meth:`Lake.active_keys` (what the next model trains on) leaves it out until it is
restored. Marking is atomic (an exclusive link), so revoking twice is refused even
from two processes at once.

No partial rows are ever visible: a validated partition is written to a hidden
temporary file and renamed into place. The training set is three files that must
change together, so ``training_set`` is a symlink to a versioned folder
(``training_set.v<ns>``) that is written completely first and then swapped in with
one atomic ``rename`` of the link; readers resolve the link once and read both
files from the same version. The previous version is kept (one older is deleted)
so a reader that resolved it just before a swap still finds its files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from mlcicd_dagster.errors import MlcicdError
from mlcicd_dagster.platform.atomic import atomic_write_json, atomic_write_with

VALIDATED = "validated"
REVOCATIONS = "revocations.jsonl"
_META = ".meta.json"
_REVOKED = ".revoked.json"
TRAINING_SET = "training_set"
#: Training-set versions kept besides the current one (for readers mid-swap).
_KEEP_OLD_VERSIONS = 1


class LakeError(MlcicdError, RuntimeError):
    pass


class RevocationError(LakeError):
    """A revoke/restore that cannot be done (unknown batch, already revoked, not revoked)."""


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

    def write_validated(
        self, partition_key: str, df: pd.DataFrame, *, source: dict[str, Any] | None = None
    ) -> Path:
        """Store the accepted rows of one batch (atomically; replaces a re-run's rows).

        ``source`` (the landed file's name and sha256) goes into the batch's metadata,
        beside the content hash of the stored rows.
        """
        path = self.validated_path(partition_key)
        _write_parquet(path, df)
        atomic_write_json(
            self._meta_path(partition_key),
            {
                "partition_key": partition_key,
                "rows": int(len(df)),
                "sha256": _sha256(path),
                "written_at": _now(),
                **{f"source_{k}": v for k, v in (source or {}).items()},
            },
        )
        return path

    def has_validated(self, partition_key: str) -> bool:
        return self.validated_path(partition_key).exists()

    def keys(self) -> list[str]:
        """Partition keys with accepted rows, sorted (revoked ones included)."""
        if not self.validated_dir.is_dir():
            return []
        return sorted(
            p.name[: -len(".parquet")]
            for p in self.validated_dir.iterdir()
            if p.name.endswith(".parquet") and not p.name.startswith(".")
        )

    def active_keys(self) -> list[str]:
        """The batches the next model trains on: every validated batch not revoked."""
        revoked = set(self.revoked())
        return [k for k in self.keys() if k not in revoked]

    # -- batch metadata and content ------------------------------------------------
    def _meta_path(self, partition_key: str) -> Path:
        return self.validated_dir / f"{partition_key}{_META}"

    def _revoked_path(self, partition_key: str) -> Path:
        return self.validated_dir / f"{partition_key}{_REVOKED}"

    def batch_meta(self, partition_key: str) -> dict[str, Any]:
        """The batch's metadata (rows, content hash, source file; ``revoked`` when it is)."""
        path = self.validated_path(partition_key)
        if not path.exists():
            raise LakeError(f"no validated batch {partition_key!r} in {self.validated_dir}")
        meta = _read_json(self._meta_path(partition_key)) or {}
        if "sha256" not in meta:  # a batch written before metadata existed
            meta = {"partition_key": partition_key, "sha256": _sha256(path), **meta}
        revoked = _read_json(self._revoked_path(partition_key))
        if revoked is not None:
            meta["revoked"] = revoked
        return meta

    def content_key(self, keys: list[str]) -> str:
        """A hash of exactly these batches' contents and the revocation history.

        The same lake in a copied home gives the same key (no file times enter it);
        a revoke or a restore always gives a new one, even back to an earlier set.
        """
        h = hashlib.sha256()
        for key in sorted(keys):
            h.update(f"{key}={self.batch_meta(key)['sha256']};".encode())
        h.update(f"events={len(self.revocation_history())}".encode())
        return h.hexdigest()

    # -- revocation ----------------------------------------------------------------
    def revoked(self) -> dict[str, dict[str, Any]]:
        """Revoked batches -> their mark (``by``, ``reason``, ``at``)."""
        if not self.validated_dir.is_dir():
            return {}
        out = {}
        for p in sorted(self.validated_dir.glob(f"*{_REVOKED}")):
            mark = _read_json(p)
            if mark is not None:
                out[p.name[: -len(_REVOKED)]] = mark
        return out

    def revoke(
        self, partition_key: str, *, reason: str, by: str, evidence: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Take a batch out of the training data; its rows stay in the lake, marked."""
        if not reason or not reason.strip():
            raise RevocationError("a revocation needs a reason (--reason TEXT)")
        if not self.validated_path(partition_key).exists():
            raise RevocationError(self._unknown(partition_key))
        mark: dict[str, Any] = {
            "by": by,
            "reason": reason.strip(),
            "at": _now(),
            "partition_key": partition_key,
        }
        if evidence:
            mark["evidence"] = evidence
        target = self._revoked_path(partition_key)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(mark, fh, indent=2, sort_keys=True, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, target)  # exclusive: fails if the batch is already revoked
            except FileExistsError:
                prior = _read_json(target) or {}
                raise RevocationError(
                    f"batch {partition_key!r} is already revoked (by {prior.get('by')} at "
                    f"{prior.get('at')}: {prior.get('reason')})"
                ) from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        self._log({"event": "revoke", **mark})
        return mark

    def restore(self, partition_key: str, *, by: str, reason: str = "") -> dict[str, Any]:
        """Put a revoked batch back into the training data."""
        if not self.validated_path(partition_key).exists():
            raise RevocationError(self._unknown(partition_key))
        target = self._revoked_path(partition_key)
        prior = _read_json(target)
        moved = target.with_name(f".{target.name}.{time.time_ns()}.restored")
        try:
            os.rename(target, moved)  # atomic: of two restores only one succeeds
        except FileNotFoundError:
            raise RevocationError(f"batch {partition_key!r} is not revoked") from None
        moved.unlink(missing_ok=True)
        event = {
            "event": "restore",
            "partition_key": partition_key,
            "by": by,
            "reason": reason,
            "at": _now(),
            "was": prior,
        }
        self._log(event)
        return event

    def revocation_history(self) -> list[dict[str, Any]]:
        path = self.root / REVOCATIONS
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line after a crash
        return out

    def _log(self, event: dict[str, Any]) -> None:
        path = self.root / REVOCATIONS
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _unknown(self, partition_key: str) -> str:
        known = self.keys()
        hint = f"; validated batches: {', '.join(known[:10])}" if known else "; the lake is empty"
        return f"no validated batch {partition_key!r} in {self.validated_dir}{hint}"

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
        self._meta_path(partition_key).unlink(missing_ok=True)

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

    def read_training_manifest(self) -> dict[str, Any]:
        """The current training set's manifest (what it was built from)."""
        folder = Path(os.path.realpath(self.training_set_dir))
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))

    def read_training_set(self) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
        """``(train, holdout, manifest)`` of one consistent version."""
        if not self.training_set_dir.exists():
            raise LakeError(f"no training set in {self.root}")
        folder = Path(os.path.realpath(self.training_set_dir))
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        train = pd.read_parquet(folder / "train.parquet")
        holdout = pd.read_parquet(folder / "holdout.parquet")
        return train, holdout, manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
