#!/bin/sh
# Server container start: bring the schema up to date, provision DEVICE_TOKENS, collect
# static files into
# STATIC_ROOT (a volume Caddy serves), then replace this shell with the command
# (gunicorn by default) so it gets the signals directly.
set -eu
cd /app

# The database may still be starting (the compose health check usually covers this; a
# restart of the database alone does not): retry for about a minute.
attempt=1
until python manage.py migrate --no-input; do
  if [ "$attempt" -ge 20 ]; then
    echo "entrypoint: migrate failed $attempt times, giving up" >&2
    exit 1
  fi
  echo "entrypoint: migrate failed (attempt $attempt), retrying in 3 s" >&2
  attempt=$((attempt + 1))
  sleep 3
done

# DEVICE_TOKENS (device_id:token,...): its devices and tokens exist, and the tokens it
# made that left it are revoked (restored when listed again). A bad entry stops the start
# with one line.
python manage.py provision_device_tokens

python manage.py collectstatic --no-input --verbosity 0

exec "$@"
