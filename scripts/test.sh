#!/usr/bin/env bash
# The test suite, twice: on PostgreSQL + Redis (real connections), and on the embedded
# default (SQLite file, local-memory cache). Extra arguments go to pytest.
#
# The two passes share nothing (own database, own cache, own DATA_DIR, free ports), and
# most of a pass is waiting on server processes, so they run side by side on the two
# cores and each writes its own log; both logs are printed, and either failing fails.
# Tests whose subject is not the storage plan run in one of the passes only (TEST_PASS,
# ONE_PASS_ONLY in tests/conftest.py).
# TEST_PASSES=sequential runs them one after the other with live output.
#
#   TEST_DATABASE_URL   PostgreSQL for the first pass (default: local server, trust auth)
#   TEST_REDIS_URL      Redis for the first pass; the suite clears this database
#   TIMESCALE_DATABASE_URL  optional: a PostgreSQL with timescaledb preloaded; the
#                           migration tests use it, and a third pass runs the storage
#                           and retention tests (tests/storage, tests/test_retention.py)
#                           on it after the two others
#   TESTS_REQUIRE_TOOLS=1   a missing Debian tool (chromium, caddy, ...) fails its tests
#                           instead of skipping them (.ci/run sets it; tests/tools.py)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/venv.sh dev
PYTEST=(.venv/bin/pytest -q -rs -p no:cacheprovider)

pg_url="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/p1platform}"
redis_url="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
mkdir -p var/test-pg var/test-sqlite

postgres_pass() {
  TEST_PASS=postgres DATA_DIR="$PWD/var/test-pg" DATABASE_URL="$pg_url" REDIS_URL="$redis_url" \
    "${PYTEST[@]}" "$@"
}
sqlite_pass() {
  env -u DATABASE_URL -u REDIS_URL TEST_PASS=sqlite DATA_DIR="$PWD/var/test-sqlite" \
    "${PYTEST[@]}" "$@"
}
timescale_pass() {
  [ -n "${TIMESCALE_DATABASE_URL:-}" ] || return 0
  echo "== storage tests on TimescaleDB ($TIMESCALE_DATABASE_URL)"
  mkdir -p var/test-ts
  DATA_DIR="$PWD/var/test-ts" DATABASE_URL="$TIMESCALE_DATABASE_URL" TIMESCALEDB=require \
    REDIS_URL="$redis_url" "${PYTEST[@]}" tests/storage tests/test_retention.py
}

if [ "${TEST_PASSES:-parallel}" = sequential ]; then
  echo "== tests on PostgreSQL ($pg_url) and Redis ($redis_url)"
  postgres_pass "$@"
  echo "== tests on the embedded default (SQLite, local-memory cache)"
  sqlite_pass "$@"
  timescale_pass
  exit 0
fi

echo "== tests on PostgreSQL ($pg_url) + Redis ($redis_url), and on SQLite + local memory, side by side"
postgres_pass "$@" > var/test-pg/pytest.log 2>&1 &
pg_pid=$!
sqlite_pass "$@" > var/test-sqlite/pytest.log 2>&1 &
sqlite_pid=$!
pg_status=0; wait "$pg_pid" || pg_status=$?
sqlite_status=0; wait "$sqlite_pid" || sqlite_status=$?

echo "== PostgreSQL + Redis pass (exit $pg_status)"
cat var/test-pg/pytest.log
echo "== SQLite + local-memory pass (exit $sqlite_status)"
cat var/test-sqlite/pytest.log
status=0
{ [ "$pg_status" -eq 0 ] && [ "$sqlite_status" -eq 0 ]; } || status=1
timescale_pass || status=1
exit "$status"
