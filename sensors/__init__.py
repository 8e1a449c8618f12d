"""Sensors that belong to no single pipeline (none yet).

Each pipeline's own sensors (landing zone, monitoring, retraining policy, run-failure
alerts) come with its ``mlcicd_dagster.MLPipeline`` instance.
"""

from __future__ import annotations

import dagster as dg


def extra_sensors() -> list[dg.SensorDefinition]:
    return []
