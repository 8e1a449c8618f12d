"""Sensors of the shipped pipelines: new data, monitoring/retraining, run failures.

The factories live in ``mlcicd_dagster.pipeline.sensors``; each shipped pipeline's
sensors are built with its spec and collected here.
"""

from __future__ import annotations

import dagster as dg

from assets.credit_default import pipeline as credit_default
from mlcicd_dagster.pipeline.sensors import build_sensors
from mlcicd_dagster.platform.environments import current_environment


def all_sensors() -> list[dg.SensorDefinition]:
    env = current_environment()
    return build_sensors(credit_default, running=env.sensors_running)
