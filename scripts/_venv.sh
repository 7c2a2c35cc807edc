# Sourced by scripts/run and scripts/test: make .venv (Python 3.11+) and install the project
# into it with the given extras, again only when pyproject.toml has changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="$1"
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "n8n-gate needs Python 3.11 or newer (found $("$python" --version 2>&1))." >&2
    exit 1
}
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    rm -f .venv/.installed-"$extras"-*
    touch "$stamp"
fi
