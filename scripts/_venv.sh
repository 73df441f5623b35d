# Shared by scripts/test, scripts/demo and scripts/bench: make .venv and install the
# project with the given extras, reinstalling only when pyproject.toml changed.
# Usage: . scripts/_venv.sh EXTRAS
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
_extras="$1"
_stamp=".venv/.enginescope-installed-${_extras}"
_want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[${_extras}]"
    echo "$_want" > "$_stamp"
fi
