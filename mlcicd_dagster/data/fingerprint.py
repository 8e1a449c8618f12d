"""Fingerprints and the duplicate index: the same data is never ingested twice.

* :func:`file_sha256`: content hash of a file (streamed), so the same bytes landed
  under another name are recognised.
* :func:`row_hashes`: one 64-bit hash per row, independent of column order and of
  int-vs-float encodings (``90000`` and ``90000.0`` hash alike), so a batch whose
  rows were all ingested before is recognised even when re-exported differently.
* :class:`DedupeIndex`: what was accepted, per partition, persisted under the lake
  (``<lake>/_dedupe/files/<key>.json`` and ``rows/<key>.npy``). Each partition
  writes only its own files (atomically), so concurrent runs never corrupt a shared
  file; checks ignore the partition being (re)processed, so re-running a partition
  is idempotent rather than "a duplicate of itself". Use :meth:`DedupeIndex.lock`
  around check-then-register when runs can race on identical batches.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.platform.atomic import atomic_write_json, atomic_write_with

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def row_hashes(df: pd.DataFrame, columns: list[str] | None = None) -> np.ndarray:
    """uint64 hash per row over ``columns`` (default: all), in canonical form."""
    cols = sorted(str(c) for c in (columns if columns is not None else df.columns))
    canon: dict[str, Any] = {}
    for c in cols:
        s = df[c]
        if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
            canon[c] = s.to_numpy(dtype="float64", na_value=np.nan)
        else:
            canon[c] = s.astype("string").to_numpy(dtype=object, na_value=None)
    frame = pd.DataFrame(canon, copy=False)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


@dataclass
class DuplicateCheck:
    """``status``: new | duplicate_file | duplicate_rows | partial_overlap."""

    status: str
    row_count: int = 0
    seen_rows: int = 0
    duplicate_of: list[str] = field(default_factory=list)
    #: Boolean mask of rows already ingested (same order as the batch); None if none.
    seen_mask: np.ndarray | None = None

    @property
    def is_duplicate(self) -> bool:
        return self.status in ("duplicate_file", "duplicate_rows")

    def reason(self) -> dict[str, Any]:
        what = {
            "duplicate_file": "the same bytes were already ingested as partition(s) "
            f"{', '.join(self.duplicate_of)}",
            "duplicate_rows": f"all {self.row_count} rows were already ingested "
            f"(partitions {', '.join(self.duplicate_of)})",
            "partial_overlap": f"{self.seen_rows} of {self.row_count} rows were already "
            f"ingested (partitions {', '.join(self.duplicate_of)})",
            "new": "no rows seen before",
        }[self.status]
        return {
            "kind": "duplicate" if self.is_duplicate else self.status,
            "summary": what,
            "status": self.status,
            "duplicate_of": self.duplicate_of,
            "row_count": self.row_count,
            "seen_rows": self.seen_rows,
        }


class DedupeIndex:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def _files(self) -> Path:
        return self.root / "files"

    @property
    def _rows(self) -> Path:
        return self.root / "rows"

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive inter-process lock (flock) for check-then-register."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def entries(self) -> dict[str, dict[str, Any]]:
        """partition key -> its file record."""
        out: dict[str, dict[str, Any]] = {}
        if not self._files.is_dir():
            return out
        for p in self._files.glob("*.json"):
            try:
                out[p.stem] = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
        return out

    def check(self, partition_key: str, sha256: str, hashes: np.ndarray) -> DuplicateCheck:
        """Is this batch (by bytes, then by rows) already ingested under another key?"""
        n = int(hashes.size)
        entries = self.entries()
        same_bytes = sorted(
            k for k, e in entries.items() if k != partition_key and e.get("sha256") == sha256
        )
        if same_bytes:
            return DuplicateCheck("duplicate_file", n, n, same_bytes)
        seen = np.zeros(n, dtype=bool)
        sources: list[str] = []
        if self._rows.is_dir() and n:
            for p in sorted(self._rows.glob("*.npy")):
                key = p.stem
                if key == partition_key:
                    continue
                try:
                    known = np.load(p, allow_pickle=False)
                except (OSError, ValueError):
                    continue
                if known.size == 0:
                    continue
                pos = np.searchsorted(known, hashes)
                pos[pos >= known.size] = 0
                hit = known[pos] == hashes
                if hit.any():
                    seen |= hit
                    sources.append(key)
        count = int(seen.sum())
        if n and count == n:
            return DuplicateCheck("duplicate_rows", n, count, sources, seen)
        if count:
            return DuplicateCheck("partial_overlap", n, count, sources, seen)
        return DuplicateCheck("new", n, 0, [], None)

    def register(
        self, partition_key: str, sha256: str, hashes: np.ndarray, *, name: str = ""
    ) -> None:
        """Record an accepted batch (rows first, then the file record that makes it count)."""
        arr = np.unique(np.asarray(hashes, dtype=np.uint64))

        def _save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)

        atomic_write_with(self._rows / f"{partition_key}.npy", _save)
        atomic_write_json(
            self._files / f"{partition_key}.json",
            {
                "name": name,
                "sha256": sha256,
                "rows": int(np.asarray(hashes).size),
                "registered_at": dt.datetime.now(dt.UTC).isoformat(),
            },
        )

    def forget(self, partition_key: str) -> None:
        (self._files / f"{partition_key}.json").unlink(missing_ok=True)
        (self._rows / f"{partition_key}.npy").unlink(missing_ok=True)
