"""Structure tests run against real containers of built images (pytest + testinfra).

Each image folder's tests get an `image` (a built, smoke-tested, tagged cell) and a `host` (testinfra
over a running container of it). Builds run with a canary password in the environment, so the secret
tests can prove that nothing from the build environment reaches the image.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import testinfra

from builder.model import matrix
from builder.model.cell import Cell
from builder.model.naming import local_references
from tests.conftest import REPO
from tests.integration.conftest import Cli

CANARY_PASSWORD = "canary-Pa55w0rd-never-in-an-image"


@dataclass
class BuiltImage:
    cell: Cell
    reference: str


@pytest.fixture(scope="session")
def default_cells() -> matrix.Matrix:
    return matrix.load(REPO / "matrix.yaml")


def build_image(cli: Cli, default_cells: matrix.Matrix, tag: str) -> BuiltImage:
    result = cli(
        "build", tag, extra_env={"REGISTRY_PASSWORD": CANARY_PASSWORD, "REGISTRY_USERNAME": "ci-robot"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cell = default_cells.cell(tag)
    return BuiltImage(cell=cell, reference=local_references(cell)[0])


@pytest.fixture(scope="module")
def host(image: BuiltImage, engine: Any) -> Iterator[Any]:
    """testinfra over a container of the image, kept alive with `sleep` and always removed."""
    with engine.container(image.reference, ["infinity"], entrypoint=["sleep"]) as container:
        yield testinfra.get_host(f"docker://{container.id}")


def docker_history(reference: str) -> str:
    return subprocess.run(
        ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", reference],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
