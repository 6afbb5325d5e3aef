#!/usr/bin/env bash
# Main job: render a synthetic clip with ground truth, reconstruct it with the
# streaming engine, and print its accuracy against the ground truth.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/laser-blender" demo "$@"
