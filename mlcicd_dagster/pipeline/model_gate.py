"""The model step's bodies: training set, candidate training, and the model gates.

The holdout split is by a hash of the row id, so a row never moves between train
and holdout as batches accumulate, and candidate and champion are judged on the
same rows. The golden set (shipped with the pipeline, never taken from landed
data) is the second judge, so wrong labels in new data cannot vouch for themselves.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from logging import Logger
from pathlib import Path
from typing import Any

import dagster as dg

from mlcicd_dagster.pipeline import records
from mlcicd_dagster.pipeline.data_gate import REFERENCE_PROFILE
from mlcicd_dagster.pipeline.spec import PipelineSpec
from mlcicd_dagster.platform.home import Home
from mlcicd_dagster.platform.resources import MlcicdResource

HOLDOUT_BUCKETS = 10_000  # resolution of the hash split


def holdout_mask(df: Any, spec: PipelineSpec) -> Any:
    """True for holdout rows: a stable function of the row id (or of the row's content)."""
    import numpy as np

    from mlcicd_dagster.data.fingerprint import row_hashes

    if spec.id_column and spec.id_column in df.columns:
        ids = df[spec.id_column]
        # numeric ids as integers (1 and 1.0 are one row), any other id as its text
        keys = (ids.astype("int64") if ids.dtype.kind in "iuf" else ids.astype(str)).to_numpy()
        h = np.array(
            [int(hashlib.blake2b(str(k).encode(), digest_size=8).hexdigest(), 16) for k in keys],
            dtype=np.uint64,
        )
    else:
        h = row_hashes(df)
    return (h % HOLDOUT_BUCKETS) < int(spec.holdout_fraction * HOLDOUT_BUCKETS)


def build_training_set(spec: PipelineSpec, home: Home, log: Logger) -> dg.MaterializeResult:
    from mlcicd_dagster.data.drift import ReferenceProfile
    from mlcicd_dagster.data.lake import Lake

    lake = Lake(home.lake(spec.dataset))
    keys = lake.active_keys()  # revoked batches stay in the lake, out of training
    revoked = sorted(lake.revoked())
    if not keys:
        why = f" ({len(revoked)} revoked)" if revoked else ""
        raise dg.Failure(f"no validated batch to train on in the lake{why}")
    rows = lake.read_validated(keys)
    mask = holdout_mask(rows, spec)
    train, holdout = rows[~mask].reset_index(drop=True), rows[mask].reset_index(drop=True)
    manifest = {
        "batches": keys,
        "revoked": revoked,
        "content_key": lake.content_key(keys),
        "rows": len(rows),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        **spec.label_summary(rows[spec.label]),
        "holdout_fraction": spec.holdout_fraction,
    }
    lake.write_training_set(train, holdout, manifest)
    ReferenceProfile.from_frame(train, **spec.drift_columns()).save(
        home.lake(spec.dataset) / REFERENCE_PROFILE
    )
    log.info(f"training set: {len(train)} train / {len(holdout)} holdout from {len(keys)} batches")
    return dg.MaterializeResult(
        metadata={
            "batches": len(keys),
            "revoked_batches": dg.MetadataValue.json(revoked),
            "train_rows": len(train),
            "holdout_rows": len(holdout),
            **{
                k: v if not isinstance(v, dict) else dg.MetadataValue.json(v)
                for k, v in spec.label_summary(rows[spec.label]).items()
            },
            "dagster/row_count": len(rows),
        }
    )


def train_candidate(
    spec: PipelineSpec, mlcicd: MlcicdResource, run_id: str, log: Logger
) -> dg.MaterializeResult:
    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.models.gates import prewarm_infra_validation
    from mlcicd_dagster.models.tracking import train_and_track
    from mlcicd_dagster.platform.cpu import available_cores, cores_beside_helper

    threads = available_cores()
    if mlcicd.colocated_steps:  # the gates run in this process: overlap their imports
        prewarm_infra_validation()  # a no-op when the run's first step already started it
        threads = cores_beside_helper()  # the worker may be importing on one core
    uri = mlcicd.setup_mlflow()
    train, holdout, manifest = Lake(mlcicd.home.lake(spec.dataset)).read_training_set()
    tracked = train_and_track(
        spec.make_trainer(),
        train,
        holdout,
        label=spec.label,
        tracking_uri=uri,
        model_name=spec.model_name,
        features=spec.features,
        dagster_run_id=run_id,
        extra_code_paths=[spec.gates_path.parent],
        threads=threads,
        trusted_types=spec.trusted_types,
    )
    reg = tracked.registered
    record = {
        "version": reg.version,
        "run_id": reg.run_id,
        "model_uri": reg.model_uri,
        "fingerprint": tracked.fingerprint,
        "reused": tracked.reused,
        "metrics": tracked.metrics,
        "run_url": tracked.run_url,
        "dagster_run_id": run_id,
        "training_rows": manifest.get("rows"),
        "batches": manifest.get("batches"),
        "content_key": manifest.get("content_key"),
    }
    records.write_candidate(mlcicd.home, spec, record)
    records.write_version_data(mlcicd.home, spec, str(reg.version), record)
    verb = "unchanged inputs: reusing" if tracked.reused else "trained"
    log.info(f"{verb} {spec.model_name} v{reg.version}")
    meta: dict[str, Any] = {
        "version": reg.version,
        "model_uri": reg.model_uri,
        "reused_unchanged_inputs": tracked.reused,
        "fingerprint": tracked.fingerprint,
        "dagster/code_version": tracked.fingerprint[:12],
    }
    if tracked.run_url:
        meta["mlflow_run"] = dg.MetadataValue.url(tracked.run_url)
    for k, v in tracked.metrics.items():
        meta[k] = float(v)
    return dg.MaterializeResult(metadata=meta)


@functools.lru_cache(maxsize=4)
def _gate_config(path: Path, behavioral: Path | None = None) -> Any:
    """The gates' config; the pipeline's ``behavioral`` file (defs.yaml), when declared,
    is the behavioral gate's spec."""
    import dataclasses

    from mlcicd_dagster.models.config import load_gate_config

    config = load_gate_config(path)
    if behavioral is not None:
        config = dataclasses.replace(config, behavioral_path=behavioral)
    return config


def judge_all(
    spec: PipelineSpec, mlcicd: MlcicdResource, run_id: str, log: Logger
) -> Iterator[dg.AssetCheckResult]:
    """Run every model gate once; yield one blocking check result per gate."""
    import pandas as pd

    from mlcicd_dagster.data.lake import Lake
    from mlcicd_dagster.models.card import card, store_card
    from mlcicd_dagster.models.gates import BLOCKING, run_all_gates, write_decision_tags
    from mlcicd_dagster.models.loading import load_predictor
    from mlcicd_dagster.models.registry import get_alias

    uri = mlcicd.setup_mlflow()
    cand = records.read_candidate(mlcicd.home, spec)
    if cand is None:
        raise dg.Failure("the model step recorded no candidate")
    _, holdout, manifest = Lake(mlcicd.home.lake(spec.dataset)).read_training_set()
    golden = pd.read_csv(spec.golden_path)
    champion_version = get_alias(uri, spec.model_name, "champion")
    champion = None
    champion_uri = None
    if champion_version is not None:
        champion_uri = f"models:/{spec.model_name}/{champion_version}"
        champion = load_predictor(champion_uri, tracking_uri=uri)
    candidate = load_predictor(cand["model_uri"], tracking_uri=uri)
    gate_args: dict[str, Any] = {
        "holdout": holdout,
        "golden": golden,
        "config": _gate_config(spec.gates_path, spec.behavioral_path),
        "candidate_uri": cand["model_uri"],
        "champion_uri": champion_uri,
        "tracking_uri": uri,
        "run_url": cand.get("run_url"),
    }
    if spec.task == "binary":
        results = run_all_gates(candidate, champion, **gate_args)
    else:  # the task's own losses (models.task_gates), the same five gates
        from mlcicd_dagster.models.task_gates import run_task_gates

        results = run_task_gates(candidate, champion, task=spec.task_type, **gate_args)
    tags = write_decision_tags(uri, spec.model_name, cand["version"], results)
    markdown = card(
        model_name=spec.model_name,
        version=cand["version"],
        trainer=spec.trainer,
        params={},
        metrics=cand.get("metrics") or {},
        data={**manifest, "golden_rows": len(golden)},
        gates=results,
        champion_version=champion_version,
        run_url=cand.get("run_url"),
    )
    store_card(uri, spec.model_name, cand["version"], cand["run_id"], markdown)
    failed = [r for r in results if not r.passed and r.severity == BLOCKING]
    for r in results:
        records.record_gate(
            mlcicd.home,
            spec,
            cand["version"],
            r.name,
            {"passed": r.passed, "summary": r.summary, "severity": r.severity, "rule": r.rule},
        )
    if failed:
        from mlcicd_dagster.platform.alerts import send_alert

        send_alert(
            mlcicd.home,
            "model_gate_failed",
            f"{spec.model_name} v{cand['version']} rejected by {', '.join(r.name for r in failed)}",
            {"version": cand["version"], "gates": {r.name: r.summary for r in failed}},
        )
    log.info(f"gates on v{cand['version']}: {tags.get('gates.decision')}")
    for r in results:
        meta = dict(r.to_metadata())
        meta["model_card"] = dg.MetadataValue.md(markdown)
        meta["champion_version"] = str(champion_version or "none (first model: floors)")
        severity = (
            dg.AssetCheckSeverity.ERROR if r.severity == BLOCKING else dg.AssetCheckSeverity.WARN
        )
        yield dg.AssetCheckResult(
            check_name=r.name,
            passed=r.passed,
            severity=severity,
            description=r.summary[:1000],
            metadata=meta,
        )
