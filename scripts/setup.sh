#!/usr/bin/env bash
# Creates .venv and installs the locked Python dependencies plus the project (editable). Idempotent:
# a second run only re-syncs when requirements.lock or pyproject.toml changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV="$ROOT/.venv"
STAMP="$VENV/.qixin-installed"
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating virtualenv in .venv ($("$PY" --version))"
  "$PY" -m venv "$VENV"
fi
echo "setup: installing locked Python packages (first run downloads ~150 MB from PyPI)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv>=0.4"
"$VENV/bin/uv" pip sync -q --python "$VENV/bin/python" requirements.lock
"$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps -e .
echo "$want" > "$STAMP"
echo "setup: Python environment ready"
