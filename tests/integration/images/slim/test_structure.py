"""Structure of slim images: mirrors, clean pip, no secrets, no servers, labels, size budget.

The full variant's tests inherit this class and add their own.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from builder.model import profiles
from builder.model.naming import immutable_tag
from tests.integration.conftest import Cli
from tests.integration.images.conftest import CANARY_PASSWORD, BuiltImage, build_image, docker_history

pytestmark = pytest.mark.integration

SLIM_IMAGES = [
    "2.13-cpu-debian12",
    pytest.param("2.14-cuda13.0-debian12", marks=pytest.mark.slow),
]
PACKAGE_TEST_FIXTURE = re.compile(r"/site-packages/[^/]+/(.+/)?tests?/")
SECRET_GREP = (
    r"grep -rIlE --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "
    r"'BEGIN (RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY|{canary}' "
    r"/etc /root /home /opt /usr/local /workspace /tmp 2>/dev/null || true"
)


@pytest.fixture(scope="module", params=SLIM_IMAGES)
def image(request: pytest.FixtureRequest, cli: Cli, default_cells: Any) -> BuiltImage:
    return build_image(cli, default_cells, request.param)


class TestSlimStructure:
    def test_pip_uses_the_profile_mirror(self, host: Any, local_env: dict[str, str]) -> None:
        pip_conf = host.file("/etc/pip.conf").content_string
        assert f"index-url = {local_env['SANDBOX_PYPI_URL']}" in pip_conf
        assert "cert = /etc/ssl/certs/ca-certificates.crt" in pip_conf

    def test_conda_uses_the_profile_channel(self, host: Any, default_cells: Any) -> None:
        channel = default_cells.spec.mirrors.profiles["local"].conda
        assert f"channel_alias: {channel}" in host.file("/etc/conda/.condarc").content_string

    def test_apt_uses_the_profile_mirror(self, host: Any, image: BuiltImage, default_cells: Any) -> None:
        family = image.cell.os_family
        mirror = default_cells.spec.mirrors.profiles["local"].apt.get(family, profiles.OFFICIAL_APT[family])
        sources = host.file("/etc/apt/sources.list").content_string
        assert f"deb {mirror} {image.cell.os_codename} main" in sources
        assert not host.run("ls /etc/apt/sources.list.d/").stdout.strip()

    def test_pip_check_is_clean(self, host: Any) -> None:
        result = host.run("pip check")
        assert result.rc == 0, result.stdout + result.stderr

    def test_python_is_the_cells(self, host: Any, image: BuiltImage) -> None:
        assert host.run("python --version").stdout.strip().startswith(f"Python {image.cell.python_version}.")
        assert host.run("command -v python").stdout.strip() == "/opt/venv/bin/python"

    def test_no_secret_in_files(self, host: Any) -> None:
        found = host.run(SECRET_GREP.format(canary=CANARY_PASSWORD)).stdout.split()
        # Test fixtures that Python packages ship (e.g. tornado/test/test.key) are public, not secrets.
        secrets = [path for path in found if not PACKAGE_TEST_FIXTURE.search(path)]
        assert secrets == [], f"private keys or the build's password in the image: {secrets}"

    def test_no_secret_in_history_or_env(self, host: Any, image: BuiltImage) -> None:
        history = docker_history(image.reference)
        assert CANARY_PASSWORD not in history
        assert "REGISTRY_PASSWORD" not in history
        env = host.run("env").stdout
        assert CANARY_PASSWORD not in env and "PASSWORD" not in env and "TOKEN" not in env

    def test_cuda_visible_devices_is_not_baked(self, host: Any, image: BuiltImage) -> None:
        env = host.run("env").stdout
        assert "CUDA_VISIBLE_DEVICES" not in env
        if image.cell.is_cuda:
            assert "NVIDIA_VISIBLE_DEVICES=all" in env
            assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in env

    def test_labels_equal_the_cell(self, image: BuiltImage, engine: Any) -> None:
        labels = engine.image_attrs(image.reference)["Config"]["Labels"]
        cell = image.cell
        assert labels["org.opencontainers.image.version"] == immutable_tag(cell)
        assert labels["dev.pytorch-cuda-images.torch"] == cell.torch_version
        assert labels["dev.pytorch-cuda-images.cuda"] == (cell.cuda_version or "none")
        assert labels["dev.pytorch-cuda-images.cudnn"] == (cell.cudnn_version or "none")
        assert labels["dev.pytorch-cuda-images.os"] == cell.key.os
        assert labels["dev.pytorch-cuda-images.variant"] == cell.variant
        for key in ("revision", "created", "source", "base.name", "base.digest"):
            assert labels[f"org.opencontainers.image.{key}"]

    def test_size_within_budget(self, image: BuiltImage, engine: Any) -> None:
        size = engine.image_attrs(image.reference)["Size"]
        assert size <= image.cell.size_budget_gb * 1e9, (
            f"{size / 1e9:.2f} GB > {image.cell.size_budget_gb} GB"
        )

    def test_variant_servers(self, host: Any, image: BuiltImage) -> None:
        """slim: a command-line image with no Jupyter and no SSH server."""
        if image.cell.variant != "slim":
            pytest.skip("slim only")
        assert not host.exists("jupyter")
        assert not host.exists("sshd") and not host.file("/usr/sbin/sshd").exists
