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
STAMP="$VENV/.laser-blender-installed"   # "<pyproject hash> <extras installed>"
HASH="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ -f "$STAMP" ]; then read -r HAVE_HASH HAVE_EXTRAS < "$STAMP" || true; fi
# Up to date when pyproject.toml is unchanged and the wanted extras are already there.
if [ "${HAVE_HASH:-}" != "$HASH" ] || { [ -n "$EXTRAS" ] && [ "${HAVE_EXTRAS:-}" != "$EXTRAS" ]; }; then
    EXTRAS="${EXTRAS:-${HAVE_EXTRAS:-}}"   # keep extras an earlier install added
    echo "Installing laser-blender into $VENV${EXTRAS:+ with extras [$EXTRAS]} (log: $VENV/install.log) ..." >&2
    SPEC="$ROOT"; [ -n "$EXTRAS" ] && SPEC="$ROOT[$EXTRAS]"
    if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e "$SPEC"; } \
            > "$VENV/install.log" 2>&1; then
        tail -n 40 "$VENV/install.log" >&2
        echo "Installing laser-blender failed; the full log is $VENV/install.log" >&2
        exit 1
    fi
    echo "$HASH $EXTRAS" > "$STAMP"
fi
