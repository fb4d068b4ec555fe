"""Shared fixtures: the repo root and the default matrix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def default_matrix():  # type: ignore[no-untyped-def]
    from builder.model import matrix

    return matrix.load(REPO / "matrix.yaml")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(message: str) -> NoReturn:
    """A tool or service a test needs is missing: skip on a developer's machine, fail with CI=true.

    `make test` installs every tool first (scripts/sandbox-deps.sh, scripts/test-deps.sh), so under CI a
    missing one is a broken setup, never a reason to skip.
    """
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
