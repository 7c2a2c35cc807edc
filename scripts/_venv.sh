# Sourced by the scripts: make the virtualenv (Python 3.11+) and install the project into it
# with the given extras from their lock file (requirements/), again only when pyproject.toml or
# the lock has changed. `$venv` names it:
# N8N_GATE_VENV, else .venv; PYTHON picks the interpreter that creates it (else python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="$1"
venv="${N8N_GATE_VENV:-.venv}"
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "n8n-gate needs Python 3.11 or newer (found $("$python" --version 2>&1))." >&2
    exit 1
}
version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
elif [ -n "${PYTHON:-}" ] && [ "$(version "$venv/bin/python")" != "$(version "$python")" ]; then
    echo "$venv has Python $(version "$venv/bin/python"), not $(version "$python") as PYTHON asks:" \
        "remove it, or set N8N_GATE_VENV to another directory." >&2
    exit 1
fi
# The locked releases first (hash-checked), then the project itself on top of them.
lock="requirements/$extras.txt"
stamp="$venv/.installed-$extras-$(cat pyproject.toml "$lock" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet --require-hashes -r "$lock"
    "$venv/bin/python" -m pip install --quiet --no-deps -e .
    rm -f "$venv"/.installed-"$extras"-*
    touch "$stamp"
fi
