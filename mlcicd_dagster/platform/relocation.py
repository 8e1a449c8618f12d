"""A copied or restored home is its own system: its MLflow store points at its own files.

MLflow's SQLite store records *absolute* artifact locations (experiments, runs,
logged models, model versions). A home copied elsewhere (a backup restored to a
new path, a copy for an experiment) would therefore keep logging and registering
models into the original home's artifact folder. :func:`claim_embedded_store`
rewrites, once and in one transaction, every location under another home's
``mlflow/artifacts`` to this home's; the copy's registered models then load from
the copy's own files. It runs wherever the pipeline opens the store
(``MlcicdResource.setup_mlflow``) and wherever the CLI opens the instance.

Only the embedded store is touched: a shared ``MLFLOW_TRACKING_URI`` server belongs
to whoever runs it, and two homes that share one are one system by choice.
"""

from __future__ import annotations

import sqlite3

from mlcicd_dagster.platform.home import Home

# (table, column) pairs of MLflow's SQLite schema that hold artifact URIs.
URI_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)
_SUFFIX = "/mlflow/artifacts"


def _embedded(home: Home) -> bool:
    return home.tracking_uri == f"sqlite:///{home.mlflow_db}"


def claim_embedded_store(home: Home) -> list[str]:
    """Point the embedded store's artifact URIs at this home; returns the prefixes moved.

    A no-op (one small query) when the store is already this home's, absent, or not
    the embedded one.
    """
    db = home.mlflow_db
    if not _embedded(home) or not db.exists():
        return []
    own = home.mlflow_artifacts.resolve().as_uri()
    con = sqlite3.connect(str(db), timeout=30)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "experiments" not in tables:
            return []
        foreign = sorted(
            {
                loc[: loc.index(_SUFFIX) + len(_SUFFIX)]
                for (loc,) in con.execute("SELECT artifact_location FROM experiments")
                if isinstance(loc, str) and _SUFFIX in loc and not loc.startswith(own)
            }
        )
        if not foreign:
            return []
        with con:  # one transaction: all locations move, or none
            for old in foreign:
                for table, column in URI_COLUMNS:
                    if table not in tables or not _has_column(con, table, column):
                        continue
                    con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                        f"WHERE substr({column}, 1, ?) = ?",
                        (own, len(old) + 1, len(old), old),
                    )
        return foreign
    finally:
        con.close()


def _has_column(con: sqlite3.Connection, table: str, column: str) -> bool:
    return any(r[1] == column for r in con.execute(f"PRAGMA table_info({table})"))
