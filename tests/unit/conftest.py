"""Unit tests never reach a Docker engine: point docker-py at a socket that does not exist.

The smoke suite's behaviour tests (those using `run_suite`) need torch; on a host without it they are
deselected here, not skipped, because tests/integration/test_smoke_in_image.py runs the very same tests
inside the built CPU image, so `make test` runs each of them once and skips nothing but GPU checks.

`cli` runs the command line in-process through typer's CliRunner (stdout and stderr apart, exit codes as
`main` gives them); the few tests about the real process (exit status, no traceback) run `python -m builder`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from builder.cli import app
from tests.conftest import REPO

NO_ENGINE = "unix:///nonexistent/unit-tests-use-no-engine.sock"
CLI_ENV: dict[str, str | None] = {
    "DOCKER_HOST": NO_ENGINE,
    "MATRIX": None,
    "MIRROR": None,
    "COLUMNS": "120",
    "NO_COLOR": "1",
}


class InProcessCli:
    """`python -m builder ARGS` in this process, from `cwd` (default: the repository root)."""

    def __call__(self, *args: str, cwd: Path = REPO) -> Result:
        previous = Path.cwd()
        os.chdir(cwd)
        try:
            return CliRunner().invoke(app, list(args), env=CLI_ENV, catch_exceptions=False)
        finally:
            os.chdir(previous)


@pytest.fixture(scope="session")
def cli() -> InProcessCli:
    return InProcessCli()


UNIT = Path(__file__).resolve().parent
_DESELECTED = pytest.StashKey[int]()


@pytest.fixture(autouse=True)
def _no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)


def _needs_host_torch(item: pytest.Item) -> bool:
    return (
        isinstance(item, pytest.Function)
        and "run_suite" in item.fixturenames
        and item.path.is_relative_to(UNIT)
        and getattr(item.module, "HOST_TORCH", "") is None
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    dropped = [item for item in items if _needs_host_torch(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not _needs_host_torch(item)]
    config.stash[_DESELECTED] = len(dropped)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    count = config.stash.get(_DESELECTED, 0)
    if count:
        terminalreporter.write_line(
            f"{count} smoke-suite tests deselected here: no torch on the host; "
            "tests/integration/test_smoke_in_image.py runs them inside the CPU image"
        )
