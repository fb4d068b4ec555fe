"""The wheel cache (devpi-server) in real builds: a warm cache serves a build whose upstream is gone.

Everything stays on 127.0.0.1: the upstream index is a pypiserver this test starts over (hard links to)
the sandbox's wheel folder, so no test here reaches PyPI. Phase 1 builds 2.13-cpu-debian12 with the cache
online, which fills it. Then the upstream is stopped and the cache restarted with --wheel-cache-offline;
phase 2 builds again with the torch index named `localhost` instead of `127.0.0.1` (the same cache), so
Docker's layer cache keeps the base stage but reruns the `pip install torch numpy` step, and pip gets
every wheel from the offline cache. The build passing with nothing upstream is the proof.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from builder.build import wheel_cache
from tests.conftest import in_ci
from tests.integration.conftest import Cli
from tools.sandbox import SandboxInfo

pytestmark = pytest.mark.integration

TAG = "2.13-cpu-debian12"
IMAGE = f"pytorch-cuda-images:{TAG}"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=3) as response:
            return int(response.status) == 200
    except OSError:
        return False


@pytest.fixture
def upstream(sandbox_info: SandboxInfo, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A loopback pypiserver over links to the sandbox's wheels: the cache's upstream, stoppable."""
    if shutil.which("devpi-server") is None and not (Path(sys.executable).parent / "devpi-server").exists():
        message = "devpi-server is not installed (pip install -e '.[test]')"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    folder = tmp_path / "upstream"
    folder.mkdir()
    for wheel in (sandbox_info.state_dir / "wheels").iterdir():
        try:
            os.link(wheel, folder / wheel.name)
        except OSError:
            (folder / wheel.name).symlink_to(wheel)
    port = _free_port()
    command = [sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        [*command, "-a", ".", "-P", ".", "--disable-fallback", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/simple"
    deadline = time.monotonic() + 30
    while not _answers(url + "/"):
        assert proc.poll() is None and time.monotonic() < deadline, "the upstream pypiserver did not start"
        time.sleep(0.25)
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)


def _matrix(project: Path, upstream_url: str, torch_index: str) -> Path:
    spec = yaml.safe_load((project / "matrix.yaml").read_text())
    spec["mirrors"]["profiles"]["proxied"] = {
        "registry": "${SANDBOX_REGISTRY}",
        "pypi": upstream_url,
        "pytorch": torch_index,
        "lock_bases": False,
    }
    path = project / "matrix.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_offline_cache_serves_a_build_with_the_upstream_gone(
    cli: Cli,
    engine,  # type: ignore[no-untyped-def]
    upstream: tuple[str, subprocess.Popen[bytes]],
    project_copy: Path,
    tmp_path: Path,
) -> None:
    upstream_url, upstream_proc = upstream
    cache = tmp_path / "wheel-cache"
    server, _ = wheel_cache.start(cache, [upstream_url])
    cached_index = server.index_url(upstream_url)
    try:
        matrix = _matrix(project_copy, upstream_url, cached_index)
        args = ["build", TAG, "--matrix", str(matrix), "--mirror", "proxied", "--out", str(tmp_path / "out")]
        args += ["--runs", str(tmp_path / "out")]
        warm = cli(*args, "--wheel-cache", str(cache))
        assert warm.returncode == 0, warm.stderr[-3000:]
        held = wheel_cache.stored_bytes(cache)
        assert held > 100e6, held  # torch's CPU wheel and numpy came through the cache

        upstream_proc.terminate()
        upstream_proc.wait(timeout=30)
        assert not _answers(upstream_url + "/")
        engine.remove_image(IMAGE)
        _matrix(project_copy, upstream_url, cached_index.replace("//127.0.0.1:", "//localhost:", 1))
        offline = cli(*args, "--wheel-cache", str(cache), "--wheel-cache-offline")
        assert offline.returncode == 0, offline.stderr[-3000:]
        log = (tmp_path / "out" / TAG / "build.log").read_text()
        assert "localhost" in log and "torch-2.13.0" in log, log[-2000:]  # pip ran, through the cache
        assert wheel_cache.stored_bytes(cache) == held  # nothing new was fetched
        assert (cache / wheel_cache.PORT_FILE).read_text().strip() == str(server.port)  # same index URL
    finally:
        wheel_cache.stop(cache)
