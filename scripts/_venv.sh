# Shared by scripts/test, scripts/demo and scripts/bench: make .venv and install the
# project with the given extras, reinstalling only when pyproject.toml changed; say what
# it is doing while it does.
# Usage: . scripts/_venv.sh EXTRAS
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv .venv
fi
_extras="$1"
_stamp=".venv/.enginescope-installed-${_extras}"
_want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ]; then
    echo "== installing enginescope[${_extras}] into .venv (a minute on a first run)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    # one line per package pip fetches, so a first run is not 30 silent seconds
    .venv/bin/python -m pip install --progress-bar off -e ".[${_extras}]" \
        | awk '/^Collecting /{ print "   " $2; fflush() } /^Successfully installed/{ print "   done" }'
    echo "$_want" > "$_stamp"
fi
