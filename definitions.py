"""The Dagster code location: composes the library, the shipped pipelines and sensors.

``dagster dev`` / ``dagster asset materialize -m definitions`` load this file.
Resources and executor come from the environments table (``MLCICD_ENV``).
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

# The embedded default home lives beside this file unless MLCICD_HOME says otherwise.
os.environ.setdefault("MLCICD_HOME", str(Path(__file__).parent / ".mlcicd"))

from assets.credit_default import pipeline as credit_default  # noqa: E402
from mlcicd_dagster.platform.environments import current_environment  # noqa: E402
from sensors import all_sensors  # noqa: E402

env = current_environment()

defs = dg.Definitions(
    assets=[*credit_default.assets],
    asset_checks=[*credit_default.asset_checks],
    jobs=[*credit_default.jobs],
    sensors=all_sensors(),
    resources=env.resources(),
    executor=env.executor(),
)
