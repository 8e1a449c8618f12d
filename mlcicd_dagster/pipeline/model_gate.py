"""The model step's bodies: training set, candidate training, and the model gates.

The holdout split is by a hash of the row id, so a row never moves between train
and holdout as batches accumulate, and candidate and champion are judged on the
same rows. The golden set (shipped with the pipeline, never taken from landed
data) is the second judge, so wrong labels in new data cannot vouch for themselves.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
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


def waiting_for_rows(spec: PipelineSpec, read_rows: Callable[[], Any]) -> str | None:
    """Why no model may be trained and judged on the landed rows yet, or None.

    With ``design.wait_for_holdout_rows`` in the gates config, the holdout these rows
    give (the same hash split the training set uses) must have ``design.holdout_rows``
    rows: below that the gates' design does not hold (an equally good model would be
    rejected too often), so the pipeline waits for more rows instead of judging."""
    design = _gate_config(spec.gates_path, spec.behavioral_path, spec.label).design
    if not design.wait_for_holdout_rows:
        return None
    rows = read_rows()  # read only when the design asks for it
    n = int(holdout_mask(rows, spec).sum()) if len(rows) else 0
    if n >= design.holdout_rows:
        return None
    return (
        f"waiting for more rows: the {len(rows):,} landed rows give a {n}-row holdout; "
        f"the gates' design needs {design.holdout_rows} (design.holdout_rows in "
        f"{spec.gates_path.name}) to judge a model soundly"
    )


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
def _gate_config(path: Path, behavioral: Path | None = None, label: str | None = None) -> Any:
    """The gates' config; the pipeline's ``behavioral`` file (defs.yaml), when declared,
    is the behavioral gate's spec, and its ``label`` the label (declared once, there)."""
    import dataclasses

    from mlcicd_dagster.models.config import load_gate_config

    config = load_gate_config(path, label)
    if behavioral is not None:
        config = dataclasses.replace(config, behavioral_path=behavioral)
    return config


def count_rows(path: Path) -> int:
    """Data rows of a CSV (optionally gzipped) or Parquet file, without pandas."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    import gzip

    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        return max(sum(1 for line in fh if line.strip()) - 1, 0)


def checked_gate_config(spec: PipelineSpec) -> Any:
    """The pipeline's gates config, refused (``GateConfigError`` naming the fix) when its
    design would fail an equally good model more often than ``design.max_false_rejection``.
    """
    from mlcicd_dagster.models.config import GateConfigError
    from mlcicd_dagster.models.gates import DesignSizes, design_report

    cfg = _gate_config(spec.gates_path, spec.behavioral_path, spec.label)
    try:
        golden = count_rows(spec.golden_path)
    except OSError as exc:
        raise GateConfigError(f"cannot read the golden set {spec.golden_path}: {exc}") from exc
    task = str(getattr(spec, "task", "binary"))
    report = design_report(cfg, DesignSizes(cfg.design.holdout_rows, golden, task))
    if report["false_rejection"] > cfg.design.max_false_rejection:
        per = ", ".join(
            f"{k} {v['false_rejection']:.1%}"
            for k, v in report["gates"].items()
            if v["false_rejection"] >= 0.001
        )
        raise GateConfigError(
            f"{spec.gates_path}: by design these gates would reject an equally good model "
            f"with probability up to {report['false_rejection']:.0%} (> "
            f"{cfg.design.max_false_rejection:.0%}) at {cfg.design.holdout_rows:,} holdout and "
            f"{golden:,} golden rows ({per}). Fix: " + "; ".join(report["fixes"] or ["-"])
        )
    return cfg


def judge_all(
    spec: PipelineSpec, mlcicd: MlcicdResource, run_id: str, log: Logger
) -> Iterator[dg.AssetCheckResult]:
    """Run every model gate once; yield one check result per gate.

    A rejection (a gate judged and said no) is a failed check of WARN severity with
    ``outcome: rejected``: the run stays green and ``deployment`` records that the
    champion still serves. A gate that could not judge is an error: its check fails
    with ERROR severity and the step then fails, so nothing is deployed.
    """
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
        "config": _gate_config(spec.gates_path, spec.behavioral_path, spec.label),
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
        params=_trainer_params(spec, cand, uri),
        metrics=cand.get("metrics") or {},
        data={**manifest, "golden_rows": len(golden)},
        gates=results,
        champion_version=champion_version,
        run_url=cand.get("run_url"),
    )
    store_card(uri, spec.model_name, cand["version"], cand["run_id"], markdown)
    errored = [r for r in results if r.error]
    rejected = [r for r in results if not r.passed and not r.error and r.severity == BLOCKING]
    for r in results:
        records.record_gate(
            mlcicd.home,
            spec,
            cand["version"],
            r.name,
            {
                "passed": r.passed,
                "summary": r.summary,
                "severity": r.severity,
                "rule": r.rule,
                "outcome": _outcome(r),
            },
        )
    still = f"v{champion_version}" if champion_version else "nothing (no champion yet)"
    if rejected and not errored:
        from mlcicd_dagster.platform.alerts import send_alert

        reason = "; ".join(f"{r.name}: {r.summary}" for r in rejected)
        send_alert(
            mlcicd.home,
            "rejected",
            f"{spec.model_name} v{cand['version']} rejected by the model gates "
            f"({', '.join(r.name for r in rejected)}); still serving {still}",
            {
                "stage": "model_gates",
                "version": cand["version"],
                "reason": reason,
                "still_serving": still,
                "gates": {r.name: r.summary for r in rejected},
            },
        )
    log.info(f"gates on v{cand['version']}: {tags.get('gates.decision')}")
    for r in results:
        meta = dict(r.to_metadata())
        meta["outcome"] = dg.MetadataValue.text(_outcome(r))
        meta["model_card"] = dg.MetadataValue.md(markdown)
        meta["champion_version"] = str(champion_version or "none (first model: floors)")
        if r.error:
            severity = dg.AssetCheckSeverity.ERROR
            description = f"ERROR (could not judge): {r.summary}"
        else:
            severity = dg.AssetCheckSeverity.WARN
            description = r.summary if r.passed else f"rejected: {r.summary}; still serving {still}"
        yield dg.AssetCheckResult(
            check_name=r.name,
            passed=r.passed,
            severity=severity,
            description=description[:1000],
            metadata=meta,
        )
    if errored:
        raise dg.Failure(
            description="model gate(s) could not judge: "
            + "; ".join(f"{r.name}: {r.summary}" for r in errored),
            metadata={"version": str(cand["version"])},
        )


def _outcome(result: Any) -> str:
    if result.error:
        return "error"
    return "passed" if result.passed else "rejected"


def _trainer_params(spec: PipelineSpec, cand: dict[str, Any], uri: str) -> dict[str, Any]:
    """The parameters the candidate was trained with: its MLflow run's logged params
    (else the spec's trainer parameters)."""
    try:
        from mlcicd_dagster.models.registry import client

        logged = dict(client(uri).get_run(cand["run_id"]).data.params)
    except Exception:  # noqa: BLE001 - the card still shows the declared parameters
        logged = {}
    return logged or {"trainer": spec.trainer, **dict(spec.trainer_params or {})}
