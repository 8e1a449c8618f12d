"""Dagster factories: the assets, checks, sensors and jobs of one dataset pipeline.

``build_pipeline(spec)`` turns a :class:`PipelineSpec` (everything dataset-specific:
label, files, slices, rollout) into Dagster definitions built from the library.
"""

from mlcicd_dagster.pipeline.factory import PipelineDefs, build_pipeline
from mlcicd_dagster.pipeline.spec import PipelineSpec, RolloutSpec

__all__ = ["PipelineDefs", "PipelineSpec", "RolloutSpec", "build_pipeline"]
