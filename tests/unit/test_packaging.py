"""The distribution ships every package of the source tree, subpackages included."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_of_the_source_tree_is_in_the_distribution() -> None:
    """``pip install driftline`` must bring ``detectors.signals`` too: a package list naming
    only the top-level folders left it out of the wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = config["tool"]["setuptools"]["packages"]["find"]
    shipped = set(find_packages(where=str(ROOT), include=found["include"]))
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("detectors", "service")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert on_disk == shipped
    assert "detectors.signals" in shipped
