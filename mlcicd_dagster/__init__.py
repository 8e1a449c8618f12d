"""mlcicd-dagster: CI/CD for machine learning, as a Dagster plugin.

The public API, imported on first use (``import mlcicd_dagster`` stays light):

- :class:`MLPipeline`: the Dagster component of one pipeline (``defs.yaml``);
- :func:`load_location`: a code location from a folder of pipelines;
- :class:`PipelineSpec`, :class:`RolloutSpec`, :func:`build_pipeline`: the resolved
  config and the factory the component uses, for building definitions in Python;
- :class:`Home`: where state lives (``MLCICD_HOME``);
- :class:`MlcicdError`, :class:`ConfigError`: the library's errors.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "MLPipeline": "mlcicd_dagster.component",
    "load_location": "mlcicd_dagster.location",
    "Location": "mlcicd_dagster.location",
    "PipelineSpec": "mlcicd_dagster.pipeline.spec",
    "RolloutSpec": "mlcicd_dagster.pipeline.spec",
    "PipelineDefs": "mlcicd_dagster.pipeline.factory",
    "build_pipeline": "mlcicd_dagster.pipeline.factory",
    "Home": "mlcicd_dagster.platform.home",
    "MlcicdError": "mlcicd_dagster.errors",
    "ConfigError": "mlcicd_dagster.errors",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'mlcicd_dagster' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
