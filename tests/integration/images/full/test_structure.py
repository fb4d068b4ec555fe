"""Structure of full images: everything slim promises, plus Jupyter, sshd, a non-root user, /workspace."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Cli
from tests.integration.images.conftest import BuiltImage, build_image
from tests.integration.images.slim import test_structure as slim
from tests.integration.test_full import build_cpu_full

pytestmark = pytest.mark.integration

CPU_FULL = "2.13-cpu-debian12-full"
FULL_IMAGES = [
    CPU_FULL,
    pytest.param("2.14-cuda13.0-debian12-full", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module", params=FULL_IMAGES)
def image(
    request: pytest.FixtureRequest,
    cli: Cli,
    default_cells: Any,
    engine: Any,
    sandbox_info: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> BuiltImage:
    if request.param == CPU_FULL:
        # PyTorch's CPU index (torchvision +cpu) is out of reach here: build as test_full.py does.
        built = build_cpu_full(engine, sandbox_info, tmp_path_factory.mktemp("structure-cpu-full"))
        return BuiltImage(cell=default_cells.cell(CPU_FULL), reference=built.reference)
    return build_image(cli, default_cells, request.param)


class TestFullStructure(slim.TestSlimStructure):
    def test_variant_servers(self, host: Any, image: BuiltImage) -> None:
        """full: Jupyter Lab and an SSH server are installed."""
        assert host.run("jupyter lab --version").rc == 0
        assert host.file("/usr/sbin/sshd").exists
        assert host.file("/usr/bin/tini").exists

    def test_non_root_user_owns_workspace(self, host: Any) -> None:
        user = host.user("dev")
        assert user.exists and user.uid != 0
        workspace = host.file("/workspace")
        assert workspace.is_directory and workspace.user == "dev"

    def test_no_password_for_any_user(self, host: Any) -> None:
        shadow = host.file("/etc/shadow").content_string
        for line in shadow.splitlines():
            name, hashed = line.split(":")[:2]
            assert hashed in ("*", "!", "!*", "!!") or hashed.startswith("!"), f"{name} has a password"

    def test_ssh_is_key_only_and_has_no_baked_host_keys(self, host: Any) -> None:
        assert not host.run("ls /etc/ssh/ssh_host_*").stdout.strip()
        config = host.run(
            "/usr/sbin/sshd -T -f /etc/ssh/sshd_config -o HostKey=/dev/null 2>/dev/null || true"
        )
        text = host.file("/etc/ssh/sshd_config.d/pytorch-cuda-images.conf").content_string
        assert "PasswordAuthentication no" in text and "PermitRootLogin no" in text
        del config

    def test_dev_tools(self, host: Any, image: BuiltImage) -> None:
        for tool in ("git", "g++", "ninja"):
            assert host.exists(tool), tool
        assert host.run("python -c 'import numpy, pandas, matplotlib'").rc == 0
        if image.cell.is_cuda:  # the CPU stand-in's torchvision is PyPI's CUDA build (see test_full.py)
            assert host.run("python -c 'import torchvision'").rc == 0
            assert host.run("nvcc --version").rc == 0
