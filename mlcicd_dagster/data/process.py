"""One landed file, landing to lake: read, fingerprint, validate, dedupe, accept or quarantine.

The steps are offered separately for Dagster (the ``raw_batch`` asset, its blocking
check, ``validated_batch``) and together in :func:`process_landed_file`:

* :func:`inspect_batch` has no side effects: it reads the file, checks the bytes
  and rows against the duplicate index and validates the suite, and returns a
  :class:`BatchOutcome` whose ``verdict`` is ``pass`` or ``reject`` and whose
  ``reason`` is the quarantine reason (which checks, which columns, how many rows).
* :func:`quarantine_batch` copies a rejected file to quarantine with its reason.
* :func:`accept_batch` writes the accepted rows (declared columns only, rows
  already ingested dropped) to the lake atomically and registers them in the
  duplicate index; only then can a later batch be "a duplicate" of it.

Nothing is lost: the landed file is only read; a rejected file's quarantine copy
is byte-identical; the lake never shows part of a batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcicd_dagster.data.fingerprint import DedupeIndex, DuplicateCheck, file_sha256, row_hashes
from mlcicd_dagster.data.lake import Lake
from mlcicd_dagster.data.landing import Refusal, partition_key_for
from mlcicd_dagster.data.quarantine import quarantine_file, record_refusal
from mlcicd_dagster.data.readers import DEFAULT_MAX_BYTES, BatchReadError, read_batch
from mlcicd_dagster.data.suite import Suite
from mlcicd_dagster.data.validate import ValidationReport, validate_batch

DEDUPE_DIR = "_dedupe"


class FileChangedError(RuntimeError):
    """The landed file changed while it was read: transient, retry on the next tick."""


def dedupe_index(lake: Lake) -> DedupeIndex:
    return DedupeIndex(lake.root / DEDUPE_DIR)


@dataclass
class BatchOutcome:
    name: str
    path: Path
    partition_key: str
    verdict: str  # pass | reject
    sha256: str | None = None
    rows_in: int = 0
    reason: dict[str, Any] | None = None
    report: ValidationReport | None = None
    duplicate: DuplicateCheck | None = None
    warnings: list[str] = field(default_factory=list)
    #: Rows to write when accepted (declared columns, previously ingested rows dropped).
    accepted: pd.DataFrame | None = field(default=None, repr=False)
    #: Filled by process_landed_file / quarantine_batch / accept_batch.
    status: str = "inspected"  # inspected | accepted | quarantined
    quarantine_path: Path | None = None
    lake_path: Path | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @property
    def rows_accepted(self) -> int:
        return 0 if self.accepted is None or not self.passed else int(len(self.accepted))

    def summary(self) -> str:
        if self.reason:
            return str(self.reason.get("summary") or self.reason.get("message") or self.verdict)
        return self.report.summary() if self.report else self.verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "partition_key": self.partition_key,
            "verdict": self.verdict,
            "status": self.status,
            "summary": self.summary(),
            "sha256": self.sha256,
            "rows_in": self.rows_in,
            "rows_accepted": self.rows_accepted,
            "warnings": self.warnings,
            "reason": self.reason,
            "quarantine_path": None if self.quarantine_path is None else str(self.quarantine_path),
            "lake_path": None if self.lake_path is None else str(self.lake_path),
        }

    def to_metadata(self) -> dict[str, Any]:
        """Dagster metadata: the suite table (when validated) plus the verdict."""
        import dagster as dg

        md: dict[str, Any] = self.report.to_metadata() if self.report is not None else {}
        md["verdict"] = dg.MetadataValue.text(self.verdict)
        md["summary"] = dg.MetadataValue.text(self.summary())
        md["file"] = dg.MetadataValue.text(self.name)
        md["rows_in"] = dg.MetadataValue.int(self.rows_in)
        md["rows_accepted"] = dg.MetadataValue.int(self.rows_accepted)
        if self.reason is not None:
            md["reason"] = dg.MetadataValue.json(self.reason)
        if self.warnings:
            md["batch_warnings"] = dg.MetadataValue.json(self.warnings)
        if self.quarantine_path is not None:
            md["quarantined_as"] = dg.MetadataValue.path(str(self.quarantine_path))
        return md


def _stat_sig(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns


def inspect_batch(
    path: Path,
    *,
    suite: Suite,
    lake: Lake,
    partition_key: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    engine: str = "auto",
    dedupe: bool = True,
) -> BatchOutcome:
    """Read, fingerprint, validate and dedupe one landed file; no side effects."""
    path = Path(path)
    key = partition_key or partition_key_for(path.name)
    out = BatchOutcome(path.name, path, key, "reject")
    before = _stat_sig(path)
    index = dedupe_index(lake) if dedupe else None
    try:
        if before[0] <= max_bytes:
            out.sha256 = file_sha256(path)
            if index is not None:
                dup = index.check(key, out.sha256, np.empty(0, dtype=np.uint64))
                if dup.status == "duplicate_file":
                    out.duplicate = dup
                    out.reason = dup.reason()
                    return out
        df = read_batch(path, max_bytes=max_bytes)
    except BatchReadError as exc:
        out.reason = {"kind": "unreadable", "summary": str(exc), **exc.to_dict()}
        return out
    finally:
        if _stat_sig(path) != before:
            raise FileChangedError(f"{path.name} changed while being read; it will be retried")
    out.rows_in = int(len(df))
    report = validate_batch(df, suite, engine=engine)
    out.report = report
    if not report.passed:
        out.reason = report.reason()
        return out
    out.warnings += [f"WARN {r.expectation} ({r.column or 'table'})" for r in report.warnings]
    accepted = suite.conform(df)
    extras = suite.extra_columns_in(df)
    if extras:
        out.warnings.append(f"extra columns dropped: {extras}")
    if index is not None:
        hashes = row_hashes(accepted)
        dup = index.check(key, out.sha256 or "", hashes)
        out.duplicate = dup
        if dup.is_duplicate:
            out.reason = dup.reason()
            return out
        if dup.status == "partial_overlap" and dup.seen_mask is not None:
            accepted = accepted.loc[~dup.seen_mask]
            out.warnings.append(dup.reason()["summary"] + "; those rows were dropped")
    out.accepted = accepted.reset_index(drop=True)
    out.verdict = "pass"
    return out


def quarantine_batch(outcome: BatchOutcome, quarantine_dir: Path) -> Path:
    """Copy a rejected batch to quarantine with its reason; returns the copy's path."""
    if outcome.passed:
        raise ValueError(f"{outcome.name} passed; only rejected batches are quarantined")
    reason = {
        "partition_key": outcome.partition_key,
        "rows_in": outcome.rows_in,
        **(outcome.reason or {}),
    }
    if outcome.report is not None:
        reason.setdefault("validation", outcome.report.summary())
    outcome.quarantine_path = quarantine_file(outcome.path, quarantine_dir, reason)
    outcome.status = "quarantined"
    return outcome.quarantine_path


def quarantine_refusal(refusal: Refusal, quarantine_dir: Path) -> Path:
    """Record a refused landing entry (e.g. a symlink out of the zone): reason JSON, no copy."""
    return record_refusal(
        refusal.name,
        quarantine_dir,
        {
            "kind": "refused",
            "summary": refusal.reason,
            "partition_key": refusal.partition_key,
        },
        source=refusal.path,
    )


def accept_batch(outcome: BatchOutcome, lake: Lake, *, dedupe: bool = True) -> Path:
    """Write a passing batch's rows to the lake (atomic) and register them as ingested."""
    if not outcome.passed or outcome.accepted is None:
        raise ValueError(f"{outcome.name} did not pass; it cannot be written to the lake")
    index = dedupe_index(lake)
    with index.lock():
        if dedupe:
            # Re-check under the lock: a concurrent run may have accepted the same data.
            hashes = row_hashes(outcome.accepted)
            dup = index.check(outcome.partition_key, outcome.sha256 or "", hashes)
            if dup.is_duplicate:
                outcome.verdict = "reject"
                outcome.duplicate = dup
                outcome.reason = dup.reason()
                raise ValueError(f"{outcome.name}: {dup.reason()['summary']}")
        path = lake.write_validated(
            outcome.partition_key,
            outcome.accepted,
            source={"file": outcome.name, "sha256": outcome.sha256},
        )
        index.register(
            outcome.partition_key,
            outcome.sha256 or "",
            row_hashes(outcome.accepted),
            name=outcome.name,
        )
    outcome.lake_path = path
    outcome.status = "accepted"
    return path


def process_landed_file(
    path: Path,
    *,
    suite: Suite,
    lake: Lake,
    quarantine_dir: Path,
    partition_key: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    engine: str = "auto",
    dedupe: bool = True,
) -> BatchOutcome:
    """Inspect one landed file, then quarantine it or write it to the lake.

    ``outcome.status`` is ``accepted`` or ``quarantined``; raises only
    :class:`FileChangedError` (transient) or for I/O failures of our own folders.
    """
    outcome = inspect_batch(
        path,
        suite=suite,
        lake=lake,
        partition_key=partition_key,
        max_bytes=max_bytes,
        engine=engine,
        dedupe=dedupe,
    )
    if outcome.passed:
        try:
            accept_batch(outcome, lake, dedupe=dedupe)
            return outcome
        except ValueError:
            if outcome.passed:
                raise
    quarantine_batch(outcome, quarantine_dir)
    return outcome
