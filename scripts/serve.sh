#!/usr/bin/env bash
# Run the server on the embedded default: a SQLite file under var/, local-memory cache.
# Set DATABASE_URL / REDIS_URL to use PostgreSQL and Redis instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh server
mkdir -p var
.venv/bin/python manage.py migrate --no-input -v 0
echo "P1 Platform on http://127.0.0.1:${PORT:-8000}/  (admin: /admin/, health: /readyz)"
echo "Register a meter:  .venv/bin/python manage.py create_device home-p1"
echo "Issue its token:   .venv/bin/python manage.py issue_token home-p1 --scopes ingest,read"
exec .venv/bin/gunicorn p1platform.wsgi:application \
  --bind "127.0.0.1:${PORT:-8000}" --workers 2 --access-logfile -
