"""Structure of full images: everything slim promises, plus Jupyter, sshd, a non-root user, /workspace."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import Cli
from tests.integration.images.conftest import BuiltImage, build_image
from tests.integration.images.slim.test_structure import TestSlimStructure

pytestmark = pytest.mark.integration

FULL_IMAGES = [
    "2.13-cpu-debian12-full",
    pytest.param("2.14-cuda13.0-debian12-full", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module", params=FULL_IMAGES)
def image(request: pytest.FixtureRequest, cli: Cli, default_cells: Any) -> BuiltImage:
    return build_image(cli, default_cells, request.param)


class TestFullStructure(TestSlimStructure):
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
        assert host.run("python -c 'import numpy, pandas, matplotlib, torchvision'").rc == 0
        if image.cell.is_cuda:
            assert host.run("nvcc --version").rc == 0
