#!/usr/bin/env bash
# Make PostgreSQL server binaries (initdb, pg_ctl, postgres) available for tests/scaleout.
# Prints the directory holding them on stdout; exits 0 when found or installed, 1 when
# neither is possible (the tests then skip with that reason). Idempotent; never starts a
# server (the tests start their own on loopback and stop it).
#
#   PG_BIN=$(deploy/scripts/ensure-postgres.sh) && export MLCICD_PG_BIN=$PG_BIN
set -euo pipefail

find_bin() {
  local d
  for d in "${MLCICD_PG_BIN:-}" "$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/x)")" \
           $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

if dir=$(find_bin); then
  echo "$dir"
  exit 0
fi

if command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
  echo "ensure-postgres: installing PostgreSQL from Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >&2
  # Debian's package starts a cluster service on some systems; tests use their own.
  if dir=$(find_bin); then
    echo "$dir"
    exit 0
  fi
fi

echo "ensure-postgres: PostgreSQL binaries not found and apt-get install not possible" >&2
exit 1
