#!/bin/bash
# Start PostgreSQL; on first start make the cluster, with the superuser's password from
# POSTGRES_PASSWORD (or the file POSTGRES_PASSWORD_FILE names). Roles, database and schema are
# the migrate job's work (deploy/bootstrap.py), not this script's.
set -euo pipefail
bin=/usr/lib/postgresql/15/bin

if [[ ! -s $PGDATA/PG_VERSION ]]; then
  password=${POSTGRES_PASSWORD:-}
  if [[ -n ${POSTGRES_PASSWORD_FILE:-} ]]; then
    password=$(<"$POSTGRES_PASSWORD_FILE")
  fi
  if [[ -z $password ]]; then
    echo "entrypoint: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE for the first start" >&2
    exit 2
  fi
  pwfile=$(mktemp)
  trap 'rm -f "$pwfile"' EXIT
  printf '%s\n' "$password" >"$pwfile"
  "$bin/initdb" --pgdata="$PGDATA" --username=postgres --pwfile="$pwfile" \
    --encoding=UTF8 --locale=C.UTF-8 --auth-local=peer --auth-host=scram-sha-256
  rm -f "$pwfile"
  {
    echo "# The compose network: every client over TCP authenticates with SCRAM."
    echo "host all all all scram-sha-256"
  } >>"$PGDATA/pg_hba.conf"
  echo "include = '/etc/postgresql/sms_gateway.conf'" >>"$PGDATA/postgresql.conf"
fi

exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*'
