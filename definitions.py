"""The Dagster code location: every pipeline under ``assets/`` (one ``defs.yaml`` each).

``dg dev``, ``dg check defs``, ``dagster asset materialize -m definitions`` and
``mlcicd`` load this file. Resources and executor come from the environments table
(``MLCICD_ENV``); ``location.pipelines`` holds each pipeline by name for the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path

# The embedded default home lives beside this file unless MLCICD_HOME says otherwise.
os.environ.setdefault("MLCICD_HOME", str(Path(__file__).parent / ".mlcicd"))

from mlcicd_dagster.location import load_location  # noqa: E402
from sensors import extra_sensors  # noqa: E402

location = load_location(Path(__file__).parent / "assets", sensors=extra_sensors())
defs = location.defs
pipelines = location.pipelines
