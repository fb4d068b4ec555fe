"""nox sessions: lint, unit, e2e (real engine + sandbox), gpu (on a machine with an NVIDIA GPU)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "unit"]
nox.options.default_venv_backend = "venv"


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, mypy, and the rendered images/ being up to date."""
    session.install("-e", ".[test,lint]")
    session.run("ruff", "check", "builder", "tools", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "builder", "tools", "tests", "bench", "noxfile.py")
    session.run("mypy")
    session.run("python", "-m", "builder", "render", "--check")
    session.run("python", "-m", "builder", "lock")


@nox.session
def unit(session: nox.Session) -> None:
    """Unit tests: no engine, no network."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """Integration tests against a real Docker engine and the loopback sandbox (root)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "integration", "tests", *session.posargs)


@nox.session
def gpu(session: nox.Session) -> None:
    """The smoke suite on this machine's GPU, directly (no Docker): needs torch with CUDA installed."""
    session.run(
        "python",
        "builder/resources/smoke_suite.py",
        "--cell",
        session.posargs[0] if session.posargs else "cell.json",
        "--require-gpu",
        external=True,
    )
