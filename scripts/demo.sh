#!/usr/bin/env bash
# The whole platform on this machine, on the embedded default (a SQLite file under
# DATA_DIR, default var/; local-memory cache): an admin, a device with 13 months of
# history, the simulated meter, the edge and the server. Ctrl-C stops it; running it
# again reuses what the first run made. Options go to `manage.py demo` (--port, --seed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh server
# The demo is the embedded default by definition, whatever this shell points at.
unset DATABASE_URL REDIS_URL DJANGO_ENV
exec .venv/bin/python manage.py demo "$@"
