#!/bin/bash
# Start Redis with the project's redis.conf. The password (REDIS_PASSWORD or the file
# REDIS_PASSWORD_FILE names) goes into an included file, not onto the command line.
set -euo pipefail
password=${REDIS_PASSWORD:-}
if [[ -n ${REDIS_PASSWORD_FILE:-} ]]; then
  password=$(<"$REDIS_PASSWORD_FILE")
fi
if [[ -z $password ]]; then
  echo "entrypoint: set REDIS_PASSWORD or REDIS_PASSWORD_FILE" >&2
  exit 2
fi
umask 077
printf 'requirepass "%s"\n' "$password" >/run/redis/auth.conf
exec /usr/bin/redis-server /etc/redis/sms_gateway.conf --include /run/redis/auth.conf \
  --port 6379 --bind 0.0.0.0 --dir /data --daemonize no --logfile ""
