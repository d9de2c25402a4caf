"""Session-wide checks."""

from __future__ import annotations

import sys

import pytest

_BARE = ("detectors", "service")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The code is ``driftline.detectors`` and ``driftline.service``. From the repository root the
    bare folders are importable too, and a module imported under both names is two modules:
    two metric registrations, classes that fail ``isinstance`` against themselves. Nothing may
    have imported them bare."""
    bare = sorted(
        name for name in sys.modules if name in _BARE or name.startswith(("detectors.", "service."))
    )
    if bare:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        sys.stderr.write(
            f"\nimported as top-level packages instead of under driftline.: {', '.join(bare)}\n"
        )
