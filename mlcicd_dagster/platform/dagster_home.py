"""The embedded Dagster instance: SQLite storage under ``MLCICD_HOME/dagster``.

``dagster.yaml`` is written once; sensors and the automation daemon are enabled so
that ``make ui`` picks landed files up without a click. Run retention is left at
Dagster's defaults.
"""

from __future__ import annotations

from pathlib import Path

from mlcicd_dagster.platform.atomic import atomic_write_bytes
from mlcicd_dagster.platform.home import Home

DAGSTER_YAML = """\
# Written by mlcicd: the embedded default instance (SQLite under this folder).
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    tag_concurrency_limits:
      - key: "mlcicd/deployment"
        limit: 1
# A run whose worker dies (a cycle's, or one the daemon launched) is failed and redone
# once by the orphaned-runs sensor, whoever noticed first (the sensor, the code server
# that launched it, or run monitoring for a run that never started). Dagster's own run
# retries stay off so that nothing is re-executed twice; a rejection is final anyway.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
run_retries:
  enabled: false
auto_materialize:
  enabled: true
  use_sensors: true
"""


def ensure_dagster_home(home: Home) -> Path:
    path = home.dagster_home
    path.mkdir(parents=True, exist_ok=True)
    cfg = path / "dagster.yaml"
    if not cfg.exists():
        atomic_write_bytes(cfg, DAGSTER_YAML.encode())
    from mlcicd_dagster.platform.relocation import claim_embedded_store

    claim_embedded_store(home)  # a copied home registers models into its own folder
    return path
