"""The wheel cache: its pure parts, and a real devpi-server on 127.0.0.1 (no upstream is ever contacted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from builder.build import wheel_cache
from builder.build.pipeline import cell_content_hash
from builder.errors import ConfigError
from builder.model import matrix, profiles
from tests.conftest import REPO, in_ci

PYPI = "https://pypi.org/simple"
DEAD_UPSTREAM = "http://127.0.0.1:9/simple"  # nothing listens on the discard port


def test_index_name_is_one_per_upstream() -> None:
    assert wheel_cache.index_name(PYPI) == "root/pypi.org-simple"
    assert wheel_cache.index_name("https://pypi.tuna.tsinghua.edu.cn/simple/") == (
        "root/pypi.tuna.tsinghua.edu.cn-simple"
    )
    assert wheel_cache.index_name("http://127.0.0.1:8080/simple") != wheel_cache.index_name(PYPI)
    with pytest.raises(ConfigError, match="not an http"):
        wheel_cache.index_name("file:///opt/wheels")


def test_server_command_binds_loopback_and_goes_offline_on_request(tmp_path: Path) -> None:
    online = wheel_cache.server_command(Path("devpi-server"), tmp_path, 3141, offline=False)
    offline = wheel_cache.server_command(Path("devpi-server"), tmp_path, 3141, offline=True)
    assert online[online.index("--host") + 1] == "127.0.0.1"
    assert online[online.index("--serverdir") + 1] == str(tmp_path / wheel_cache.SERVER_DIR)
    assert "--offline-mode" not in online and offline[-1] == "--offline-mode"


def test_devpi_init_takes_a_password_that_starts_with_a_dash(tmp_path: Path) -> None:
    """secrets.token_urlsafe gives one in 64 such passwords; as a separate argument argparse refused it."""
    command = wheel_cache.init_command(
        str(wheel_cache._executable("devpi-init")), tmp_path / "server", "-x9_"
    )
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "server").is_dir()


def test_upstream_env_trusts_the_given_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    env = wheel_cache.upstream_env(bundle, base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "SSL_CERT_FILE": str(bundle), "REQUESTS_CA_BUNDLE": str(bundle)}


def test_build_options_pass_the_cache_to_per_cell_builds(tmp_path: Path) -> None:
    assert wheel_cache.build_options(None, offline=True) == []
    assert wheel_cache.build_options(tmp_path, offline=False) == ["--wheel-cache", str(tmp_path)]
    assert wheel_cache.build_options(tmp_path, offline=True)[-1] == "--wheel-cache-offline"


def test_applied_cache_changes_the_build_index_only(default_matrix: matrix.Matrix) -> None:
    cell = default_matrix.cell("2.14-cuda13.0-debian12")
    profile = profiles.resolve(default_matrix, "official")
    server = wheel_cache.WheelCacheServer(directory=Path("/c"), port=3141, pid=1, offline=False)
    cached = wheel_cache.apply(profile, server)
    before, after = profile.build_args(cell), cached.build_args(cell)
    assert before["PIP_BUILD_INDEX_URL"] == ""
    assert after["PIP_BUILD_INDEX_URL"] == "http://127.0.0.1:3141/root/pypi.org-simple/+simple/"
    assert after["PIP_INDEX_URL"] == PYPI  # what /etc/pip.conf in the image keeps
    assert {k: v for k, v in after.items() if k != "PIP_BUILD_INDEX_URL"} == {
        k: v for k, v in before.items() if k != "PIP_BUILD_INDEX_URL"
    }
    context = {"Dockerfile": b"FROM scratch\n"}
    assert cell_content_hash(context, after, "sha256:1") == cell_content_hash(context, before, "sha256:1")


def test_rendered_pip_steps_take_the_build_index(default_matrix: matrix.Matrix) -> None:
    from builder.build.render import SHIPPED_TEMPLATES, Renderer

    files = Renderer(SHIPPED_TEMPLATES).files(default_matrix.cell("2.14-cuda13.0-debian12-full"))
    text = files["Dockerfile"].decode()
    # every pip step is the lock installer, in a stage that declares the build-time index; it hands
    # PIP_BUILD_INDEX_URL to pip as --index-url
    stages = text.split("\nFROM ")
    installing = [s for s in stages if "RUN python -B /opt/pytorch-cuda-images/install_lock.py" in s]
    assert len(installing) == 2, installing  # torch (slim), devtools (full)
    assert all(re.search(r"^ARG .*\bPIP_BUILD_INDEX_URL\b", s, re.M) for s in installing)
    assert " PIP_BUILD_INDEX_URL= " in text[: text.index("\nFROM ")]  # declared once, before the stages
    assert "pip install" not in text
    installer = (REPO / "builder/resources/install_lock.py").read_text()
    assert 'command += ["--index-url", os.environ["PIP_BUILD_INDEX_URL"]]' in installer
    assert '"index-url = ${PIP_INDEX_URL}"' in text  # /etc/pip.conf never names the build-time cache


def test_stored_bytes_counts_the_file_store(tmp_path: Path) -> None:
    assert wheel_cache.stored_bytes(tmp_path) == 0
    store = tmp_path / wheel_cache.SERVER_DIR / "+files" / "root" / "x"
    store.mkdir(parents=True)
    (store / "a.whl").write_bytes(b"x" * 1000)
    assert wheel_cache.stored_bytes(tmp_path) == 1000


def _devpi_installed() -> bool:
    beside = Path(sys.executable).parent / "devpi-server"
    if beside.exists():
        return True
    if in_ci():
        pytest.fail("devpi-server is not installed (pip install -e '.[test]')")
    pytest.skip("devpi-server is not installed")


def test_real_server_creates_one_mirror_index_per_upstream_and_is_reused(tmp_path: Path) -> None:
    _devpi_installed()
    upstreams = [DEAD_UPSTREAM, "http://127.0.0.1:9/other"]
    server, started = wheel_cache.start(tmp_path, upstreams, offline=True)
    try:
        assert started and server.offline
        assert json.loads((tmp_path / wheel_cache.SERVER_FILE).read_text())["port"] == server.port
        for upstream in upstreams:
            url = f"{server.root_url}/{wheel_cache.index_name(upstream)}?no_projects="
            request = urllib.request.Request(url, headers={"Accept": "application/json"})
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request) as reply:
                config = json.loads(reply.read())["result"]
            assert config["type"] == "mirror" and config["mirror_url"] == upstream + "/"
        again, started_again = wheel_cache.start(tmp_path, upstreams[:1], offline=True)
        assert again == server and not started_again  # the running server is reused
        assert wheel_cache.running(tmp_path) == server
    finally:
        assert wheel_cache.stop(tmp_path)
    assert wheel_cache.running(tmp_path) is None
    assert not wheel_cache.stop(tmp_path)


def test_preflight_leaves_the_wheel_cache_alone(default_matrix: matrix.Matrix) -> None:
    """A wheel cache's root page lists every upstream project name: the preflight does not fetch it."""
    from dataclasses import replace

    cell = default_matrix.cell("2.14-cuda13.0-debian12")  # a PyPI cell: no torch index to probe
    dead = replace(profiles.resolve(default_matrix, "official"), pypi=DEAD_UPSTREAM)
    assert len(profiles.unreachable(dead, cell, timeout=2)) == 1
    assert profiles.unreachable(replace(dead, build_pypi="http://127.0.0.1:9/cache/+simple/"), cell) == []
