"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fixtures_dir() -> Path:
    """The upstream reference fixtures: $LASER_FIXTURES or ../shared/fixtures beside the repo."""
    env = os.environ.get("LASER_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    path = _fixtures_dir()
    if not (path / "README.md").exists():
        # Never skip silently: parity is a required check.
        pytest.fail(f"reference fixtures not found at {path}; set LASER_FIXTURES to their folder")
    return path
