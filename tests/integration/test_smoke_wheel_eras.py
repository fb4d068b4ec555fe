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
from typing import Any

import pytest

from tests.conftest import REPO, unavailable
from tests.unit.test_smoke_suite import smoke
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


ERAS = [
    ("2.9-cuda12.8-debian12", "2.9.1"),
    ("2.12-cuda13.0-debian12", "2.12.1"),
    ("2.14-cuda13.0-debian12", "2.14.1"),
]
IMAGE_ENV = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}
GPU_CHECKS = (
    "gpu_devices",
    "gpu_matmul_fp32",
    "gpu_matmul_bf16",
    "gpu_conv2d",
    "gpu_sdpa",
    "gpu_train_step",
    "gpu_nccl",
)


def run_suite(
    python: Path, tag: str, tmp_path: Path, *args: str, path: str = "/usr/bin:/bin"
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The suite as an image runs it (its env, no GPU) with this venv's torch: the process and the report."""
    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        [
            str(python),
            str(SUITE),
            "--cell",
            str(REPO / "images" / tag / "cell.json"),
            "--json-out",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        env={"PATH": path, **IMAGE_ENV},
        timeout=600,
        check=False,
    )
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def checks_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


@pytest.mark.parametrize(("tag", "torch_version"), ERAS)
def test_suite_passes_a_cuda_wheel_without_a_gpu(tag: str, torch_version: str, tmp_path: Path) -> None:
    python = torch_venv(torch_version)
    cell = json.loads((REPO / "images" / tag / "cell.json").read_text())
    assert cell["torch"] == torch_version
    proc, report = run_suite(python, tag, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = checks_of(report)
    for name in ("torch", "cuda_version", "cudnn", "nccl_version", "arch_list"):
        assert checks[name]["status"] == "pass", checks[name]
    assert set(cell["gpu_archs"]) <= set(checks["arch_list"]["detail"].split())
    assert "as the wheel pins" in checks["nccl_version"]["detail"]
    assert checks["gpu_matmul_fp32"]["status"] == "skipped"
    assert "Found no NVIDIA driver" in report["gpu_reason"]
    print(f"{tag} (torch {torch_version}): suite {report['total_s']:.2f} s without a GPU", file=sys.stderr)


FAKE_NVIDIA_SMI = "#!/bin/sh\necho {driver}\n"


@pytest.mark.parametrize(
    ("tag", "torch_version", "status"),
    [(*era, s) for era, s in zip(ERAS, ["warn", "fail", "fail"], strict=True)],
)
def test_suite_on_a_simulated_535_driver(tag: str, torch_version: str, status: str, tmp_path: Path) -> None:
    """A CUDA 12.8 wheel runs on 535 (minor-version compatibility: a warning); CUDA 13.0 needs r580."""
    python = torch_venv(torch_version)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI.format(driver="535.104.05"))
    smi.chmod(0o755)
    proc, report = run_suite(python, tag, tmp_path, path=f"{bin_dir}:/usr/bin:/bin")
    driver = checks_of(report)["driver"]
    print(f"{tag} on driver 535.104.05: {driver['status']}: {driver['detail']}", file=sys.stderr)
    assert driver["status"] == status, driver
    assert proc.returncode == (0 if status == "warn" else 1), proc.stdout + proc.stderr


@pytest.mark.parametrize(("tag", "torch_version"), ERAS)
def test_gpus_requested_but_cuda_cannot_start_fails_with_the_reason(
    tag: str, torch_version: str, tmp_path: Path
) -> None:
    """Before, every GPU check was skipped here and the image would have been tagged."""
    python = torch_venv(torch_version)
    proc, report = run_suite(python, tag, tmp_path, "--gpus-requested")
    assert proc.returncode == 1
    checks = checks_of(report)
    for name in GPU_CHECKS:
        assert checks[name]["status"] == "fail", checks[name]
        assert checks[name]["detail"].startswith(
            "GPUs were requested for this container but CUDA cannot start: "
            "RuntimeError: Found no NVIDIA driver on your system"
        ), checks[name]


GPU_CODE_ON_CPU = """
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("smoke", sys.argv[1])
smoke = importlib.util.module_from_spec(spec)
sys.modules["smoke"] = smoke
spec.loader.exec_module(smoke)
if __name__ == "__main__":
    import torch
    facts = {}
    for dtype in ("bfloat16", "float16"):
        facts[f"sdpa_flash_{dtype}"] = smoke.sdpa_error(torch, "cpu", dtype, "FLASH_ATTENTION")
        facts[f"sdpa_math_{dtype}"] = smoke.sdpa_error(torch, "cpu", dtype, "MATH")
    facts["sdpa_cudnn_on_cpu"] = smoke.sdpa_error(torch, "cpu", "bfloat16", "CUDNN_ATTENTION")
    facts["losses"] = smoke.train_losses(torch, "cpu", "bfloat16")
    started = time.monotonic()
    smoke.run_collectives(0, 1, smoke.free_port(), "gloo")
    if sys.argv[2] == "spawn":
        smoke.spawn_collectives(2, "gloo")
    facts["collectives_s"] = time.monotonic() - started
    print(json.dumps(facts))
"""


@pytest.mark.parametrize(("tag", "torch_version"), ERAS)
def test_gpu_checks_code_runs_on_the_cpu(tag: str, torch_version: str, tmp_path: Path) -> None:
    """The GPU checks' code with this torch, on the CPU: attention against math, an autocast run with fused
    AdamW, and 64 MiB collectives (gloo, 1 process; 2 processes for the newest era)."""
    python = torch_venv(torch_version)
    script = tmp_path / "gpu_code_on_cpu.py"
    script.write_text(GPU_CODE_ON_CPU)
    spawn = "spawn" if torch_version == ERAS[-1][1] else "single"
    proc = subprocess.run(
        [str(python), str(script), str(SUITE), spawn],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    for dtype in ("bfloat16", "float16"):
        assert facts[f"sdpa_flash_{dtype}"] is not None
        assert facts[f"sdpa_flash_{dtype}"] < smoke.SDPA_TOLERANCE[dtype]
        assert facts[f"sdpa_math_{dtype}"] < smoke.SDPA_TOLERANCE[dtype]
    assert facts["sdpa_cudnn_on_cpu"] is None  # no such kernel on the CPU: reported as unavailable
    losses = facts["losses"]
    assert losses[-1] < losses[0] / 2, losses
    print(f"torch {torch_version}: collectives {facts['collectives_s']:.1f} s ({spawn})", file=sys.stderr)
