"""What NVIDIA's CUDA component wheels hold, checked on the real wheels the sandbox's PyPI mirror serves:
compat.yaml's `dev_wheels.compiler` decides whether a full image gets nvcc from wheels or from the
nvidia/cuda base, so it is tested against the wheels themselves (CUDA 12.8: ptxas only; 13.0: nvcc).

No engine and no GPU: the component wheels are installed into a folder on the host (seconds).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builder.model import compat
from tools import sandbox


def install(info: sandbox.SandboxInfo, cuda: str, target: Path) -> compat.DevWheels:
    wheels = compat.load().cuda[cuda].dev_wheels
    assert wheels is not None
    pins = [f"{name}=={version}" for name, version in wheels.packages.items()]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-cache-dir",
        "--disable-pip-version-check",
    ]
    cmd += ["--index-url", info.pypi_url, "--target", str(target), *pins]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return wheels


def version_of(tool: Path) -> str:
    result = subprocess.run([str(tool), "--version"], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("cuda", ["12.8", "13.0"])
def test_the_nvcc_wheel_holds_a_compiler_exactly_where_compat_says(
    sandbox_info: sandbox.SandboxInfo, tmp_path: Path, cuda: str
) -> None:
    wheels = install(sandbox_info, cuda, tmp_path)
    compilers = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("nvcc") if p.is_file())
    (ptxas,) = [p for p in tmp_path.rglob("ptxas") if p.is_file()]
    assert f"release {cuda}," in version_of(ptxas)  # the wheel is that CUDA's compiler back end
    if not wheels.compiler:
        assert compilers == [], compilers  # ptxas, libnvvm and the crt headers, but no nvcc to drive them
        assert (tmp_path / "nvidia" / "cuda_nvcc" / "nvvm" / "lib64" / "libnvvm.so").is_file()
        return
    assert wheels.home is not None
    home = tmp_path / wheels.home
    assert compilers == [Path(wheels.home) / "bin" / "nvcc"]  # one tree: CUDA_HOME as the template sets it
    assert f"release {cuda}," in version_of(home / "bin" / "nvcc")
    for part in ("include/cuda_runtime.h", "include/crt/host_config.h", "nvvm/bin/cicc", "bin/cudafe++"):
        assert (home / part).is_file(), part
