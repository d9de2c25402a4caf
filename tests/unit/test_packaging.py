"""``pip install driftline`` adds one top-level import name, and every package of the source tree
ships under it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _build_wheel(into: Path) -> zipfile.ZipFile:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(into),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = into.glob("driftline-*.whl")
    return zipfile.ZipFile(wheel)


def test_the_wheel_installs_one_top_level_name_with_every_package(tmp_path: Path) -> None:
    """Top-level ``service`` and ``detectors`` would collide with anything else of those names
    in a user's environment; the folders install as ``driftline.service`` and
    ``driftline.detectors``, subpackages (``detectors/signals``) included."""
    names = _build_wheel(tmp_path).namelist()
    top_level = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_level == {"driftline"}
    shipped = {"/".join(name.split("/")[:-1]) for name in names if name.endswith("/__init__.py")}
    on_disk = {"driftline"} | {
        "driftline/" + "/".join(init.parent.relative_to(ROOT).parts)
        for top in ("detectors", "service")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert shipped == on_disk
    assert "driftline/detectors/signals" in shipped


def test_the_command_is_the_namespaced_cli(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "driftline = driftline.service.cli:main" in wheel.read(entry_points).decode()
