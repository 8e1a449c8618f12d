"""Scale-out storage: Dagster on PostgreSQL, MLflow on PostgreSQL + S3, logs on object storage.

The embedded default keeps everything under ``MLCICD_HOME`` (SQLite, local files).
At cluster scale three things move out, each through configuration only:

* **Dagster storage** (runs, event log, schedules) -> PostgreSQL via dagster-postgres.
  :func:`dagster_instance_config` writes the ``dagster.yaml`` with credentials read
  from ``DAGSTER_PG_*`` environment variables at run time (``{"env": ...}``), so the
  file holds no secret. The Helm chart writes the equivalent for the cluster.
* **MLflow** -> a tracking server whose backend store is ``postgresql://.../mlflow``
  and whose artifacts live in S3 (``mlflow server --artifacts-destination s3://...
  --serve-artifacts``). Clients only set ``MLFLOW_TRACKING_URI`` (Home honours it).
* **Prediction / feedback logs and the lake** -> object storage, addressed by
  fsspec URL. :class:`ObjectStoreLayout` is the proposed URL scheme, mirroring
  ``Home``'s layout under one base URL (``s3://bucket/prefix``)::

      <base>/predictions/<model>/part-<epoch_ms>-<uuid8>.parquet
      <base>/feedback/<model>/part-<epoch_ms>-<uuid8>.parquet
      <base>/lake/<dataset>/validated/<partition>.parquet
      <base>/lake/<dataset>/training_set/{train,holdout}.parquet

  How an ``s3://`` home would plug in (proposal, Home is not changed here): Home's
  path methods return ``pathlib.Path``; a ``Home.from_url`` returning
  ``upath.UPath`` objects (universal-pathlib, already installed with Dagster)
  keeps the same method names and the ``/`` operator, so readers that glob
  ``part-*.parquet`` and DuckDB (``s3://`` via httpfs) work unchanged. The one
  semantic difference is atomicity: an S3 PUT is already all-or-nothing, so
  ``write_parquet_part`` writes the final key directly there, and keeps the
  temporary-name-then-rename rule only on filesystems that have a rename.
  Until then the cluster puts ``MLCICD_HOME`` on a shared ReadWriteMany volume
  (EFS, deploy/k8s/base/storage.yaml), which needs no code change at all.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

# SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; the driver we ship is psycopg2,
# so both Dagster's storage and MLflow's backend name it explicitly.
PG_SCHEME = "postgresql+psycopg2"

PG_ENV = {
    "hostname": "DAGSTER_PG_HOST",
    "port": "DAGSTER_PG_PORT",
    "username": "DAGSTER_PG_USER",
    "password": "DAGSTER_PG_PASSWORD",
    "db_name": "DAGSTER_PG_DB",
}


def dagster_instance_config(
    *,
    max_concurrent_runs: int | None = 10,
    tag_concurrency_limits: list[dict[str, Any]] | None = None,
    run_retries: int = 2,
    scheme: str = PG_SCHEME,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``dagster.yaml`` (as a dict) with all storage on PostgreSQL.

    Credentials are environment references (``DAGSTER_PG_*``), resolved when the
    instance loads. ``max_concurrent_runs`` set -> the QueuedRunCoordinator with
    that limit (the daemon dequeues); None -> runs start at once (tests, CLI).
    """
    postgres_db: dict[str, Any] = {
        key: {"env": var} for key, var in PG_ENV.items() if key != "port"
    }
    postgres_db["port"] = {"env": PG_ENV["port"]}
    postgres_db["scheme"] = scheme
    config: dict[str, Any] = {
        "storage": {"postgres": {"postgres_db": postgres_db}},
        "run_retries": {"enabled": run_retries > 0, "max_retries": run_retries},
        "telemetry": {"enabled": False},
    }
    if max_concurrent_runs is not None:
        config["run_coordinator"] = {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": max_concurrent_runs,
                "tag_concurrency_limits": tag_concurrency_limits or [],
            },
        }
    if extra:
        config.update(extra)
    return config


def write_dagster_yaml(dagster_home: Path, config: Mapping[str, Any]) -> Path:
    """Write ``dagster_home/dagster.yaml`` atomically; returns its path."""
    import yaml

    from mlcicd_dagster.platform.atomic import atomic_write_bytes

    dagster_home = Path(dagster_home)
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / "dagster.yaml"
    atomic_write_bytes(path, yaml.safe_dump(dict(config), sort_keys=False).encode())
    return path


def postgres_uri(
    host: str,
    port: int,
    user: str,
    database: str,
    password: str | None = None,
    scheme: str = PG_SCHEME,
) -> str:
    """``postgresql+psycopg2://user[:password]@host:port/database`` with the parts
    URL-quoted (a password with ``@`` or ``/`` must not break it). MLflow's backend store."""
    auth = quote(user, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    return f"{scheme}://{auth}@{host}:{int(port)}/{quote(database, safe='')}"


def mlflow_backend_uri_from_env(env: Mapping[str, str] | None = None, database: str = "mlflow"):
    """The MLflow backend store on the same server as Dagster's (``DAGSTER_PG_*``)."""
    env = os.environ if env is None else env
    missing = [v for k, v in PG_ENV.items() if k not in ("port", "db_name") and not env.get(v)]
    if missing:
        raise ValueError(f"cannot build the MLflow backend URI: {', '.join(missing)} not set")
    return postgres_uri(
        env["DAGSTER_PG_HOST"],
        int(env.get("DAGSTER_PG_PORT") or 5432),
        env["DAGSTER_PG_USER"],
        database,
        env.get("DAGSTER_PG_PASSWORD"),
    )


# -- object storage (fsspec) ------------------------------------------------------------
@dataclass(frozen=True)
class ObjectStoreLayout:
    """``Home``'s log and lake layout under an fsspec base URL (``s3://b/p``, ``file:///x``,
    ``memory://x``). Set by ``MLCICD_OBJECT_STORE_URL`` on the cluster."""

    base_url: str

    def __post_init__(self) -> None:
        if "://" not in self.base_url:
            raise ValueError(
                f"object store URL {self.base_url!r} needs a scheme (s3://, gs://, file://, ...)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ObjectStoreLayout:
        env = os.environ if env is None else env
        url = env.get("MLCICD_OBJECT_STORE_URL")
        if not url:
            raise ValueError("MLCICD_OBJECT_STORE_URL is not set (e.g. s3://bucket/mlcicd)")
        return cls(url)

    def _join(self, *parts: str) -> str:
        return "/".join([self.base_url.rstrip("/"), *parts])

    def predictions(self, model_name: str) -> str:
        return self._join("predictions", model_name)

    def feedback(self, model_name: str) -> str:
        return self._join("feedback", model_name)

    def lake(self, dataset: str) -> str:
        return self._join("lake", dataset)


def _fs(url: str):
    import fsspec

    fs, _, paths = fsspec.get_fs_token_paths(url)
    return fs, paths[0]


def write_parquet_part(dir_url: str, table: Any) -> str:
    """Write a pyarrow Table as ``part-<epoch_ms>-<uuid8>.parquet`` under ``dir_url``.

    Readers glob ``part-*.parquet`` only, so a half-written part is never read:
    where the filesystem can rename, the part is written as ``.tmp-...`` and renamed;
    on object stores (no rename, but atomic PUT) the final key is written directly.
    """
    import pyarrow.parquet as pq

    fs, root = _fs(dir_url)
    name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
    final = f"{root.rstrip('/')}/{name}"
    fs.makedirs(root, exist_ok=True)
    atomic_put = not _has_rename(fs)
    target = final if atomic_put else f"{root.rstrip('/')}/.tmp-{name}"
    with fs.open(target, "wb") as fh:
        pq.write_table(table, fh)
    if not atomic_put:
        fs.mv(target, final)
    return fs.unstrip_protocol(final)


def _has_rename(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return any(p in ("file", "local") for p in protocols)


def list_parts(dir_url: str) -> list[str]:
    """Full URLs of the complete parts under ``dir_url`` (sorted by name = by time)."""
    fs, root = _fs(dir_url)
    if not fs.exists(root):
        return []
    return sorted(fs.unstrip_protocol(p) for p in fs.glob(f"{root.rstrip('/')}/part-*.parquet"))


def read_parts(dir_url: str) -> Any:
    """All complete parts as one pyarrow Table (empty table when there are none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for url in list_parts(dir_url):
        fs, path = _fs(url)
        with fs.open(path, "rb") as fh:
            tables.append(pq.read_table(fh))
    return pa.concat_tables(tables) if tables else pa.table({})
