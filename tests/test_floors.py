"""The version floors pyproject.toml declares are the versions `make test-floors` tests."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            pins[name.strip().lower()] = Version(pinned.strip())
    return pins


def _floors() -> dict[str, Version]:
    text = (ROOT / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    return {m.group(1).lower(): Version(m.group(2))
            for m in re.finditer(r'"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)', deps)}


def test_every_pinned_floor_is_the_floor_pyproject_declares():
    pins, floors = _pins(), _floors()
    assert set(pins) == {"sentence-transformers", "transformers", "scikit-learn", "numpy"}
    for name, pinned in pins.items():
        assert name in floors, f"{name} is pinned in .ci/floors.txt but has no floor"
        assert floors[name] == pinned, f"{name}: pyproject says >={floors[name]}, CI tests {pinned}"


def test_installed_versions_are_at_or_above_the_floors():
    for name, floor in _pins().items():
        assert Version(version(name)) >= floor, name
