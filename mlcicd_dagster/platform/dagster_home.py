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
# A daemon-launched run whose worker dies is failed by run monitoring and run once more
# (not a run an asset or gate failed: a rejection is final). Runs of `mlcicd cycle` carry
# dagster/max_retries=0: the orphaned-runs sensor redoes those.
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  poll_interval_seconds: 30
run_retries:
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false
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
