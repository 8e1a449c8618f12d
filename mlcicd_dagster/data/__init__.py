"""Data gates: landing scan, batch readers, suites and validation, quarantine, dedupe, lake, drift.

Dagster-free library code (only the ``to_metadata()`` helpers import dagster, lazily).
Names are re-exported lazily so that ``import mlcicd_dagster.data.landing`` from a
sensor (standard library only) does not pay for pandas, pyarrow or GE.

Modules: ``landing`` (scan_landing, partition_key_for), ``readers`` (read_batch,
BatchReadError), ``suite`` (load_suite, Suite), ``validate`` (validate_batch,
ValidationReport), ``quarantine`` (quarantine_file, list_quarantined),
``fingerprint`` (file_sha256, row_hashes, DedupeIndex), ``lake`` (Lake), ``drift``
(drift_report, ReferenceProfile, DriftReport), ``process`` (process_landed_file and
its steps).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "landing": ["LandedFile", "Refusal", "ScanResult", "scan_landing", "partition_key_for"],
    "readers": ["BatchReadError", "read_batch", "DEFAULT_MAX_BYTES"],
    "suite": ["Suite", "SuiteError", "ExpectationSpec", "load_suite", "suite_from_dict"],
    "validate": ["CheckRow", "ValidationReport", "validate_batch", "run_gx", "FAST_TYPES"],
    "quarantine": ["quarantine_file", "record_refusal", "list_quarantined", "QuarantineError"],
    "fingerprint": ["file_sha256", "row_hashes", "DedupeIndex", "DuplicateCheck"],
    "lake": ["Lake", "LakeError"],
    "drift": ["drift_report", "ReferenceProfile", "DriftReport", "DriftRow", "adjust_pvalues"],
    "process": [
        "BatchOutcome",
        "FileChangedError",
        "inspect_batch",
        "quarantine_batch",
        "quarantine_refusal",
        "accept_batch",
        "process_landed_file",
        "dedupe_index",
    ],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
