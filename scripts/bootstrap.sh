#!/usr/bin/env bash
# Create or update the project virtual environment at .venv/ in the repo root and
# install laser-blender (editable) with the given extras. Re-runs are cheap: the
# install is skipped while pyproject.toml is unchanged since the last success.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
    echo "laser-blender needs Python 3.11 (Blender 4.5's Python); found $("$PY" --version 2>&1)." >&2
    echo "Set PYTHON=/path/to/python3.11 and re-run." >&2
    exit 1
}
VENV="$ROOT/.venv"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
STAMP="$VENV/.laser-blender-installed"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-[$EXTRAS]"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    echo "Installing laser-blender into $VENV ${EXTRAS:+with extras [$EXTRAS]} ..." >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    SPEC="$ROOT"; [ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
    "$VENV/bin/python" -m pip install --quiet -e "$SPEC"
    echo "$WANT" > "$STAMP"
fi
