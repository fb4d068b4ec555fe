"""The smoke suite against real CUDA torch wheels of each era, on this GPU-less host (no Docker).

torch <= 2.12 answers torch.cuda.get_arch_list() with [] when no GPU is visible; 2.13+ answers with
the compiled list. The gate must pass a good CUDA image of either era on a machine without a GPU.
Each wheel set (torch with its nvidia-* wheels, about 3 GB) is installed once into a venv kept in the
sandbox cache; later runs reuse it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, unavailable
from tools import sandbox

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SUITE = REPO / "builder" / "resources" / "smoke_suite.py"
VENVS = sandbox.DEFAULT_STATE_DIR / "torch-venvs"
PYPI = "https://pypi.org/simple"


def torch_venv(version: str) -> Path:
    """A venv with PyPI's default (CUDA) torch==version and numpy; made once, then reused."""
    venv = VENVS / version
    python = venv / "bin" / "python"
    done = venv / ".complete"
    if done.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    install = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--index-url",
        PYPI,
        f"torch=={version}",
        "numpy",
    ]
    proc = subprocess.run(install, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        message = f"cannot install torch=={version} from {PYPI}: {proc.stderr.strip()[-500:]}"
        unavailable(message)
    done.touch()
    return python


@pytest.mark.parametrize(
    ("tag", "torch_version"),
    [("2.9-cuda12.8-debian12", "2.9.1"), ("2.12-cuda13.0-debian12", "2.12.1")],
)
def test_suite_passes_a_cuda_wheel_without_a_gpu(tag: str, torch_version: str, tmp_path: Path) -> None:
    python = torch_venv(torch_version)
    cell = json.loads((REPO / "images" / tag / "cell.json").read_text())
    assert cell["torch"] == torch_version
    out = tmp_path / "smoke.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    }
    proc = subprocess.run(
        [str(python), str(SUITE), "--cell", str(REPO / "images" / tag / "cell.json"), "--json-out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    for name in ("torch", "cuda_version", "cudnn", "nccl_version", "arch_list"):
        assert checks[name]["status"] == "pass", checks[name]
    assert set(cell["gpu_archs"]) <= set(checks["arch_list"]["detail"].split())
    assert checks["gpu_matmul_fp32"]["status"] == "skipped"
    print(f"{tag} (torch {torch_version}): suite {report['total_s']:.2f} s without a GPU", file=sys.stderr)
