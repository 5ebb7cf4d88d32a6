#!/usr/bin/env bash
# Regenerate requirements/{edge,server,dev}.txt from the loose lists requirements/*.in,
# every file pinned by version and sha256 hash, for every platform the edge and the
# server run on (amd64 and the Raspberry Pi's arm64), Python 3.11 and newer.
#
#   make lock                       keep current pins where the .in files allow them
#   UPGRADE=1 make lock             move every pin to the newest allowed release
#
# Order matters: server.in is constrained by edge.txt and dev.in by server.txt, so a
# package has one version in all three files.
set -euo pipefail
cd "$(dirname "$0")/../requirements"
uv=../.venv/bin/uv
[ -x "$uv" ] || { echo "error: $uv is missing: run 'bash scripts/venv.sh dev' first" >&2; exit 1; }
upgrade=()
[ "${UPGRADE:-0}" = 1 ] && upgrade=(--upgrade)
for set_name in edge server dev; do
  "$uv" pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command "make lock" "${upgrade[@]}" "$set_name.in" -o "$set_name.txt"
done
