"""A real PostgreSQL server on loopback for the scale-out tests (one per session).

Binaries come from deploy/scripts/ensure-postgres.sh (PATH, /usr/lib/postgresql/*/bin,
or `apt-get install postgresql`). PostgreSQL refuses to run as root, so under root the
cluster is initialised and run as the `postgres` system user (or `nobody`). The server
listens on 127.0.0.1 on a free port with trust auth for loopback only, fsync off (a
test cluster: speed over durability), and is stopped at the end of the session.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENSURE = ROOT / "deploy" / "scripts" / "ensure-postgres.sh"
SUPERUSER = "mlcicd"


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str

    def uri(self, database: str) -> str:
        from mlcicd_dagster.platform.k8s_storage import postgres_uri

        return postgres_uri(self.host, self.port, self.user, database)

    def env(self, database: str) -> dict[str, str]:
        """The DAGSTER_PG_* variables the k8s secret `mlcicd-postgres` carries."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": database,
        }

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()

    def query(self, database: str, sql: str) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        finally:
            conn.close()


def _pg_bin() -> Path | None:
    if not ENSURE.exists():
        return None
    out = subprocess.run(["bash", str(ENSURE)], capture_output=True, text=True, timeout=600)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return Path(out.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_as() -> list[str]:
    """Prefix that drops root for PostgreSQL (it refuses to run as root)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", name, "--"]
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [setpriv, f"--reuid={name}", f"--regid={name}", "--init-groups"]
    pytest.skip("running as root and no unprivileged user/tool to start PostgreSQL with")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip(
            "PostgreSQL is not available: no initdb/pg_ctl/postgres binaries and "
            "deploy/scripts/ensure-postgres.sh could not install them"
        )
    prefix = _run_as()
    # Not under pytest's tmp dir: its parents are 0700 root, which the postgres user
    # cannot traverse. mkdtemp gives a private dir we hand to that user.
    root = Path(tempfile.mkdtemp(prefix="mlcicd-pg-"))
    data = root / "data"
    if prefix:
        user = prefix[2] if prefix[0].endswith("runuser") else prefix[1].split("=", 1)[1]
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(
        [*prefix, str(pg_bin / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
         "--encoding=UTF8", "--no-sync"],
        check=True, capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    opts = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    started = subprocess.run(
        [*prefix, str(pg_bin / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
         str(root / "server.log"), "-w", "-t", "60", "start"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    if started.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{log}")
    try:
        yield Postgres("127.0.0.1", port, SUPERUSER)
    finally:
        subprocess.run(
            [*prefix, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True, env=env, timeout=120,
        )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
