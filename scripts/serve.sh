#!/usr/bin/env bash
# Run the server on the embedded default: a SQLite file under var/, local-memory cache.
# Set DATABASE_URL / REDIS_URL to use PostgreSQL and Redis instead; PORT (default 8000)
# for another port. gunicorn runs with the deployment's configuration
# (deploy/gunicorn.conf.py), two workers, on loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh server
mkdir -p var
PORT="${PORT:-8000}"
.venv/bin/python -m p1platform.startup port "$PORT"
.venv/bin/python manage.py migrate --no-input -v 0
echo "P1 Platform on http://127.0.0.1:${PORT}/  (admin: /admin/, health: /readyz)"
echo "Register a meter:  .venv/bin/python manage.py create_device home-p1"
echo "Issue its token:   .venv/bin/python manage.py issue_token home-p1 --scopes ingest,read"
export GUNICORN_BIND="127.0.0.1:${PORT}" WEB_CONCURRENCY="${WEB_CONCURRENCY:-2}"
exec .venv/bin/gunicorn -c deploy/gunicorn.conf.py p1platform.wsgi:application
