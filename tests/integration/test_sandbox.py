"""The local loopback sandbox: engine, registry with the Debian 12 base, pypiserver.

Brings the real sandbox up (state in $SANDBOX_DIR, reused between runs). Outside CI a
machine that cannot run it (no root for apt, no engine) skips; with CI=true it fails.
Every request goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tools import sandbox
from tools.sandbox import SandboxError, SandboxInfo

pytestmark = pytest.mark.integration

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str) -> tuple[int, str]:
    assert url.startswith("http://127.0.0.1:"), url
    try:
        with _NO_PROXY.open(url, timeout=30) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), ""


@pytest.fixture(scope="module")
def info() -> Iterator[SandboxInfo]:
    try:
        yield sandbox.up(sandbox.DEFAULT_STATE_DIR)
    except SandboxError as err:
        unavailable(f"sandbox did not come up: {err}")


def test_registry_lists_base_repository(info: SandboxInfo) -> None:
    status, body = _get(f"http://{info.registry}/v2/_catalog")
    assert status == 200
    assert "library/debian" in json.loads(body)["repositories"]
    status, body = _get(f"http://{info.registry}/v2/library/debian/tags/list")
    assert status == 200
    assert "12" in json.loads(body)["tags"]


def test_pypiserver_serves_cpu_torch(info: SandboxInfo) -> None:
    status, body = _get(f"{info.pypi_url}/torch/")
    assert status == 200
    assert re.search(r"torch-2\.13\.0\+cpu-cp311-cp311-manylinux[^\"<]*\.whl", body), body[:500]


def test_pypiserver_does_not_fall_back_to_pypi(info: SandboxInfo) -> None:
    status, _ = _get(f"{info.pypi_url}/this-package-is-not-in-the-sandbox/")
    assert status == 404


def test_base_image_is_debian_12(info: SandboxInfo) -> None:
    assert info.base_image == f"{info.registry}/library/debian:12"
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "host",
            info.base_image,
            "cat",
            "/etc/debian_version",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"12\.\d+", proc.stdout.strip()), proc.stdout


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses (hex, as in /proc/net) listening on port."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


def test_services_bind_loopback_only(info: SandboxInfo) -> None:
    for port in (int(info.registry.rsplit(":", 1)[1]), int(info.pypi_url.split(":")[2].split("/")[0])):
        addresses = _listening_addresses(port)
        assert addresses == {"0100007F"}, (port, addresses)  # 127.0.0.1, little-endian hex


def test_profile_env_names_the_sandbox(info: SandboxInfo) -> None:
    text = (info.state_dir / "profile.env").read_text()
    assert f"SANDBOX_REGISTRY={info.registry}\n" in text
    assert f"SANDBOX_PYPI_URL={info.pypi_url}\n" in text
    assert f"SANDBOX_BASE_IMAGE={info.base_image}\n" in text


def test_second_up_is_fast(info: SandboxInfo) -> None:
    start = time.monotonic()
    again = sandbox.up(info.state_dir, log=lambda _msg: None)
    elapsed = time.monotonic() - start
    assert again == info
    assert elapsed < 10, f"second up() took {elapsed:.1f} s"
    state = sandbox.status(info.state_dir)
    assert state["engine"] and state["registry_answers"] and state["pypi_answers"]
    assert state["base_image_pushed"]
    assert "cpu" in state["wheel_groups"]


def test_pip_download_ignores_host_pip_config() -> None:
    cmd = sandbox._pip_download_command(["numpy"], Path("/tmp/wheels"))
    assert cmd[cmd.index("--index-url") + 1] == "https://pypi.org/simple"
    assert cmd[cmd.index("--python-version") + 1] == "3.11"
    assert "--only-binary=:all:" in cmd
    env = sandbox._pip_env()
    assert env["PIP_CONFIG_FILE"] == os.devnull
    assert not [key for key in env if key.startswith("PIP_") and key != "PIP_CONFIG_FILE"]
