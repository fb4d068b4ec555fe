"""Unit tests never reach a Docker engine: point docker-py at a socket that does not exist."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/unit-tests-use-no-engine.sock")
