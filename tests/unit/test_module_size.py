"""No module outside ``tests/`` grows past 450 lines (issue 12: each module one job).

The developers' guide aims at ~400; this is the hard limit, so that a module that keeps
growing is split along its seams instead of being noticed at review.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 450


def modules() -> list[Path]:
    """Every module of the packages the import contract covers (all code but tests)."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = cfg["tool"]["importlinter"]["root_packages"]
    return [p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_no_module_outside_tests_is_over_the_limit() -> None:
    found = modules()
    assert len(found) > 50  # the listing found the code
    long = {
        str(p.relative_to(ROOT)): n for p in found if (n := len(p.read_text().splitlines())) > LIMIT
    }
    assert long == {}, f"split these along their seams: {long}"
