"""Shared fixtures: the repo root and the default matrix."""

from __future__ import annotations

import os
from pathlib import Path

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
