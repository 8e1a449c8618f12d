"""The data gate between a landed file and the lake (called by the data assets).

Judging a staged batch: unreadable -> quarantine; suite ERROR -> quarantine;
duplicate (same bytes or all rows seen before) -> quarantine. Each quarantine is a
byte-identical copy with a reason JSON, plus an alert. Accepting: rows not seen
before go to the lake in one atomic write, then the dedupe index learns them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from logging import Logger
from pathlib import Path
from typing import Any

import dagster as dg

from mlcicd_dagster.pipeline.data_assets import landed_file, read_report, staging_paths
from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.home import Home

REFERENCE_PROFILE = "reference_profile.json"  # drift reference, beside the training set


@functools.lru_cache(maxsize=8)
def _suite(path: Path) -> Any:
    from mlcicd_dagster.data.suite import load_suite

    return load_suite(path)


def _dedupe(home: Home, spec: PipelineSpec) -> Any:
    from mlcicd_dagster.data.fingerprint import DedupeIndex

    return DedupeIndex(home.lake(spec.dataset) / "_dedupe")


def _row_hashes(df: Any, spec: PipelineSpec) -> Any:
    from mlcicd_dagster.data.fingerprint import row_hashes

    cols = [c for c in (*spec.features, spec.label, spec.id_column) if c and c in df.columns]
    return row_hashes(df, cols)


def drift_rules(spec: PipelineSpec) -> Any:
    """The pipeline's drift rules (its suite's ``meta.mlcicd.drift``), checked."""
    from mlcicd_dagster.data.drift_rules import DriftRules

    columns = [*spec.features, spec.label]
    suite = _suite(spec.suite_path)
    # The label and the ID are declared once, in defs.yaml; an older suite may still name
    # them in meta.mlcicd, and then they must agree.
    for field, own, declared in (
        ("label", suite.label, spec.label),
        ("id_column", suite.id_column, spec.id_column),
    ):
        if own is not None and own != declared:
            from mlcicd_dagster.data.suite import SuiteError

            raise SuiteError(
                f"{spec.suite_path}: meta.mlcicd.{field} {own!r} differs from the pipeline's "
                f"{field} {declared!r} (declared in defs.yaml; remove it from the suite)"
            )
    try:
        return DriftRules.from_suite_meta(suite.meta, columns=columns, source=str(spec.suite_path))
    except ValueError as exc:
        from mlcicd_dagster.data.suite import SuiteError

        raise SuiteError(str(exc)) from exc


def judge_batch(
    spec: PipelineSpec, home: Home, key: str, log: Logger
) -> Iterator[dg.AssetCheckResult]:
    """The data gate: ``data_suite`` then ``drift``, one result each (see data_assets)."""
    suite = judge_staged_batch(spec, home, key, log)
    yield suite
    if not suite.passed:
        yield dg.AssetCheckResult(
            check_name="drift",
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="not judged: the batch was rejected by the suite",
            metadata={"outcome": "not judged"},
        )
        return
    yield drift_against_reference(spec, home, key, log)


def judge_staged_batch(
    spec: PipelineSpec, home: Home, key: str, log: Logger
) -> dg.AssetCheckResult:
    import pandas as pd

    from mlcicd_dagster.data.validate import validate_batch

    stage = home.staging(spec.dataset)
    report = read_report(stage, key)
    if not report.get("readable"):
        reason = {
            "kind": "unreadable",
            "summary": f"unreadable: {report.get('reason')}",
            "details": report.get("details", {}),
        }
        return _reject(spec, home, key, report, reason, {}, log)

    rows_path, _ = staging_paths(stage, key)
    df = pd.read_parquet(rows_path)
    validation = validate_batch(df, _suite(spec.suite_path))
    metadata = validation.to_metadata()
    label = label_fits_task(df, spec)
    if label is not None:
        metadata["label_check"] = dg.MetadataValue.text(label["summary"])
    if not validation.passed:
        reason = validation.reason()
        if label is not None:
            reason = {
                **reason,
                "summary": f"{reason['summary']}; {label['summary']}",
                "label": label,
            }
        return _reject(spec, home, key, report, reason, metadata, log)
    if label is not None:
        return _reject(spec, home, key, report, label, metadata, log)

    dup = _dedupe(home, spec).check(key, report["sha256"], _row_hashes(df, spec))
    metadata["duplicate_status"] = dg.MetadataValue.text(dup.status)
    if dup.is_duplicate:
        return _reject(spec, home, key, report, dup.reason(), metadata, log)
    log.info(f"{report['file']}: {validation.summary()}")
    metadata["outcome"] = dg.MetadataValue.text("passed")
    return dg.AssetCheckResult(
        check_name="data_suite",
        passed=True,
        metadata=metadata,
        description=f"accepted: {validation.summary()}"[:1000],
    )


def label_fits_task(df: Any, spec: PipelineSpec) -> dict[str, Any] | None:
    """None when every label fits the pipeline's task, else the quarantine reason.

    A label outside the declared classes (classification) or not a finite number
    (regression) is found here, at the gate, never at training.
    """
    if spec.label not in df.columns:
        return {
            "kind": "label_missing",
            "summary": f"label column {spec.label!r} is missing from the batch",
            "columns": [spec.label],
        }
    task = spec.task_type
    check = task.check_labels(df[spec.label])
    bad = int(check.bad.sum())
    if not bad:
        return None
    return {
        "kind": "label_does_not_fit_task",
        "summary": f"{bad} of {len(df)} rows: {check.reason}",
        "task": task.to_dict(),
        "columns": [spec.label],
        "rows": bad,
        "values": dict(sorted(check.counts.items(), key=lambda kv: -kv[1])[:20]),
    }


def _reject(
    spec: PipelineSpec,
    home: Home,
    key: str,
    report: dict[str, Any],
    reason: dict[str, Any],
    metadata: dict[str, Any],
    log: Logger,
    check_name: str = "data_suite",
) -> dg.AssetCheckResult:
    """Quarantine the batch with its reason: a rejection (WARN, the run stays green)."""
    from mlcicd_dagster.data.quarantine import quarantine_file, record_refusal
    from mlcicd_dagster.platform.alerts import send_alert

    qdir = home.quarantine(spec.dataset)
    src = landed_file(home.landing(spec.dataset), key)
    reason = {**reason, "partition_key": key}
    if src is not None and src.is_file():
        where = quarantine_file(src, qdir, reason)
    else:
        where = record_refusal(report.get("file") or key, qdir, reason)
    for staged in staging_paths(home.staging(spec.dataset), key):
        staged.unlink(missing_ok=True)  # the quarantine copy is now the record of it
    summary = str(reason.get("summary") or reason.get("kind"))
    log.warning(f"quarantined {report.get('file')}: {summary}")
    send_alert(
        home,
        "rejected",
        f"{spec.dataset}: batch {report.get('file')} rejected and quarantined: {summary}",
        {
            "stage": "data_gate",
            "check": check_name,
            "partition_key": key,
            "reason": summary,
            "quarantine": str(where),
        },
    )
    meta = {
        **metadata,
        "outcome": dg.MetadataValue.text("rejected"),
        "quarantined_to": dg.MetadataValue.path(str(where)),
        "reason": dg.MetadataValue.text(summary),
        "reason_json": dg.MetadataValue.json(_jsonable(reason)),
    }
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=meta,
        description=f"rejected (quarantined): {summary}"[:1000],
    )


def accept_staged_batch(
    spec: PipelineSpec, home: Home, key: str, log: Logger | None = None
) -> dg.MaterializeResult | None:
    """Move the batch's accepted rows into the lake; ``None`` (nothing materialized) when
    the data gate rejected it (its staged rows went to quarantine)."""
    import pandas as pd

    from mlcicd_dagster.data.lake import Lake

    lake_dir = home.lake(spec.dataset)
    rows_path, report_path = staging_paths(home.staging(spec.dataset), key)
    if not rows_path.exists():
        if log is not None:
            log.info(f"batch {key} was rejected by the data gate: nothing enters the lake")
        return None
    report = read_report(home.staging(spec.dataset), key)
    df = _suite(spec.suite_path).conform(pd.read_parquet(rows_path))
    index = _dedupe(home, spec)
    with index.lock():
        hashes = _row_hashes(df, spec)
        dup = index.check(key, report["sha256"], hashes)
        fresh = df if dup.seen_mask is None else df[~dup.seen_mask]
        fresh_hashes = hashes if dup.seen_mask is None else hashes[~dup.seen_mask]
        path = Lake(lake_dir).write_validated(
            key,
            fresh.reset_index(drop=True),
            source={"file": report.get("file"), "sha256": report.get("sha256")},
        )
        index.register(key, report["sha256"], fresh_hashes)
    rows_path.unlink(missing_ok=True)
    report_path.unlink(missing_ok=True)
    return dg.MaterializeResult(
        metadata={
            "rows": len(fresh),
            "rows_already_ingested_dropped": int(len(df) - len(fresh)),
            "lake_path": dg.MetadataValue.path(str(path)),
            "file": report.get("file"),
        }
    )


def drift_against_reference(
    spec: PipelineSpec, home: Home, key: str, log: Logger | None = None
) -> dg.AssetCheckResult:
    """Drift of the staged batch against the training reference, by the suite's rules:
    drift in a ``block_on`` column rejects (quarantines) the batch; other drift warns."""
    import logging

    import pandas as pd

    rows_path, _ = staging_paths(home.staging(spec.dataset), key)
    if not rows_path.exists():
        return dg.AssetCheckResult(
            check_name="drift",
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description="nothing to compare: the batch was not readable or already accepted",
            metadata={"outcome": "not judged"},
        )
    rules = drift_rules(spec)
    profile = reference_profile(spec, home)
    report = profile.compare(pd.read_parquet(rows_path), **rules.compare_kwargs())
    metadata = report.to_metadata()
    metadata["block_on"] = dg.MetadataValue.text(", ".join(rules.block_on) or "(none)")
    if report.blocking:
        blocked = [r.feature for r in report.drifted if r.feature in rules.block_on]
        reason = {
            "kind": "drift",
            "summary": f"drift in {', '.join(blocked)} (blocking rule meta.mlcicd.drift."
            f"block_on): {report.summary()}",
            "drift": report.to_dict(),
        }
        file_report = read_report(home.staging(spec.dataset), key)
        return _reject(
            spec, home, key, file_report, reason, metadata, log or logging.getLogger(__name__),
            check_name="drift",
        )  # fmt: skip
    metadata["outcome"] = dg.MetadataValue.text("warning" if report.alarm else "passed")
    return dg.AssetCheckResult(
        check_name="drift",
        passed=not report.alarm,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=("drift warning (batch accepted): " if report.alarm else "") + report.summary(),
    )


def reference_profile(spec: PipelineSpec, home: Home) -> Any:
    """The training reference (saved with the training set), else the golden set's."""
    import pandas as pd

    from mlcicd_dagster.data.drift import ReferenceProfile

    saved = home.lake(spec.dataset) / REFERENCE_PROFILE
    if saved.exists():
        return ReferenceProfile.load(saved)
    return ReferenceProfile.from_frame(pd.read_csv(spec.golden_path), **spec.drift_columns())


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))
