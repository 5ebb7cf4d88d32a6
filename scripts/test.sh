#!/usr/bin/env bash
# The test suite, twice: on PostgreSQL + Redis (real connections), then on the embedded
# default (SQLite file, local-memory cache). Extra arguments go to pytest.
#
#   TEST_DATABASE_URL   PostgreSQL for the first pass (default: local server, trust auth)
#   TEST_REDIS_URL      Redis for the first pass; the suite clears this database
#   TIMESCALE_DATABASE_URL  optional: a PostgreSQL with timescaledb preloaded
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/venv.sh dev
PYTEST=(.venv/bin/pytest -q -rs)

pg_url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/p1platform}"
redis_url="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"

echo "== tests on PostgreSQL ($pg_url) and Redis ($redis_url)"
DATABASE_URL="$pg_url" REDIS_URL="$redis_url" "${PYTEST[@]}" "$@"

echo "== tests on the embedded default (SQLite, local-memory cache)"
env -u DATABASE_URL -u REDIS_URL "${PYTEST[@]}" "$@"
