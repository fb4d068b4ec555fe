"""nox sessions: lint, unit, e2e (real engine + sandbox), long (two no-cache CUDA builds), arm64 (linux/arm64
under QEMU, slow), gpu (on a machine with an NVIDIA GPU)."""

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
    session.run("pytest", "-m", "integration and not emulated", "tests", *session.posargs)


@nox.session
def long(session: nox.Session) -> None:
    """Two `--no-cache` builds of 2.14-cuda13.0-debian12 give identical layers (root; 3 to 8 minutes)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "long", "tests/integration/test_reproducible.py", *session.posargs)


@nox.session
def arm64(session: nox.Session) -> None:
    """linux/arm64 end to end under QEMU (root; about 20 min cold on 2 cores, 6 with its layers cached;
    12 GB): binfmt with QEMU 10, the arm64 Debian 13 base, 2.14-cuda13.0-debian13 built and smoke-tested for
    both platforms, one pushed image index."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "emulated", "tests/integration/test_arm64.py", *session.posargs)


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
