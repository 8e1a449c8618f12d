"""Compose one dataset's pipeline from its spec."""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from mlcicd_dagster.pipeline.bisect import build_bisect_job
from mlcicd_dagster.pipeline.data_assets import build_data_assets
from mlcicd_dagster.pipeline.deploy_assets import build_deploy_assets
from mlcicd_dagster.pipeline.model_assets import build_model_assets
from mlcicd_dagster.pipeline.monitoring_assets import build_monitoring_assets
from mlcicd_dagster.pipeline.revocation import build_revocation_job
from mlcicd_dagster.pipeline.spec import PipelineSpec


@dataclass
class PipelineDefs:
    spec: PipelineSpec
    partitions: dg.DynamicPartitionsDefinition
    monitoring_partitions: dg.TimeWindowPartitionsDefinition
    assets: list = field(default_factory=list)
    asset_checks: list = field(default_factory=list)
    jobs: list = field(default_factory=list)
    sensors: list = field(default_factory=list)

    def job_name(self, purpose: str) -> str:
        """``ingest`` (landed file -> deployment), ``retrain``, ``deploy``, ``monitor``."""
        return f"{self.spec.dataset}_{purpose}"


def build_pipeline(spec: PipelineSpec) -> PipelineDefs:
    from mlcicd_dagster.models.trust import declare_trusted_types

    declare_trusted_types(spec.model_name, spec.trusted_types)
    partitions = dg.DynamicPartitionsDefinition(name=spec.partitions_name)
    data_assets, data_checks = build_data_assets(spec, partitions)
    model_assets, model_checks = build_model_assets(spec)
    deploy_assets, deploy_checks = build_deploy_assets(spec)
    monitoring_partitions, monitoring_assets, monitoring_checks = build_monitoring_assets(spec)
    p = PipelineDefs(
        spec=spec,
        partitions=partitions,
        monitoring_partitions=monitoring_partitions,
        assets=[*data_assets, *model_assets, *deploy_assets, *monitoring_assets],
        asset_checks=[*data_checks, *model_checks, *deploy_checks, *monitoring_checks],
    )
    key = spec.key
    p.jobs = [
        dg.define_asset_job(
            p.job_name("ingest"),
            selection=dg.AssetSelection.assets(
                dg.AssetKey(key("raw_batch")), dg.AssetKey(key("validated_batch"))
            ),
            partitions_def=partitions,
            description="A landed file through its data gate into the lake (training is "
            "coalesced: see the training sensor).",
        ),
        dg.define_asset_job(
            p.job_name("retrain"),
            selection=dg.AssetSelection.assets(
                dg.AssetKey(key("training_set")),
                dg.AssetKey(key("model")),
                dg.AssetKey(key("deployment")),
            ),
            description="One training on every validated, unrevoked batch; gates; rollout.",
        ),
        dg.define_asset_job(
            p.job_name("deploy"),
            selection=dg.AssetSelection.assets(dg.AssetKey(key("deployment"))),
            description="Roll out the newest gated model version.",
        ),
        dg.define_asset_job(
            p.job_name("monitor"),
            selection=dg.AssetSelection.assets(dg.AssetKey(key("monitoring"))),
            partitions_def=monitoring_partitions,
            description="Live metrics and drift for one window of served traffic.",
        ),
        build_revocation_job(p),
        build_bisect_job(p),
    ]
    return p
