"""Integration fixtures: the real loopback sandbox, a real engine, and the CLI run as users run it.

Outside CI a machine that cannot run the sandbox skips these tests; with CI=true that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from builder.build.render import SHIPPED_TEMPLATES
from tests.conftest import REPO, unavailable
from tools import sandbox
from tools.sandbox import SandboxError


@dataclass
class Cli:
    """Runs `python -m builder` with the local profile's environment."""

    env: dict[str, str]
    cwd: Path = REPO

    def __call__(
        self,
        *args: str,
        timeout: float = 1800,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "builder", *args],
            cwd=self.cwd,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def sandbox_info() -> Iterator[sandbox.SandboxInfo]:
    try:
        yield sandbox.up(
            sandbox.DEFAULT_STATE_DIR, with_cuda=True, log=lambda msg: print(msg, file=sys.stderr)
        )
    except SandboxError as err:
        unavailable(f"the sandbox (engine, registry, PyPI mirror) did not come up: {err}")


@pytest.fixture(scope="session")
def local_env(sandbox_info: sandbox.SandboxInfo) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, **sandbox_info.profile_env(), "MIRROR": "local", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="session")
def cli(local_env: dict[str, str]) -> Cli:
    return Cli(env=local_env)


@pytest.fixture(scope="session")
def engine(sandbox_info: sandbox.SandboxInfo):  # type: ignore[no-untyped-def]
    """The engine; at the end of the session the images the tests tagged are untagged again.

    Their layers stay as build cache, so repeated CI runs on one machine reuse them and disk use stays flat.
    """
    from builder.build.engine import Engine
    from builder.model.naming import LOCAL_REPOSITORY

    engine = Engine.connect()
    dangling_before = {image.id for image in engine.client.images.list(filters={"dangling": True})}
    yield engine
    for image in engine.client.images.list(name=LOCAL_REPOSITORY):
        for reference in image.tags:
            engine.remove_image(reference, keep_parents=True)
    # Images this session left untagged (a re-tag moved their tag away): drop them, keep their parents.
    for image in engine.client.images.list(filters={"dangling": True}):
        if image.id not in dangling_before:
            engine.remove_image(image.id, keep_parents=True)


def only_hash_locks(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree's ignore: of images/, the cells' hash locks only (not a build's log or results)."""
    return [n for n in names if Path(folder, n).is_file() and not n.startswith("requirements.")]


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """A copy of matrix.yaml, its locks (matrix.lock, images/ with each cell's hash lock) and templates/
    that a test may edit."""
    shutil.copy(REPO / "matrix.yaml", tmp_path / "matrix.yaml")
    shutil.copy(REPO / "matrix.lock", tmp_path / "matrix.lock")
    shutil.copytree(REPO / "images", tmp_path / "images", ignore=only_hash_locks)
    shutil.copytree(SHIPPED_TEMPLATES, tmp_path / "templates")
    return tmp_path


def checkout_copy(folder: Path, *, another_machine: bool = False) -> Path:
    """What git would check out (tracked and untracked-not-ignored files) copied into folder, with their
    times and modes; with another_machine, every file and folder takes the time of the copy and group
    write (a clone made elsewhere, under umask 002)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            if another_machine:
                shutil.copy(REPO / name, folder / name)
                (folder / name).chmod((REPO / name).stat().st_mode & 0o777 | 0o020)
            else:
                shutil.copy2(REPO / name, folder / name)
    if another_machine:
        for sub in (p for p in folder.rglob("*") if p.is_dir()):
            sub.chmod(0o775)
    return folder


def plain_docker_build(
    checkout: Path, tag: str, local_env: dict[str, str], *options: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """The documented `docker build -f images/<tag>/Dockerfile .` in checkout (the legacy builder), with the
    local profile's build args and its CA in certs/ (as a team behind a TLS proxy would put it); the result
    and the built image's ID ("" when it failed)."""
    from builder.model import matrix, profiles

    with mock.patch.dict(os.environ, local_env):
        m = matrix.load(REPO / "matrix.yaml")
        profile = profiles.resolve(m, "local")
    if profile.ca_bundle is not None:
        (checkout / "certs" / "extra-ca.crt").write_bytes(profile.ca_bundle.read_bytes())
    build_args = [f"--build-arg={k}={v}" for k, v in profile.build_args(m.cell(tag)).items()]
    iidfile = checkout.with_name(f"{checkout.name}.iid")
    iidfile.unlink(missing_ok=True)
    command = ["docker", "build", *options, "-f", f"images/{tag}/Dockerfile", "--network", "host"]
    result = subprocess.run(
        [*command, *build_args, "--iidfile", str(iidfile), "."],
        cwd=checkout,
        env={**local_env, "DOCKER_BUILDKIT": "0"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return result, iidfile.read_text().strip() if iidfile.exists() else ""
