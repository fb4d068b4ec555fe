"""Tests for builder/resources/smoke_suite.py: pure helpers in-process, the suite as a subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SUITE = Path(__file__).resolve().parents[2] / "builder" / "resources" / "smoke_suite.py"


def _load_suite() -> ModuleType:
    """Import smoke_suite.py from its path (it is shipped standalone, not as builder.*)."""
    spec = importlib.util.spec_from_file_location("smoke_suite_under_test", SUITE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


smoke = _load_suite()


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("actual", "expected", "equal"),
    [
        ("2.13.0+cpu", "2.13.0", True),
        ("2.14.1+cu130", "2.14.1", True),
        ("2.13.0", "2.13.0", True),
        ("2.13", "2.13.0", True),
        ("2.13.0", "2.13.1", False),
        ("2.13.1+cpu", "2.13.0", False),
        ("2.14.0a0+git1234", "2.14.0", False),
        ("0.29.0", "0.29.0+cu130", True),
    ],
)
def test_versions_equal(actual: str, expected: str, equal: bool) -> None:
    assert smoke.versions_equal(actual, expected) is equal


def test_public_version() -> None:
    assert smoke.public_version("2.13.0+cpu") == "2.13.0"
    assert smoke.public_version("2.13.0") == "2.13.0"


@pytest.mark.parametrize(
    ("version", "major", "text"),
    [(92400, 9, "9.24.0"), (90100, 9, "9.1.0"), (91002, 9, "9.10.2"), (8902, 8, "8.9.2"), (8600, 8, "8.6.0")],
)
def test_cudnn_major_and_format(version: int, major: int, text: str) -> None:
    assert smoke.cudnn_major(version) == major
    assert smoke.format_cudnn(version) == text


def test_nccl_version_from_int() -> None:
    assert smoke.nccl_version_from_int(22707) == (2, 27, 7)
    assert smoke.nccl_version_from_int(2804) == (2, 8, 4)


@pytest.mark.parametrize(
    ("capability", "arch_list", "covered"),
    [
        ((9, 0), ["sm_80", "sm_90"], "sm_90"),  # exact
        ((8, 9), ["sm_80", "sm_86", "sm_90"], "sm_86"),  # same-major cubin (L4 on sm_86)
        ((12, 1), ["sm_90", "compute_120"], "compute_120"),  # PTX JIT <= capability
        ((9, 0), ["sm_75", "compute_80"], "compute_80"),  # older PTX JITs forward
        ((9, 0), ["sm_80", "sm_90", "compute_90"], "sm_90"),  # exact preferred over PTX
        ((7, 5), ["sm_80", "compute_80"], None),  # PTX newer than the device
        ((8, 0), ["sm_86"], None),  # cubin newer than the device
        ((10, 0), ["sm_90", "sm_90a"], None),  # other major, no PTX
        ((9, 0), ["sm_90a"], "sm_90a"),  # arch-specific matches exactly
        ((10, 3), ["sm_100a"], None),  # arch-specific never carries over
        ((8, 0), ["compute_80a"], None),
        ((8, 0), [], None),
    ],
)
def test_arch_covered(capability: tuple[int, int], arch_list: list[str], covered: str | None) -> None:
    assert smoke.arch_covered(capability, arch_list) == covered


def test_missing_archs() -> None:
    listed = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
    assert smoke.missing_archs(["sm_80", "sm_120"], listed) == []
    assert smoke.missing_archs(["sm_80", "sm_89"], listed) == ["sm_89"]


def _torch_without_gpu(arch_flags: str | None, get_arch_list: list[str]) -> Any:
    """A torch stand-in with what the arch checks read: the compiled flags and get_arch_list()."""
    from types import SimpleNamespace

    c_module = (
        SimpleNamespace() if arch_flags is None else SimpleNamespace(_cuda_getArchFlags=lambda: arch_flags)
    )
    return SimpleNamespace(_C=c_module, cuda=SimpleNamespace(get_arch_list=lambda: list(get_arch_list)))


def test_compiled_arch_list_without_a_gpu_up_to_torch_2_12() -> None:
    """torch <= 2.12 returns [] from get_arch_list() without a GPU; the compiled flags still tell."""
    old_torch = _torch_without_gpu("sm_75 sm_80 sm_86 sm_90 sm_100 sm_120", [])
    assert smoke.compiled_arch_list(old_torch) == ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    new_torch = _torch_without_gpu(None, ["sm_75", "sm_80"])
    assert smoke.compiled_arch_list(new_torch) == ["sm_75", "sm_80"]


def test_arch_list_check_passes_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = smoke.parse_cell(
        {**_cpu_cell(), "cuda": "12.8", "cudnn_major": 9, "gpu_archs": ["sm_80", "sm_90"]}
    )
    ctx = smoke.Context(cell=cell)
    monkeypatch.setattr(smoke, "_import", lambda name: _torch_without_gpu("sm_80 sm_90 sm_100", []))
    assert smoke.check_arch_list(ctx) == (smoke.PASS, "sm_80 sm_90 sm_100")
    monkeypatch.setattr(smoke, "_import", lambda name: _torch_without_gpu("sm_90", []))
    assert smoke.check_arch_list(ctx) == (smoke.FAIL, "missing sm_80 in arch list [sm_90]")


def test_parse_driver_text() -> None:
    assert smoke.parse_driver_text("580.65.06\n580.65.06\n") == "580.65.06"
    proprietary = (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    assert smoke.parse_driver_text(proprietary) == "535.104.05"
    open_module = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.82.07  Release Build\n"
    assert smoke.parse_driver_text(open_module) == "580.82.07"
    assert smoke.parse_driver_text("") is None


def test_driver_older() -> None:
    assert smoke.driver_older("535.104.05", "580.65.06")
    assert smoke.driver_older("580.65.05", "580.65.06")
    assert not smoke.driver_older("580.65.06", "580.65.06")
    assert not smoke.driver_older("580.82.07", "580.65.06")
    assert not smoke.driver_older("590.1", "580.65.06")


def test_parse_cell_rejects_bad_types() -> None:
    good = _cpu_cell()
    assert smoke.parse_cell(good).torch == good["torch"]
    with pytest.raises(smoke.CellError, match="torch"):
        smoke.parse_cell({**good, "torch": 2.13})
    with pytest.raises(smoke.CellError, match="tag"):
        smoke.parse_cell({k: v for k, v in good.items() if k != "tag"})
    with pytest.raises(smoke.CellError, match="cudnn_major"):
        smoke.parse_cell({**good, "cuda": "13.0"})
    with pytest.raises(smoke.CellError):
        smoke.parse_cell(["not", "an", "object"])


def test_driver_too_old_fails_and_skips_gpu_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    cell = smoke.parse_cell(_cuda_cell())
    ctx = smoke.Context(cell=cell, require_gpu=True)
    monkeypatch.setattr(smoke, "read_driver_version", lambda: "535.104.05")
    status, detail = smoke.check_driver(ctx)
    assert status == "fail"
    assert detail == "driver 535.104.05 is older than the minimum 580.65.06 for CUDA 13.0"
    gpu_check = next(c for c in smoke.CHECKS if c.name == "gpu_matmul_fp32")
    assert smoke.precheck(gpu_check, ctx) == ("skipped", "driver too old")


def test_suite_never_imports_builder() -> None:
    text = SUITE.read_text()
    assert "import builder" not in text
    assert "from builder" not in text


# --------------------------------------------------------------------------- subprocess runs


def _host_torch_version() -> str | None:
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


HOST_TORCH = _host_torch_version()
RunSuite = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_suite() -> RunSuite:
    """Runs the suite with the host's torch; tests/integration/test_smoke_in_image.py runs the same tests
    inside the built CPU image instead, so they never go untested."""
    if HOST_TORCH is None:
        pytest.skip("torch is not installed on the host (the same tests run in the CPU image)")
    return _run


PYTHON_MM = f"{sys.version_info.major}.{sys.version_info.minor}"


def _cpu_cell(**overrides: Any) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "tag": f"{(HOST_TORCH or '2.13.0').split('+')[0]}-cpu-debian12",
        "variant": "slim",
        "python": PYTHON_MM,
        "torch": (HOST_TORCH or "2.13.0").split("+")[0],
        "torchvision": None,
        "torchaudio": None,
        "cuda": None,
        "cudnn_major": None,
        "min_driver": None,
        "gpu_archs": [],
    }
    cell.update(overrides)
    return cell


def _cuda_cell() -> dict[str, Any]:
    return _cpu_cell(
        tag="2.14-cuda13.0-debian12",
        cuda="13.0",
        cudnn_major=9,
        min_driver="580.65.06",
        gpu_archs=["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"],
    )


def _run(tmp_path: Path, cell: Any, *args: str, raw: str | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "cell.json"
    path.write_text(raw if raw is not None else json.dumps(cell))
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES" and not k.startswith("NVIDIA_")}
    return subprocess.run(
        [sys.executable, str(SUITE), "--cell", str(path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _checks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"]}


def test_cpu_cell_passes_with_gpu_checks_skipped(tmp_path: Path, run_suite: RunSuite) -> None:
    out = tmp_path / "report.json"
    proc = run_suite(tmp_path, _cpu_cell(), "--json-out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["passed"] is True
    assert doc["gpu"] is False
    assert doc["tag"] == _cpu_cell()["tag"]
    assert isinstance(doc["total_s"], float)
    checks = _checks(doc)
    assert checks["torch"]["status"] == "pass"
    assert checks["cuda_version"]["status"] == "pass"
    assert checks["numpy"]["status"] == "pass"
    for name in ("gpu_devices", "gpu_matmul_fp32", "gpu_matmul_bf16", "gpu_conv2d", "gpu_nccl"):
        assert (checks[name]["status"], checks[name]["detail"]) == ("skipped", "no GPU visible")
    assert checks["gpu_compile"]["status"] == "skipped"
    assert all(set(c) == {"name", "status", "detail", "duration_s"} for c in doc["checks"])


def test_json_flag_prints_json_instead_of_table(tmp_path: Path, run_suite: RunSuite) -> None:
    proc = run_suite(tmp_path, _cpu_cell(), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["passed"] is True
    assert "python" in _checks(doc)


def test_wrong_torch_version_fails_and_names_the_check(tmp_path: Path, run_suite: RunSuite) -> None:
    proc = run_suite(tmp_path, _cpu_cell(torch="9.99.0"))
    assert proc.returncode == 1
    torch_row = next(line for line in proc.stdout.splitlines() if line.startswith("torch "))
    assert "fail" in torch_row
    assert "9.99.0" in torch_row
    assert "FAILED: torch" in proc.stdout


def test_require_gpu_without_gpu_fails_with_one_clear_line(tmp_path: Path, run_suite: RunSuite) -> None:
    proc = run_suite(tmp_path, _cpu_cell(), "--require-gpu")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == "no GPU visible but --require-gpu was given"
    rows = [line for line in proc.stdout.splitlines() if line.startswith("gpu_")]
    assert rows and all(" fail " in row for row in rows if not row.startswith("gpu_compile"))


def test_cuda_cell_on_cpu_torch_fails_cuda_check(tmp_path: Path, run_suite: RunSuite) -> None:
    proc = run_suite(tmp_path, _cuda_cell(), "--json")
    assert proc.returncode == 1
    checks = _checks(json.loads(proc.stdout))
    assert checks["cuda_version"]["status"] == "fail"
    assert "None" in checks["cuda_version"]["detail"]
    assert "13.0" in checks["cuda_version"]["detail"]


def test_timeout_reports_running_check(tmp_path: Path, run_suite: RunSuite) -> None:
    proc = run_suite(tmp_path, _cpu_cell(), "--json", "--timeout", "0.05")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["passed"] is False
    timed_out = [c for c in doc["checks"] if c["status"] == "fail"]
    assert len(timed_out) == 1
    assert timed_out[0]["detail"] == "timeout after 0.05 s"
    assert len(doc["checks"]) == len(smoke.CHECKS)


@pytest.mark.parametrize(
    "raw",
    ["{not json", "[1, 2]", json.dumps({"tag": "x"}), json.dumps(_cpu_cell(python=3.11))],
)
def test_malformed_cell_exits_2(tmp_path: Path, raw: str) -> None:
    proc = _run(tmp_path, None, raw=raw)
    assert proc.returncode == 2
    assert "bad cell.json" in proc.stderr


def test_missing_cell_and_bad_arguments_exit_2(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, str(SUITE), "--cell", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2
    bad = subprocess.run(
        [sys.executable, str(SUITE), "--cell", str(tmp_path / "x.json"), "--timeout", "-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    no_cell = subprocess.run([sys.executable, str(SUITE)], capture_output=True, text=True, check=False)
    assert no_cell.returncode == 2
