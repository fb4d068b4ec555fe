"""Installing exactly a hash lock (builder/resources/install_lock.py, the script every image build runs)
against real indexes on 127.0.0.1: a file whose sha256 is not locked fails with one line, exit 1.

The script runs here in a fresh venv with real pip, as in the image; the image builds themselves are in
test_build.py. No engine needed, so these run in seconds.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.model.naming import requirements_path
from builder.resources import install_lock
from tests.conftest import REPO

INSTALLER = REPO / "builder" / "resources" / "install_lock.py"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the interpreter's bundled pip (what `python3 -m venv /opt/venv` gives an image)."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    return folder / "bin" / "python"


def install(python: Path, lock: Path, index: str, *only: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_BUILD_INDEX_URL": index, "SOURCE_DATE_EPOCH": "315532800"}
    command = [str(python), "-B", str(INSTALLER), "--lock", str(lock)]
    if only:
        command += ["--only", *only]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_sandbox_mirrors_cpu_wheel_cannot_go_into_a_cuda_cell(
    sandbox_info,  # type: ignore[no-untyped-def]
    venv: Path,
) -> None:
    """The sandbox serves torch 2.13.0+cpu, which satisfies `torch==2.13.0`; the CUDA cell's lock pins
    PyPI's CUDA wheel by sha256, so the install stops at the CPU wheel."""
    lock = REPO / requirements_path("2.13-cuda13.0-debian12")
    cpu_wheel = sandbox_info.state_dir / "wheels" / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    assert cpu_wheel.is_file(), "the sandbox no longer holds the CPU wheel this test serves"
    actual = hashlib.sha256(cpu_wheel.read_bytes()).hexdigest()
    locked = install_lock.parse(lock.read_text())["torch"]
    assert f"sha256:{actual}" not in locked.hashes
    result = install(venv, lock, sandbox_info.pypi_url, "torch")
    assert result.returncode == 1, result.stdout[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("ERROR: hash mismatch: torch==2.13.0: expected sha256:"), last
    assert last.endswith(f" got sha256:{actual} ({cpu_wheel.name})"), last
    assert last.split("expected ")[1].split(" ")[0] in locked.hashes


def _wheel(version_text: str) -> bytes:
    """A tiny pure-Python wheel `tinypkg 1.0`; `version_text` changes its bytes, not its name."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        files = {
            "tinypkg/__init__.py": f"VALUE = {version_text!r}\n",
            "tinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
            "tinypkg-1.0.dist-info/WHEEL": (
                "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            ),
        }
        record = "".join(f"{name},,\n" for name in files) + "tinypkg-1.0.dist-info/RECORD,,\n"
        for name, text in {**files, "tinypkg-1.0.dist-info/RECORD": record}.items():
            wheel.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), text)
    return buffer.getvalue()


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A PEP 503 index on 127.0.0.1 serving tmp_path/files/; yields (its URL, the files folder)."""
    files = tmp_path / "files"
    (tmp_path / "simple" / "tinypkg").mkdir(parents=True)
    files.mkdir()
    name = "tinypkg-1.0-py3-none-any.whl"
    (tmp_path / "simple" / "tinypkg" / "index.html").write_text(f'<a href="/files/{name}">{name}</a>\n')
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", files
    finally:
        server.shutdown()


def test_a_mirror_serving_another_file_fails_with_one_line_and_the_right_file_installs(
    index: tuple[str, Path], venv: Path, tmp_path: Path
) -> None:
    url, files = index
    good, bad = _wheel("good"), _wheel("tampered")
    want, got = hashlib.sha256(good).hexdigest(), hashlib.sha256(bad).hexdigest()
    lock = tmp_path / "requirements.linux-amd64.txt"
    lock.write_text(f"tinypkg==1.0 \\\n    --hash=sha256:{want}\n    # via cell (pyproject.toml)\n")
    (files / "tinypkg-1.0-py3-none-any.whl").write_bytes(bad)
    result = install(venv, lock, url)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == (
        f"ERROR: hash mismatch: tinypkg==1.0: expected sha256:{want} got sha256:{got} "
        "(tinypkg-1.0-py3-none-any.whl)"
    )
    (files / "tinypkg-1.0-py3-none-any.whl").write_bytes(good)
    result = install(venv, lock, url)
    assert result.returncode == 0, result.stdout[-2000:]
    site = next((venv.parent.parent / "lib").glob("python3*/site-packages"))
    written = [site / "tinypkg" / "__init__.py", site / "tinypkg", site / "tinypkg-1.0.dist-info" / "RECORD"]
    assert {path.stat().st_mtime for path in written} == {315532800}  # SOURCE_DATE_EPOCH, not now
    assert not list((site / "tinypkg").glob("__pycache__"))  # no .pyc: --no-compile
    again = install(venv, lock, url)  # already installed at the locked version: nothing to do
    assert again.returncode == 0 and "nothing to install" in again.stdout
