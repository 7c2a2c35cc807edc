"""Writes the settings' documentation from `app.config.Settings`, their one source: the table
in docs/configuration.md (between its markers) and .env.example.

    .venv/bin/python scripts/settings_docs.py          # rewrite both
    .venv/bin/python scripts/settings_docs.py --check  # exit 1 if either is stale (CI's test)
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402

TABLE = ROOT / "docs" / "configuration.md"
ENV_EXAMPLE = ROOT / ".env.example"
START, END = "<!-- settings: start -->", "<!-- settings: end -->"
ENV_HEADER = """\
# n8n-gate settings, written by scripts/settings_docs.py from app/config.py: edit those.
# Copy to .env (read from the working directory); real environment variables win over .env.
# Every value below is the default.
"""
COMPOSE = """\
# docker-compose.yml only (it refuses to start while any is empty): the Postgres superuser's
# password, the password of the gateway's own login role "gate" (no superuser), and n8n's key
# for the credentials it stores.
POSTGRES_PASSWORD=
GATE_DB_PASSWORD=
N8N_ENCRYPTION_KEY=
"""


def env_name(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    return alias if isinstance(alias, str) else f"GATE_{name.upper()}"


def default_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).rstrip("/") if "://" in str(value) else str(value)


def table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = default_text(field.default)
        shown = f"`{default}`" if default else "unset" if field.default is None else "empty"
        rows.append(f"| `{env_name(name)}` | {shown} | {field.description} |")
    return "\n".join(rows)


def env_example() -> str:
    entries = [ENV_HEADER]
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        comment = textwrap.wrap(field.description, 96, break_on_hyphens=False)
        line = f"{env_name(name)}={default_text(field.default)}"
        if field.default is None:  # unset by default: an example, commented out
            line = f"# {env_name(name)}={(field.examples or [''])[0]}   # example"
        entries.append("\n".join([*(f"# {part}" for part in comment), line]) + "\n")
    return "\n".join([*entries, COMPOSE])


def configuration_page(current: str) -> str:
    before, _, rest = current.partition(START)
    _, _, after = rest.partition(END)
    return f"{before}{START}\n{table()}\n{END}{after}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    wanted = {TABLE: configuration_page(TABLE.read_text()), ENV_EXAMPLE: env_example()}
    stale = [path for path, text in wanted.items() if path.read_text() != text]
    if args.check:
        for path in stale:
            print(
                f"{path.relative_to(ROOT)} is stale: run scripts/settings_docs.py", file=sys.stderr
            )
        sys.exit(1 if stale else 0)
    for path in stale:
        path.write_text(wanted[path])


if __name__ == "__main__":
    main()
