#!/usr/bin/env bash
# Test suite: installs the test extra (pytest, bpy 4.5 LTS) into .venv and runs pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" test
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
