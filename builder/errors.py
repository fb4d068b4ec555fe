"""Errors the tool reports to users; each carries its process exit code.

Only `builder.cli` turns them into an exit; everything else raises.
"""

from __future__ import annotations

from typing import Any


class BuilderError(Exception):
    """Base class: a message for the user and an exit code."""

    exit_code = 1

    def __init__(
        self, message: str, *, lines: list[str] | None = None, details: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.lines = lines or [message]  # one per problem, printed as `error: ...`
        self.details = details or []  # context printed as is after them (e.g. a build log's tail)


class ConfigError(BuilderError):
    """Bad input: matrix.yaml, a tag, a profile or a CLI argument (exit 2)."""

    exit_code = 2


class ImpossibleCellError(ConfigError):
    """A cell that cannot exist (no wheels, no Python, no base image), with suggestions (exit 2)."""


class EngineUnavailableError(BuilderError):
    """No Docker engine answers (exit 3)."""

    exit_code = 3


class BuildFailedError(BuilderError):
    """The image build failed; no tag was created (exit 1)."""


class ContainerStartError(BuilderError):
    """The engine created a container but refused to start it (exit 1); carries the container's HostConfig."""

    def __init__(self, message: str, *, host_config: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.host_config = host_config or {}


class SmokeFailedError(BuilderError):
    """The in-container smoke suite failed; the image was not tagged (exit 1)."""


class MirrorError(BuilderError):
    """A mirror (registry, PyPI, apt) could not be reached or lacks what was asked for (exit 1)."""


class RegistryError(BuilderError):
    """A push, login or digest check against the target registry failed (exit 1)."""


class StoppedError(BuilderError):
    """Work stopped on purpose: Ctrl-C, or a nightly cell's timeout (exit 130)."""

    exit_code = 130
