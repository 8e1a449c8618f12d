"""Where data is checked: ``raw_batch`` -> blocking suite check -> ``validated_batch``.

``raw_batch`` (one dynamic partition per landed file) parses the landed bytes
into a staged Parquet file and never fails on bad content: an unreadable file
is recorded as such, so that the blocking check can quarantine it with its
reason. The check runs the suite (and the duplicate test); on failure it copies
the file to quarantine with a reason JSON and nothing downstream runs.
``validated_batch`` moves the accepted rows into the lake in one atomic write.
"""

import json
import warnings
from pathlib import Path
from typing import Any

import dagster as dg

from mlcicd_dagster.pipeline.presigned import presigned
from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.atomic import atomic_write_json
from mlcicd_dagster.platform.resources import MlcicdResource

ELIGIBLE = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


def staging_paths(stage: Path, partition_key: str) -> tuple[Path, Path]:
    """(parsed rows, read report) of one landed file awaiting its gate."""
    return stage / f"{partition_key}.parquet", stage / f"{partition_key}.json"


def landed_file(landing: Path, partition_key: str) -> Path | None:
    from mlcicd_dagster.data.landing import partition_key_for

    if not landing.is_dir():
        return None
    for entry in landing.iterdir():
        if partition_key_for(entry.name) == partition_key:
            return entry
    return None


def _drift_rules_ok(spec: PipelineSpec) -> bool:
    from mlcicd_dagster.pipeline.data_gate import drift_rules  # only when not remembered

    return bool(drift_rules(spec))


def build_data_assets(spec: PipelineSpec, partitions: dg.DynamicPartitionsDefinition):
    from mlcicd_dagster.platform.load_cache import remembered

    # a bad drift rule (or a label the suite names differently) is refused when the code
    # location loads; a suite checked before (same bytes) is not parsed again
    args = {"features": list(spec.features), "label": spec.label, "id": spec.id_column}
    remembered("drift_rules", [spec.suite_path], args, lambda: _drift_rules_ok(spec))
    raw_key = dg.AssetKey(spec.key("raw_batch"))

    @dg.asset(
        key=raw_key,
        op_tags=spec.op_tags("raw_batch"),
        partitions_def=partitions,
        group_name=spec.dataset,
        owners=list(spec.owners),
        kinds={"parquet"},
        description="One landed file, parsed. Never edits the landing zone.",
    )
    @presigned
    def raw_batch(
        context: dg.AssetExecutionContext, mlcicd: MlcicdResource
    ) -> dg.MaterializeResult:
        from mlcicd_dagster.data.fingerprint import file_sha256
        from mlcicd_dagster.data.readers import BatchReadError, read_batch

        home = mlcicd.home
        key = context.partition_key
        src = landed_file(home.landing(spec.dataset), key)
        rows_path, report_path = staging_paths(home.staging(spec.dataset), key)
        report: dict[str, Any] = {"partition_key": key, "file": src.name if src else None}
        if src is None:
            report.update(readable=False, reason="the landed file is gone from the landing zone")
        else:
            report["sha256"] = file_sha256(src)
            report["bytes"] = src.stat().st_size
            try:
                df = read_batch(src)
            except BatchReadError as exc:
                report.update(readable=False, reason=exc.reason, details=exc.details)
            else:
                from mlcicd_dagster.platform.atomic import atomic_write_with

                atomic_write_with(rows_path, lambda tmp: df.to_parquet(tmp, index=False))
                report.update(readable=True, rows=len(df), columns=list(df.columns))
        atomic_write_json(report_path, report)
        meta = {k: v for k, v in report.items() if k in ("file", "sha256", "bytes", "rows")}
        meta["readable"] = bool(report["readable"])
        if not report["readable"]:
            meta["reason"] = str(report["reason"])
        return dg.MaterializeResult(metadata=meta)

    # The data gate: one step judges the batch (suite + duplicates, then drift against
    # the training reference), so a batch is quarantined once, with one reason. Both
    # checks are partitioned with the batch: the partition view shows each file's
    # verdict and reason. Blocking, so validated_batch waits for the verdict; a
    # rejection is a WARN (the run stays green) and validated_batch then materializes
    # nothing (the staged rows are gone to quarantine). Only an error fails the run.
    with warnings.catch_warnings():  # partitioned checks are "preview" in Dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        check_specs = [
            dg.AssetCheckSpec(
                "data_suite",
                asset=raw_key,
                blocking=True,
                partitions_def=partitions,
                description="Great Expectations suite + duplicate test; a failure "
                "quarantines the batch with its reason.",
            ),
            dg.AssetCheckSpec(
                "drift",
                asset=raw_key,
                blocking=True,
                partitions_def=partitions,
                description="Per-column drift against the training reference; drift in a "
                "column of the suite's meta.mlcicd.drift.block_on rejects the batch.",
            ),
        ]

    @dg.multi_asset_check(
        specs=check_specs,
        name=f"{spec.dataset}__data_gate",
        description="The data gate of one landed batch.",
    )
    @presigned
    def data_gate(context: dg.AssetCheckExecutionContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.data_gate import judge_batch

        yield from judge_batch(spec, mlcicd.home, context.partition_key, context.log)

    @dg.asset(
        key=dg.AssetKey(spec.key("validated_batch")),
        op_tags=spec.op_tags("validated_batch"),
        partitions_def=partitions,
        deps=[raw_batch],
        group_name=spec.dataset,
        owners=list(spec.owners),
        kinds={"parquet"},
        automation_condition=ELIGIBLE,
        output_required=False,
        description="Accepted rows of one batch, in the Parquet lake (nothing for a "
        "rejected batch: it is in quarantine with its reason).",
    )
    @presigned
    def validated_batch(context: dg.AssetExecutionContext, mlcicd: MlcicdResource):
        from mlcicd_dagster.pipeline.data_gate import accept_staged_batch

        result = accept_staged_batch(spec, mlcicd.home, context.partition_key, context.log)
        if result is not None:
            yield result

    return [raw_batch, validated_batch], [data_gate]


def read_report(stage: Path, partition_key: str) -> dict[str, Any]:
    _, report_path = staging_paths(stage, partition_key)
    if not report_path.exists():
        return {"readable": False, "reason": "raw_batch was not materialized for this partition"}
    return json.loads(report_path.read_text())
