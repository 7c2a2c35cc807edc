"""The import graph keeps its arrows one way (pyproject.toml's import-linter contracts): a lower
layer importing an upper one, the n8n client importing the domain, or FastAPI below the edge
fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    checked = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    assert "BROKEN" not in checked.stdout
    assert checked.stdout.count("KEPT") == 3
