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


# --------------------------------------------------------------------------- driver floors


def test_minor_version_floors_are_compat_yaml_s() -> None:
    """The suite carries a copy (it runs where the package is absent); compat.yaml is the source."""
    from builder.model import compat

    assert compat.load().driver_compat.minor_version == smoke.MINOR_VERSION_DRIVER


IMAGES = SUITE.parents[2] / "images"
DRIVER_535 = "535.104.05"


def _gate_on_driver(monkeypatch: pytest.MonkeyPatch, cell_json: Path, driver: str) -> Any:
    """The suite's driver check for a rendered cell.json on a host reporting `driver` (no GPU, no libcuda)."""
    monkeypatch.setattr(smoke, "read_driver_version", lambda: driver)
    monkeypatch.setattr(smoke, "libcuda_version", lambda: None)
    ctx = smoke.Context(cell=smoke.load_cell(str(cell_json)), gpu=False, gpu_reason="no GPU in this test")
    return smoke.check_driver(ctx)


def test_gate_on_a_535_driver_runs_cuda_12_warns_and_fails_cuda_13(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA 12.x wheels run on 535 through minor-version compatibility; CUDA 13 needs the r580 branch."""
    by_status: dict[str, set[str]] = {}
    for cell_json in sorted(IMAGES.glob("*cuda*/cell.json")):
        cuda = json.loads(cell_json.read_text())["cuda"]
        status, detail = _gate_on_driver(monkeypatch, cell_json, DRIVER_535)
        by_status.setdefault(status, set()).add(cuda)
        if status == "warn":
            assert "minor-version compatibility (driver >= 525.60.13)" in detail
            assert "PTX JIT needs >=" in detail
    print({status: sorted(cudas) for status, cudas in by_status.items()})
    assert by_status["pass"] == {"11.8", "12.1"}  # 535 is newer than their release drivers
    assert by_status["warn"] == {"12.4", "12.6", "12.8", "12.9"}
    assert by_status["fail"] == {"13.0", "13.2"}
    assert not set(by_status) - {"pass", "warn", "fail"}


def test_driver_verdict_on_a_visible_gpu() -> None:
    sass = [("sm_90", "sm_90")]
    status, detail = smoke.driver_verdict("12.8", DRIVER_535, "570.26", floor="525.60.13", coverage=sass)
    assert status == "warn" and "with SASS for sm_90" in detail
    ptx = [("sm_90", "sm_90"), ("sm_121", "compute_120")]
    status, detail = smoke.driver_verdict("12.8", DRIVER_535, "570.26", floor="525.60.13", coverage=ptx)
    assert status == "fail" and "sm_121 (only compute_120) needs PTX JIT" in detail
    assert smoke.driver_verdict("12.8", "570.26", "570.26", floor="525.60.13")[0] == "pass"
    assert smoke.driver_verdict("12.8", "470.82.01", "570.26", floor="525.60.13")[0] == "fail"


def test_forward_compatibility_package_lets_an_old_driver_run() -> None:
    """libcuda from cuda-compat reports the newer CUDA although the kernel driver is older."""
    status, detail = smoke.driver_verdict("13.0", DRIVER_535, "580.65.06", floor="580", driver_cuda="13.0")
    assert status == "warn" and "forward-compatibility package" in detail
    assert smoke.driver_verdict("13.0", DRIVER_535, "580.65.06", floor="580", driver_cuda="12.2")[0] == "fail"


# --------------------------------------------------------------------------- NCCL, MIG / vGPU


def test_nccl_pin_from_requires_dist() -> None:
    requires = [
        "filelock",
        'nvidia-nccl-cu12==2.27.5; platform_system == "Linux" and platform_machine == "x86_64"',
    ]
    assert smoke.nccl_pin(requires) == (2, 27, 5)
    assert smoke.nccl_pin(['nvidia-nccl-cu13==2.29.7; platform_system == "Linux"']) == (2, 29, 7)
    assert smoke.nccl_pin(["numpy"]) is None


def test_nccl_is_judged_by_the_wheel_pin_not_torch_build_version() -> None:
    """pytorch/builder#1666: torch built with 2.18.1 while its wheel pins and loads 2.19.3 is a good image."""
    lib = "/opt/venv/lib/python3.11/site-packages/nvidia/nccl/lib/libnccl.so.2"
    assert smoke.nccl_outcome((2, 19, 3), (2, 19, 3), (2, 18, 1), lib)[0] == "pass"
    status, detail = smoke.nccl_outcome((2, 18, 1), (2, 19, 3), (2, 18, 1), lib)
    assert status == "fail" and "pins 2.19.3" in detail
    assert smoke.nccl_outcome((2, 19, 3), None, (2, 18, 1), lib)[0] == "pass"
    assert smoke.nccl_outcome((2, 17, 1), None, (2, 18, 1), lib)[0] == "fail"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb", "MIG slice"),
        ("GRID A100-1-5C", "vGPU"),
        ("NVIDIA H100XM-80C", "vGPU"),
        ("NVIDIA H100 80GB HBM3", "GPU"),
    ],
)
def test_device_kind(name: str, kind: str) -> None:
    assert smoke.device_kind(name) == kind


def test_nccl_check_skips_only_for_devices_without_memory_pools() -> None:
    """NVIDIA/nccl#2101: NCCL >= 2.23 calls cudaMemPoolCreate at init, which vGPU / MIG-vGPU slices refuse."""
    reason = smoke.mem_pool_skip((2, 27, 5), [("GRID A100-1-5C", False)])
    assert reason is not None
    assert "GRID A100-1-5C (vGPU)" in reason and "NVIDIA/nccl#2101" in reason
    assert smoke.mem_pool_skip((2, 27, 5), [("NVIDIA H100 80GB HBM3", True)]) is None
    assert smoke.mem_pool_skip((2, 27, 5), [("NVIDIA H100 80GB HBM3", None)]) is None
    assert smoke.mem_pool_skip((2, 21, 5), [("GRID A100-1-5C", False)]) is None


# --------------------------------------------------------------------------- GPU checks' pure parts


def test_compile_is_skipped_below_compute_capability_7() -> None:
    reason = smoke.compile_unsupported((6, 1))
    assert reason is not None and "sm_61" in reason and ">= 7.0" in reason
    assert smoke.compile_unsupported((7, 0)) is None
    assert smoke.compile_unsupported((12, 0)) is None


def test_too_old_for_triton_is_found_in_the_exception_chain() -> None:
    class GPUTooOldForTriton(RuntimeError):
        pass

    class BackendCompilerFailed(RuntimeError):
        pass

    try:
        try:
            raise GPUTooOldForTriton("Found Tesla P100 which is too old")
        except GPUTooOldForTriton as inner:
            raise BackendCompilerFailed("backend='inductor' raised") from inner
    except BackendCompilerFailed as outer:
        assert smoke.too_old_for_triton(outer)
    assert not smoke.too_old_for_triton(RuntimeError("other"))


def test_sdpa_kernels_required_by_capability() -> None:
    assert smoke.required_sdpa_backends((9, 0)) == ("FLASH_ATTENTION", "EFFICIENT_ATTENTION")
    assert smoke.required_sdpa_backends((7, 5)) == ("EFFICIENT_ATTENTION",)
    assert smoke.required_sdpa_backends((12, 0)) == ("EFFICIENT_ATTENTION",)
    assert smoke.half_dtypes((8, 0)) == ("bfloat16", "float16")
    assert smoke.half_dtypes((7, 0)) == ("float16",)


def test_loss_problem() -> None:
    assert smoke.loss_problem([1.0, 0.5, 0.25]) is None
    assert "did not decrease" in str(smoke.loss_problem([1.0, 1.2]))
    assert "non-finite" in str(smoke.loss_problem([1.0, float("nan")]))
    assert "non-finite" in str(smoke.loss_problem([]))


# --------------------------------------------------------------------------- a GPU expected, CUDA down


def test_cuda_error_explained() -> None:
    fabric = smoke.explain_cuda_error(
        "CUDA initialization: Unexpected error from cudaGetDeviceCount(). "
        "Error 802: system not yet initialized",
        ["nvidia-uvm", "nvidia0", "nvidiactl"],
    )
    assert "Error 802" in fabric and "nvidia-fabricmanager" in fabric
    no_uvm = smoke.explain_cuda_error("CUDA driver initialization failed", ["nvidia0", "nvidiactl"])
    assert "/dev/nvidia-uvm is missing" in no_uvm
    nothing = smoke.explain_cuda_error("Found no NVIDIA driver on your system", [])
    assert nothing.endswith("no /dev/nvidia* device here")


def _no_gpu_context(**flags: Any) -> Any:
    cell = smoke.parse_cell(_cuda_cell())
    reason = "Error 802: system not yet initialized; NVSwitch systems need nvidia-fabricmanager running"
    return smoke.Context(cell=cell, gpu=False, gpu_reason=reason, **flags)


def test_gpu_checks_fail_with_the_reason_when_gpus_were_requested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smoke, "device_nodes", lambda: [])
    gpu_check = next(c for c in smoke.CHECKS if c.name == "gpu_matmul_fp32")
    status, detail = smoke.precheck(gpu_check, _no_gpu_context(gpus_requested=True))
    assert status == "fail"
    assert detail.startswith("GPUs were requested for this container but CUDA cannot start: Error 802")
    assert smoke.precheck(gpu_check, _no_gpu_context(require_gpu=True))[0] == "fail"
    status, detail = smoke.precheck(gpu_check, _no_gpu_context())
    assert status == "skipped" and "Error 802" in detail


def test_gpu_checks_fail_where_nvidia_device_nodes_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare GPU host (no Docker): the device nodes are there, so a CUDA that cannot start is a failure."""
    monkeypatch.setattr(smoke, "device_nodes", lambda: ["nvidia0", "nvidiactl"])
    gpu_check = next(c for c in smoke.CHECKS if c.name == "gpu_nccl")
    status, detail = smoke.precheck(gpu_check, _no_gpu_context())
    assert status == "fail" and detail.startswith("/dev/nvidiactl is present but CUDA cannot start")


def test_gpu_visible_keeps_the_reason() -> None:
    ctx = smoke.Context(cell=smoke.parse_cell(_cuda_cell()), torch_error="ModuleNotFoundError: torch")
    assert smoke.gpu_visible(ctx) == (False, "torch did not import")
    assert smoke.probe_gpu(ctx) is False and ctx.gpu_reason == "torch did not import"


def test_a_multi_platform_cell_expects_the_gpu_architectures_of_the_cpu_it_runs_on() -> None:
    """An arm64 image is judged by the aarch64 wheel's arch list, never by amd64's (a false failure)."""
    data = {
        **_cuda_cell(),
        "gpu_archs": ["sm_75", "sm_86", "sm_90"],
        "gpu_archs_by_machine": {"x86_64": ["sm_75", "sm_86", "sm_90"], "aarch64": ["sm_90", "sm_100"]},
    }
    assert smoke.parse_cell(data, machine="aarch64").gpu_archs == ["sm_90", "sm_100"]
    assert smoke.parse_cell(data, machine="x86_64").gpu_archs == ["sm_75", "sm_86", "sm_90"]
    assert smoke.parse_cell(data, machine="ppc64le").gpu_archs == ["sm_75", "sm_86", "sm_90"]
    with pytest.raises(smoke.CellError):
        smoke.parse_cell({**data, "gpu_archs_by_machine": {"aarch64": "sm_90"}}, machine="aarch64")
