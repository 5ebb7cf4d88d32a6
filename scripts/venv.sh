#!/usr/bin/env bash
# Make .venv and install one of the locked requirement sets into it: edge, server or dev.
# Every file is checked against the hash in the lock (requirements/README.md).
# Re-running is cheap: it installs only when the requirement files changed.
set -euo pipefail
cd "$(dirname "$0")/.."
set_name="${1:-server}"
python="${PYTHON:-python3}"

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "error: Python 3.11 or newer is needed ($python is older)" >&2; exit 1; }
[ -x .venv/bin/python ] || "$python" -m venv .venv

stamp=".venv/.installed-$set_name"
digest=$(cat requirements/*.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r "requirements/$set_name.txt"
  echo "$digest" > "$stamp"
fi
