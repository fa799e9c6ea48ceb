#!/bin/bash
# Render pgbouncer.ini from the project's template and start pgbouncer in the foreground.
#
# The auth file and the pool size come from the migrate job, which writes them to a shared
# volume (PGBOUNCER_AUTH_DIR): userlist.txt holds the SCRAM verifiers exactly as PostgreSQL
# stores them in pg_authid (pgbouncer passes SCRAM through to the server only with the server's
# own salt), and pool_size the pgbouncer_pool_size setting.
set -euo pipefail
auth_dir=${PGBOUNCER_AUTH_DIR:-/var/lib/smsgw/pgbouncer-auth}
run_dir=/run/pgbouncer
for file in userlist.txt pool_size; do
  if [[ ! -r $auth_dir/$file ]]; then
    echo "entrypoint: $auth_dir/$file is missing or unreadable: run the migrate job first" >&2
    exit 2
  fi
done
cp "$auth_dir/userlist.txt" "$run_dir/userlist.txt"
chmod 0600 "$run_dir/userlist.txt"

export pg_host=${PG_HOST:-postgres} pg_port=${PG_PORT:-5432} listen_addr=0.0.0.0 \
  listen_port=6432 run_dir admin_user=sms_owner pool_size
pool_size=$(<"$auth_dir/pool_size")
# The template's logfile would grow inside the container: log to stderr only.
envsubst '${pg_host} ${pg_port} ${listen_addr} ${listen_port} ${run_dir} ${pool_size} ${admin_user}' \
  <"/etc/pgbouncer/pgbouncer.ini.template" \
  | sed -e 's|^logfile = .*|logfile =|' >"$run_dir/pgbouncer.ini"
exec /usr/sbin/pgbouncer "$run_dir/pgbouncer.ini"
