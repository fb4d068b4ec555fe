"""In-image smoke suite: checks an image against the expected values in its cell.json.

Shipped into every image as /opt/pytorch-cuda-images/smoke.py and run there as

    python smoke.py --cell /opt/pytorch-cuda-images/cell.json [--require-gpu]
                    [--json-out FILE] [--json] [--timeout 300]

Self-contained on purpose: stdlib only at import time; torch, torchvision, torchaudio and
numpy are imported inside the checks. It never imports `builder`.

Exit codes: 0 no check failed, 1 a check failed (or the suite timed out), 2 bad arguments
or an unreadable cell.json.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import faulthandler
import importlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import re
import shutil
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PASS = "pass"
WARN = "warn"  # works, with a limit worth knowing; never fails the suite
FAIL = "fail"
SKIPPED = "skipped"

NO_GPU = "no GPU visible"
REQUIRE_GPU_LINE = "no GPU visible but --require-gpu was given"
DRIVER_TOO_OLD = "driver too old"

# The in-suite watchdog reports at --timeout; when a check holds the GIL (stuck in C) it cannot run, and
# faulthandler's own thread dumps the tracebacks and exits this much later. The host gives the container
# more time than both (builder/build/gate.py), so whatever the suite reports reaches it.
BACKSTOP_S = 10.0
# With --progress each check's start and result go to stderr as one JSON line after this prefix, so the
# host can rebuild a partial report when the suite itself could not print one.
PROGRESS_PREFIX = "smoke-progress "

# Lowest driver for any CUDA <major>.x build (minor-version compatibility). A copy of
# builder/resources/compat.yaml `driver_compat.minor_version` (a unit test keeps the two equal): this
# file runs inside images, where the package is absent.
MINOR_VERSION_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580"}

Outcome = tuple[str, str]


class CellError(Exception):
    """cell.json is missing, unreadable or malformed (exit code 2)."""


# --------------------------------------------------------------------------- cell.json


@dataclass(frozen=True)
class Cell:
    """Expected values for one image, as written to cell.json by the renderer."""

    tag: str
    variant: str
    python: str
    torch: str
    torchvision: str | None
    torchaudio: str | None
    cuda: str | None
    cudnn_major: int | None
    min_driver: str | None
    gpu_archs: list[str]


def _field(data: dict[str, Any], key: str, kind: type, optional: bool) -> Any:
    """One typed field of cell.json; raises CellError when missing or of the wrong type."""
    if key not in data:
        if optional:
            return None
        raise CellError(f"missing key {key!r}")
    value = data[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CellError(f"key {key!r} must be {kind.__name__}, got {value!r}")
    return value


def parse_cell(data: object, machine: str | None = None) -> Cell:
    """Validate the decoded cell.json; a multi-platform cell's GPU architectures are those of `machine`
    (`uname -m`, this CPU by default)."""
    if not isinstance(data, dict):
        raise CellError("top level must be a JSON object")
    archs = _field(data, "gpu_archs", list, optional=True) or []
    by_machine = _field(data, "gpu_archs_by_machine", dict, optional=True) or {}
    archs = by_machine.get(machine or platform.machine(), archs)
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise CellError("gpu_archs must be a list of strings")
    cell = Cell(
        tag=_field(data, "tag", str, optional=False),
        variant=_field(data, "variant", str, optional=False),
        python=_field(data, "python", str, optional=False),
        torch=_field(data, "torch", str, optional=False),
        torchvision=_field(data, "torchvision", str, optional=True),
        torchaudio=_field(data, "torchaudio", str, optional=True),
        cuda=_field(data, "cuda", str, optional=True),
        cudnn_major=_field(data, "cudnn_major", int, optional=True),
        min_driver=_field(data, "min_driver", str, optional=True),
        gpu_archs=list(archs),
    )
    if cell.cuda is not None and cell.cudnn_major is None:
        raise CellError("a CUDA cell needs cudnn_major")
    return cell


def load_cell(path: str) -> Cell:
    """Read and validate cell.json."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CellError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CellError(f"{path} is not valid JSON: {exc}") from exc
    return parse_cell(data)


# --------------------------------------------------------------------------- pure helpers


def public_version(version: str) -> str:
    """Public part of a version: '2.13.0+cpu' -> '2.13.0'."""
    return version.split("+", 1)[0].strip()


def _release(version: str) -> tuple[int, ...]:
    """Numeric release tuple without trailing zeros; ValueError for non-numeric parts."""
    parts = [int(p) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def versions_equal(actual: str, expected: str) -> bool:
    """Compare on the public part; '2.13.0+cpu' == '2.13.0' and '2.13' == '2.13.0'."""
    a, e = public_version(actual), public_version(expected)
    if a == e:
        return True
    try:
        return _release(a) == _release(e)
    except ValueError:
        return False


def major_minor(version: str) -> str:
    """'3.11.9' -> '3.11'."""
    return ".".join(version.strip().split(".")[:2])


def version_tuple(version: str) -> tuple[int, ...]:
    """'580.65.06' -> (580, 65, 6)."""
    return tuple(int(p) for p in re.findall(r"\d+", version))


def cudnn_major(version: int) -> int:
    """Major of torch.backends.cudnn.version(): 92400 -> 9, 90100 -> 9, 8902 -> 8."""
    return version // 10000 if version >= 10000 else version // 1000


def format_cudnn(version: int) -> str:
    """92400 -> '9.24.0', 8902 -> '8.9.2'."""
    if version >= 10000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


def nccl_version_from_int(code: int) -> tuple[int, int, int]:
    """Decode ncclGetVersion(): 22707 -> (2, 27, 7); pre-2.9 codes 2804 -> (2, 8, 4)."""
    if code >= 10000:
        return (code // 10000, code % 10000 // 100, code % 100)
    return (code // 1000, code % 1000 // 100, code % 100)


def parse_arch(entry: str) -> tuple[str, int, str] | None:
    """'sm_90a' -> ('sm', 90, 'a'); 'compute_120' -> ('compute', 120, ''); None if unknown."""
    m = re.fullmatch(r"(sm|compute)_(\d+)([a-z]?)", entry.strip())
    if m is None:
        return None
    return m.group(1), int(m.group(2)), m.group(3)


def arch_covered(capability: tuple[int, int], arch_list: Sequence[str]) -> str | None:
    """Entry of arch_list that runs on a device of this capability, or None.

    Covered by: the exact sm_XY; an sm_XZ cubin of the same major with Z <= Y (binary
    compatible, e.g. sm_86 on an sm_89 L4); or a compute_XY PTX entry <= capability (JIT).
    Arch-specific entries (sm_90a) only match exactly.
    """
    major, minor = capability
    cap = major * 10 + minor
    best: tuple[int, int, str] | None = None  # (preference, number, entry); highest wins
    for entry in arch_list:
        parsed = parse_arch(entry)
        if parsed is None:
            continue
        kind, num, suffix = parsed
        if kind == "sm" and num == cap:
            rank = 2  # exact cubin
        elif kind == "sm" and not suffix and num // 10 == major and num < cap:
            rank = 1  # same-major cubin
        elif kind == "compute" and not suffix and num <= cap:
            rank = 0  # PTX, JIT-compiled by the driver
        else:
            continue
        if best is None or (rank, num) > best[:2]:
            best = (rank, num, entry)
    return None if best is None else best[2]


def missing_archs(expected: Sequence[str], arch_list: Sequence[str]) -> list[str]:
    """Entries of the cell's gpu_archs that the compiled arch list lacks."""
    return [a for a in expected if a not in arch_list]


def parse_driver_text(text: str) -> str | None:
    """Driver version from nvidia-smi csv output or /proc/driver/nvidia/version."""
    for line in text.splitlines():
        line = line.strip()
        if re.fullmatch(r"\d+\.\d+(\.\d+)?", line):
            return line
        m = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", line + " ")
        if m:
            return m.group(1)
    return None


def driver_older(found: str, minimum: str) -> bool:
    """True when the found driver version is older than the minimum."""
    return version_tuple(found) < version_tuple(minimum)


def minor_version_driver(cuda: str) -> str | None:
    """Lowest driver that runs a CUDA `cuda` build through minor-version compatibility."""
    return MINOR_VERSION_DRIVER.get(cuda.split(".")[0])


def driver_verdict(
    cuda: str,
    driver: str,
    min_driver: str,
    *,
    floor: str | None,
    archs: Sequence[str] = (),
    coverage: Sequence[tuple[str, str | None]] | None = None,
    driver_cuda: str | None = None,
) -> Outcome:
    """Whether a CUDA `cuda` build runs on `driver`: pass, warn (runs, with limits) or fail.

    min_driver: the toolkit's release driver (everything works from there on). floor: the
    minor-version compatibility floor of CUDA's major; between the two a build runs where it has
    SASS for the GPU, but PTX cannot be JIT-compiled. coverage: (sm_XY, covering arch entry) per
    visible GPU, None when no GPU is visible. driver_cuda: the CUDA version libcuda reports, which a
    forward-compatibility package raises above the kernel driver's own.
    """
    if not driver_older(driver, min_driver):
        return PASS, f"driver {driver} >= {min_driver}"
    if driver_cuda is not None and version_tuple(driver_cuda) >= version_tuple(cuda):
        return WARN, (
            f"driver {driver} < {min_driver}, but libcuda reports CUDA {driver_cuda}: a forward-"
            "compatibility package is in use (NVIDIA supports it on data-center GPUs only)"
        )
    if floor is None or driver_older(driver, floor):
        return FAIL, f"driver {driver} is older than the minimum {min_driver} for CUDA {cuda}"
    major = cuda.split(".")[0]
    limits = f"runs through CUDA {major}.x minor-version compatibility (driver >= {floor})"
    if coverage is None:
        return WARN, (
            f"driver {driver} < {min_driver} (CUDA {cuda}'s release driver): {limits} on GPUs this "
            f"build has SASS for ({' '.join(archs) or 'none listed'}); a GPU that needs PTX JIT needs "
            f">= {min_driver}"
        )
    jit = [
        f"{sm} (only {entry})" for sm, entry in coverage if entry is not None and entry.startswith("compute_")
    ]
    if jit:
        return FAIL, (
            f"driver {driver} < {min_driver}: {', '.join(jit)} needs PTX JIT, which minor-version "
            f"compatibility does not give; update the driver to >= {min_driver}"
        )
    sass = sorted({sm for sm, entry in coverage if entry is not None})
    return WARN, (
        f"driver {driver} < {min_driver} (CUDA {cuda}'s release driver): {limits}, with SASS for "
        f"{' '.join(sass) or 'no visible GPU'}; PTX JIT and features that need a newer driver are unavailable"
    )


def nccl_pin(requires: Sequence[str]) -> tuple[int, int, int] | None:
    """The nvidia-nccl-cuXX==X.Y.Z pin among a wheel's Requires-Dist lines, as (X, Y, Z)."""
    for requirement in requires:
        m = re.match(r"\s*nvidia-nccl-cu\d+\s*==\s*(\d+)\.(\d+)\.(\d+)", requirement)
        if m:
            return int(m.group(1)), int(m.group(2)), int(m.group(3))
    return None


def _dotted(version: Sequence[int]) -> str:
    return ".".join(map(str, version))


def nccl_outcome(
    loaded: tuple[int, int, int],
    pinned: tuple[int, int, int] | None,
    compiled: tuple[int, int, int],
    path: str,
) -> Outcome:
    """The loaded libnccl against the wheel's pin; without a pin, not older than torch's build-time NCCL.

    torch.cuda.nccl.version() is the version torch was compiled with; the wheel may pin (and load) a
    newer one (pytorch/builder#1666: built with 2.18.1, pinned 2.19.3), so it is never compared exactly.
    """
    built = f"torch was built with {_dotted(compiled)}"
    if pinned is not None:
        if loaded != pinned:
            return (
                FAIL,
                f"{path} is NCCL {_dotted(loaded)} but the torch wheel pins {_dotted(pinned)} ({built})",
            )
        return PASS, f"NCCL {_dotted(loaded)} ({path}) as the wheel pins; {built}"
    if loaded[0] != compiled[0] or loaded < compiled:
        return FAIL, f"{path} is NCCL {_dotted(loaded)}, older than the NCCL {_dotted(compiled)} {built[6:]}"
    return PASS, f"NCCL {_dotted(loaded)} ({path}); {built}; the wheel pins no NCCL"


# NCCL 2.23 and later create a CUDA memory pool when a communicator is made (cudaMemPoolCreate in
# src/init.cc, unconditional up to 2.30 and not switched off by any NCCL_* variable); devices without
# memory-pool support (vGPU profiles, MIG slices under vGPU) fail there: NVIDIA/nccl#2101.
NCCL_MEM_POOL_SINCE = (2, 23, 0)


def device_kind(name: str) -> str:
    """'MIG slice', 'vGPU' or 'GPU', from the CUDA device name."""
    if re.search(r"\bMIG\b", name):
        return "MIG slice"
    if name.startswith("GRID ") or re.search(r"-\d+[ABCQ]$", name):
        return "vGPU"
    return "GPU"


def mem_pool_skip(nccl: tuple[int, int, int], devices: Sequence[tuple[str, bool | None]]) -> str | None:
    """Why the NCCL check cannot run (an NCCL that needs memory pools, devices without them), else None."""
    lacking = [f"{name} ({device_kind(name)})" for name, pools in devices if pools is False]
    if nccl < NCCL_MEM_POOL_SINCE or not lacking:
        return None
    return (
        f"NCCL {_dotted(nccl)} creates a CUDA memory pool at init (NCCL >= 2.23), which {', '.join(lacking)} "
        "does not support (cudaDevAttrMemoryPoolsSupported = 0): NVIDIA/nccl#2101"
    )


MIN_TRITON_CAPABILITY = (7, 0)


def compile_unsupported(capability: tuple[int, int]) -> str | None:
    """Why torch.compile cannot run on this device (Inductor's GPUTooOldForTriton), else None."""
    if tuple(capability) >= MIN_TRITON_CAPABILITY:
        return None
    major, minor = capability
    return f"torch.compile (Inductor, Triton) needs compute capability >= 7.0; device is sm_{major}{minor}"


def too_old_for_triton(exc: BaseException) -> bool:
    """Whether Inductor's GPUTooOldForTriton is in the exception's chain."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if type(seen).__name__ == "GPUTooOldForTriton":
            return True
        seen = getattr(seen, "inner_exception", None) or seen.__cause__ or seen.__context__
    return False


# Fused attention kernels that must run where torch ships them for the device: memory-efficient
# everywhere, flash on sm_80 to sm_90. cuDNN attention (and flash elsewhere) are checked when present.
SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")
SDPA_TOLERANCE = {"float16": 1e-2, "bfloat16": 4e-2}  # max |error| / max |fp32 math reference|


def required_sdpa_backends(capability: tuple[int, int]) -> tuple[str, ...]:
    if (8, 0) <= tuple(capability) < (10, 0):
        return ("FLASH_ATTENTION", "EFFICIENT_ATTENTION")
    return ("EFFICIENT_ATTENTION",)


def half_dtypes(capability: tuple[int, int]) -> tuple[str, ...]:
    """16-bit dtypes the device computes in: bf16 from sm_80 on."""
    return ("bfloat16", "float16") if tuple(capability) >= (8, 0) else ("float16",)


def loss_problem(losses: Sequence[float]) -> str | None:
    """What is wrong with a short training run's losses (non-finite, or no decrease), else None."""
    shown = ", ".join(f"{loss:.4g}" for loss in losses)
    if not losses or any(loss != loss or loss in (float("inf"), float("-inf")) for loss in losses):
        return f"non-finite loss: [{shown}]"
    if losses[-1] >= losses[0]:
        return f"loss did not decrease: [{shown}]"
    return None


CUDA_HINTS = (
    ("802", "NVSwitch systems (HGX, DGX) need nvidia-fabricmanager running, at the driver's version"),
    ("system not yet initialized", "NVSwitch systems (HGX, DGX) need nvidia-fabricmanager running"),
    ("too old", "update the host driver"),
)


def explain_cuda_error(reason: str, device_nodes: Sequence[str]) -> str:
    """CUDA's initialisation error with what usually causes it (fabric manager, missing device nodes)."""
    hints = []
    for needle, hint in CUDA_HINTS:
        if needle in reason and hint not in hints:
            hints.append(hint)
            break
    if "nvidiactl" in device_nodes and "nvidia-uvm" not in device_nodes:
        hints.append("/dev/nvidia-uvm is missing: load nvidia-uvm on the host (nvidia-modprobe -u -c=0)")
    if not any(node == "nvidiactl" or re.fullmatch(r"nvidia\d+", node) for node in device_nodes):
        hints.append("no /dev/nvidia* device here")
    return "; ".join([reason, *hints])


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _import(name: str) -> Any:
    """Import a third-party module lazily (typed Any, so no stubs are needed)."""
    return importlib.import_module(name)


def _short(exc: BaseException, limit: int = 300) -> str:
    """One-line description of an exception."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[-1] if lines else ''}".strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _site_dirs() -> list[str]:
    """site-packages directories plus sys.path entries, existing ones, in order."""
    dirs: list[str] = []
    candidates = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    for d in [*candidates, *sys.path]:
        if d and d not in dirs and os.path.isdir(d):
            dirs.append(d)
    return dirs


def find_shared_lib(stem: str) -> str | None:
    """Path of `stem`.so* mapped into this process, else one under site-packages nvidia/."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and os.path.basename(fields[5]).startswith(f"{stem}.so"):
            return fields[5]
    for base in _site_dirs():
        found = sorted(Path(base, "nvidia").glob(f"**/lib/{stem}.so*"))
        if found:
            return str(found[0])
    return None


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What the checks read (cell, flags) and what earlier checks learned."""

    cell: Cell
    require_gpu: bool = False
    gpus_requested: bool = False  # the host asked the engine for GPUs (--gpus-requested)
    torch_error: str | None = None
    driver_too_old: bool = False
    gpu: bool | None = None  # set by probe_gpu, before the first GPU check
    gpu_reason: str = ""  # why no GPU is usable (CUDA's own error where there is one)

    @property
    def is_cuda(self) -> bool:
        return self.cell.cuda is not None


def device_nodes() -> list[str]:
    """NVIDIA device nodes in /dev (nvidiactl, nvidia0, nvidia-uvm, ...)."""
    try:
        return sorted(name for name in os.listdir("/dev") if name.startswith("nvidia"))
    except OSError:
        return []


def _cuda_init_error(torch: Any, warned: Sequence[str]) -> str:
    """CUDA's start-up error: torch's 'CUDA initialization' warning, else what torch.cuda.init() raises."""
    reason = "torch.cuda.device_count() is 0"
    for message in warned:
        if "CUDA initialization" in message or "driver" in message.lower():
            reason = re.sub(r"\s*\(Triggered internally at .*\)\s*$", "", message.strip(), flags=re.S)
            break
    else:
        try:
            torch.cuda.init()
        except Exception as exc:
            reason = _short(exc)
    return re.sub(r"\.\s+Please .*$", "", reason, flags=re.S)  # torch's advice to install a driver


def gpu_visible(ctx: Context) -> tuple[bool, str]:
    """Whether torch can use a CUDA device, and if not, why (the reason is kept for the report)."""
    if ctx.torch_error is not None:
        return False, "torch did not import"
    try:
        torch = _import("torch")
        if torch.version.cuda is None:
            return False, "torch is a CPU build"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            count = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
        if count > 0:
            return True, f"{count} GPU(s)"
        reason = _cuda_init_error(torch, [str(w.message) for w in caught])
    except Exception as exc:
        reason = _short(exc)
    return False, explain_cuda_error(reason, device_nodes())


def probe_gpu(ctx: Context) -> bool:
    """gpu_visible, asked once."""
    if ctx.gpu is None:
        ctx.gpu, ctx.gpu_reason = gpu_visible(ctx)
    return ctx.gpu


def gpu_expected(ctx: Context) -> str | None:
    """Why this run should have a GPU (the host asked for one, or NVIDIA device nodes are here), else None."""
    if ctx.gpus_requested:
        return "GPUs were requested for this container"
    if "nvidiactl" in device_nodes():
        return "/dev/nvidiactl is present"
    return None


def _libcuda() -> Any | None:
    """The driver's libcuda (None without one)."""
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


def libcuda_version() -> str | None:
    """CUDA version the loaded libcuda supports ('12.2'); a forward-compatibility package raises it."""
    lib = _libcuda()
    code = ctypes.c_int(0)
    if lib is None or lib.cuDriverGetVersion(ctypes.byref(code)) != 0 or code.value <= 0:
        return None
    return f"{code.value // 1000}.{code.value % 1000 // 10}"


CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED = 115


def memory_pools_supported(ordinal: int) -> bool | None:
    """cudaDevAttrMemoryPoolsSupported of a visible device, through libcuda; None when it cannot be asked."""
    lib = _libcuda()
    device, value = ctypes.c_int(0), ctypes.c_int(0)
    if lib is None or lib.cuInit(0) != 0 or lib.cuDeviceGet(ctypes.byref(device), ordinal) != 0:
        return None
    if lib.cuDeviceGetAttribute(ctypes.byref(value), CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, device) != 0:
        return None
    return bool(value.value)


# --------------------------------------------------------------------------- checks


def check_python(ctx: Context) -> Outcome:
    """Interpreter major.minor equals the cell's python."""
    found = f"{sys.version_info.major}.{sys.version_info.minor}"
    if found == major_minor(ctx.cell.python):
        return PASS, f"python {sys.version.split()[0]} ({platform.machine()})"
    return FAIL, f"python {found} != expected {ctx.cell.python}"


def check_torch(ctx: Context) -> Outcome:
    """torch imports and its public version equals the cell's."""
    try:
        torch = _import("torch")
    except Exception as exc:
        ctx.torch_error = _short(exc)
        return FAIL, f"import torch failed: {ctx.torch_error}"
    found = str(torch.__version__)
    if versions_equal(found, ctx.cell.torch):
        return PASS, f"torch {found}"
    return FAIL, f"torch {found} != expected {ctx.cell.torch}"


def _check_package(name: str, expected: str | None) -> Outcome:
    """A companion package (torchvision/torchaudio) has the expected public version."""
    if expected is None:
        return SKIPPED, "not expected in this cell"
    try:
        module = _import(name)
    except Exception as exc:
        return FAIL, f"import {name} failed: {_short(exc)}"
    found = str(module.__version__)
    if versions_equal(found, expected):
        return PASS, f"{name} {found}"
    return FAIL, f"{name} {found} != expected {expected}"


def check_torchvision(ctx: Context) -> Outcome:
    """torchvision version when the cell expects it."""
    return _check_package("torchvision", ctx.cell.torchvision)


def check_torchaudio(ctx: Context) -> Outcome:
    """torchaudio version when the cell expects it."""
    return _check_package("torchaudio", ctx.cell.torchaudio)


def check_numpy(ctx: Context) -> Outcome:
    """numpy imports and round-trips through torch."""
    np = _import("numpy")
    torch = _import("torch")
    back = torch.from_numpy(np.arange(6, dtype=np.float32)).mul(2).numpy()
    if back.tolist() != [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]:
        return FAIL, f"numpy round trip gave {back.tolist()}"
    return PASS, f"numpy {np.__version__}"


def check_cuda_version(ctx: Context) -> Outcome:
    """torch.version.cuda equals the cell's cuda (None for cpu cells)."""
    found = _import("torch").version.cuda
    expected = ctx.cell.cuda
    if expected is None:
        ok = found is None
    else:
        ok = found is not None and major_minor(str(found)) == major_minor(expected)
    detail = f"torch.version.cuda {found!r}"
    return (PASS, detail) if ok else (FAIL, f"{detail} != expected {expected!r}")


def check_cudnn(ctx: Context) -> Outcome:
    """cuDNN is available with the expected major; the wheel's libcudnn loads via ctypes."""
    if not ctx.is_cuda:
        return SKIPPED, "cpu cell"
    torch = _import("torch")
    if not torch.backends.cudnn.is_available():
        return FAIL, "torch.backends.cudnn.is_available() is False"
    version = torch.backends.cudnn.version()
    if version is None:
        return FAIL, "torch.backends.cudnn.version() is None"
    if cudnn_major(int(version)) != ctx.cell.cudnn_major:
        return FAIL, f"cuDNN {format_cudnn(int(version))} major != {ctx.cell.cudnn_major}"
    path = find_shared_lib("libcudnn")
    if path is None:
        return FAIL, "libcudnn.so.* not found (site-packages nvidia/**/lib or loaded by torch)"
    lib = ctypes.CDLL(path)
    lib.cudnnGetVersion.restype = ctypes.c_size_t
    lib_version = int(lib.cudnnGetVersion())
    if cudnn_major(lib_version) != ctx.cell.cudnn_major:
        return FAIL, f"{path} reports cuDNN {format_cudnn(lib_version)}"
    return PASS, f"cuDNN {format_cudnn(int(version))}; {path} reports {format_cudnn(lib_version)}"


def check_nccl(ctx: Context) -> Outcome:
    """The libnccl this process loads is the one the torch wheel pins (ncclGetVersion via ctypes)."""
    if not ctx.is_cuda:
        return SKIPPED, "cpu cell"
    torch = _import("torch")
    major, minor, patch = (int(p) for p in torch.cuda.nccl.version()[:3])
    path = find_shared_lib("libnccl")
    if path is None:
        return FAIL, "libnccl.so.* not found (site-packages nvidia/**/lib or loaded by torch)"
    lib = ctypes.CDLL(path)
    code = ctypes.c_int(0)
    rc = lib.ncclGetVersion(ctypes.byref(code))
    if rc != 0:
        return FAIL, f"ncclGetVersion in {path} returned error {rc}"
    try:
        requires = importlib.metadata.requires("torch") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    return nccl_outcome(nccl_version_from_int(code.value), nccl_pin(requires), (major, minor, patch), path)


def compiled_arch_list(torch: Any) -> list[str]:
    """Architectures the torch wheel was compiled for, with or without a visible GPU.

    Up to torch 2.12, torch.cuda.get_arch_list() returns [] when no GPU is visible
    (pytorch/pytorch#169414); torch._C._cuda_getArchFlags() has given the compiled list
    without a GPU since torch 1.6, so it is asked first.
    """
    arch_flags = getattr(torch._C, "_cuda_getArchFlags", None)
    flags = arch_flags() if callable(arch_flags) else None
    if flags:
        return str(flags).split()
    return list(torch.cuda.get_arch_list())


def check_arch_list(ctx: Context) -> Outcome:
    """The wheel's compiled arch list covers every entry of the cell's gpu_archs."""
    if not ctx.is_cuda:
        return SKIPPED, "cpu cell"
    arch_list = compiled_arch_list(_import("torch"))
    missing = missing_archs(ctx.cell.gpu_archs, arch_list)
    if missing:
        return FAIL, f"missing {' '.join(missing)} in arch list [{' '.join(arch_list)}]"
    return PASS, " ".join(arch_list)


def check_env(ctx: Context) -> Outcome:
    """NVIDIA_* runtime variables set for CUDA cells; CUDA_VISIBLE_DEVICES never baked in."""
    problems = []
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        value = os.environ["CUDA_VISIBLE_DEVICES"]
        problems.append(f"CUDA_VISIBLE_DEVICES={value!r} is set inside the image")
    if ctx.is_cuda:
        for name in ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"):
            if not os.environ.get(name):
                problems.append(f"{name} is not set")
    if problems:
        return FAIL, "; ".join(problems)
    if ctx.is_cuda:
        return PASS, (
            f"NVIDIA_VISIBLE_DEVICES={os.environ['NVIDIA_VISIBLE_DEVICES']} "
            f"NVIDIA_DRIVER_CAPABILITIES={os.environ['NVIDIA_DRIVER_CAPABILITIES']}"
        )
    return PASS, "CUDA_VISIBLE_DEVICES unset"


def read_driver_version() -> str | None:
    """Driver version from nvidia-smi, else /proc/driver/nvidia/version; None if absent."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout
            found = parse_driver_text(out)
            if found:
                return found
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return parse_driver_text(Path("/proc/driver/nvidia/version").read_text())
    except OSError:
        return None


def _coverage(ctx: Context) -> list[tuple[str, str | None]] | None:
    """(sm_XY, covering arch entry) per visible GPU; None when no GPU is usable."""
    if not probe_gpu(ctx):
        return None
    torch = _import("torch")
    arch_list = compiled_arch_list(torch)
    coverage = []
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        coverage.append((f"sm_{major}{minor}", arch_covered((major, minor), arch_list)))
    return coverage


def check_driver(ctx: Context) -> Outcome:
    """The host driver runs this CUDA build: at its release driver, or through minor-version compatibility."""
    found = read_driver_version()
    if found is None:
        return SKIPPED, "no NVIDIA driver found"
    if not ctx.is_cuda or ctx.cell.cuda is None or ctx.cell.min_driver is None:
        return SKIPPED, f"cpu cell (driver {found})"
    status, detail = driver_verdict(
        ctx.cell.cuda,
        found,
        ctx.cell.min_driver,
        floor=minor_version_driver(ctx.cell.cuda),
        archs=ctx.cell.gpu_archs,
        coverage=_coverage(ctx),
        driver_cuda=libcuda_version(),
    )
    ctx.driver_too_old = status == FAIL
    return status, detail


def check_gpu_devices(ctx: Context) -> Outcome:
    """Device count, names and capabilities; each capability is covered by the arch list."""
    torch = _import("torch")
    arch_list = compiled_arch_list(torch)
    seen: list[str] = []
    uncovered: list[str] = []
    for i in range(torch.cuda.device_count()):
        cap = tuple(torch.cuda.get_device_capability(i))
        sm = f"sm_{cap[0]}{cap[1]}"
        covered = arch_covered((cap[0], cap[1]), arch_list)
        seen.append(f"{i}: {torch.cuda.get_device_name(i)} {sm} via {covered}")
        if covered is None:
            uncovered.append(sm)
    detail = f"{len(seen)} GPU(s): " + "; ".join(seen)
    if uncovered:
        return FAIL, f"{' '.join(uncovered)} not in arch list [{' '.join(arch_list)}]; {detail}"
    return PASS, detail


def _disable_tf32(torch: Any) -> None:
    """Full fp32 in cuBLAS and cuDNN, so GPU results are comparable with the CPU."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def check_matmul_fp32(ctx: Context) -> Outcome:
    """fp32 matmul on the GPU (TF32 off) matches the CPU."""
    torch = _import("torch")
    _disable_tf32(torch)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 256, generator=gen), torch.randn(256, 256, generator=gen)
    expected = a @ b
    got = (a.cuda() @ b.cuda()).cpu()
    err = float((got - expected).abs().max())
    if torch.allclose(got, expected, rtol=1e-3, atol=1e-3):
        return PASS, f"256x256 fp32, max abs err {err:.2e}"
    return FAIL, f"256x256 fp32 differs from CPU, max abs err {err:.2e}"


def check_matmul_bf16(ctx: Context) -> Outcome:
    """bf16 matmul on the GPU matches the CPU fp32 product of the bf16-rounded inputs."""
    torch = _import("torch")
    major, minor = torch.cuda.get_device_capability(0)
    if major < 8:
        return SKIPPED, f"bf16 needs sm_80+, device is sm_{major}{minor}"
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(256, 256, generator=gen).bfloat16()
    b = torch.randn(256, 256, generator=gen).bfloat16()
    expected = a.float() @ b.float()
    got = (a.cuda() @ b.cuda()).float().cpu()
    scale = float(expected.abs().max())
    err = float((got - expected).abs().max())
    if torch.allclose(got, expected, rtol=2e-2, atol=2e-2 * scale):
        return PASS, f"256x256 bf16, max abs err {err:.2e} (max |value| {scale:.1f})"
    return FAIL, f"256x256 bf16 differs from CPU, max abs err {err:.2e} (max |value| {scale:.1f})"


def check_conv2d(ctx: Context) -> Outcome:
    """cuDNN conv2d forward matches the CPU; backward gives finite grads of the right shape."""
    torch = _import("torch")
    functional = _import("torch.nn.functional")
    _disable_tf32(torch)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 32, 32, generator=gen)
    w = torch.randn(8, 3, 3, 3, generator=gen)
    bias = torch.randn(8, generator=gen)
    expected = functional.conv2d(x, w, bias, padding=1)
    xg = x.cuda().requires_grad_()
    wg = w.cuda().requires_grad_()
    out = functional.conv2d(xg, wg, bias.cuda(), padding=1)
    uses_cudnn = bool(torch.backends.cudnn.is_acceptable(xg))
    if not torch.allclose(out.detach().cpu(), expected, rtol=1e-3, atol=1e-3):
        err = float((out.detach().cpu() - expected).abs().max())
        return FAIL, f"forward differs from CPU, max abs err {err:.2e}"
    out.square().mean().backward()
    for name, t, grad in (("input", xg, xg.grad), ("weight", wg, wg.grad)):
        if grad is None or grad.shape != t.shape:
            return FAIL, f"{name} grad missing or wrong shape"
        if not bool(torch.isfinite(grad).all()):
            return FAIL, f"{name} grad has non-finite values"
    return PASS, f"forward == CPU, backward grads finite (cudnn acceptable: {uses_cudnn})"


def _relative_error(got: Any, reference: Any) -> float:
    """max |got - reference| / max |reference|, in fp32."""
    scale = float(reference.abs().max()) or 1.0
    return float((got.float() - reference).abs().max()) / scale


def sdpa_error(torch: Any, device: str, dtype: str, backend: str) -> float | None:
    """Causal attention forward and backward on one backend against the fp32 math backend.

    The largest relative error over the output and the three input gradients; None when torch has no
    kernel of that backend for this device, dtype or shape.
    """
    functional = _import("torch.nn.functional")
    attention = _import("torch.nn.attention")
    if not hasattr(attention.SDPBackend, backend):
        return None
    gen = torch.Generator().manual_seed(5)
    shape = (2, 4, 256, 64)
    inputs = [torch.randn(shape, generator=gen).to(getattr(torch, dtype)) for _ in range(3)]
    grad = torch.randn(shape, generator=gen).to(getattr(torch, dtype))

    def run(tensors: list[Any], kernel: str, grad_out: Any) -> list[Any]:
        leaves = [t.to(device).detach().requires_grad_() for t in tensors]
        with attention.sdpa_kernel(getattr(attention.SDPBackend, kernel)):
            out = functional.scaled_dot_product_attention(*leaves, is_causal=True)
        out.backward(grad_out.to(device))
        return [out.detach(), *(leaf.grad for leaf in leaves)]

    reference = run([t.float() for t in inputs], "MATH", grad.float())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns why each unavailable kernel was not used
        try:
            got = run(inputs, backend, grad)
        except RuntimeError as exc:
            if "No available kernel" in str(exc) or "No viable backend" in str(exc):
                return None
            raise
    return max(_relative_error(g, r) for g, r in zip(got, reference, strict=True))


def check_sdpa(ctx: Context) -> Outcome:
    """Scaled-dot-product attention (flash, memory-efficient, cuDNN) in fp16/bf16, forward and backward."""
    torch = _import("torch")
    rows: list[str] = []
    problems: list[str] = []
    for i in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(i)
        required = required_sdpa_backends((major, minor))
        for dtype in half_dtypes((major, minor)):
            parts = []
            for backend in SDPA_BACKENDS:
                short = backend.split("_")[0].lower()
                err = sdpa_error(torch, f"cuda:{i}", dtype, backend)
                if err is None:
                    parts.append(f"{short} n/a")
                    if backend in required:
                        problems.append(f"cuda:{i} sm_{major}{minor} {dtype}: no {short} kernel")
                    continue
                parts.append(f"{short} {err:.1e}")
                if err > SDPA_TOLERANCE[dtype]:
                    problems.append(f"cuda:{i} {dtype} {short} differs from math by {err:.1e}")
            rows.append(f"cuda:{i} {dtype}: " + ", ".join(parts))
    if problems:
        return FAIL, "; ".join(problems)
    return PASS, "fwd+bwd vs fp32 math, max rel err: " + "; ".join(rows)


def train_losses(torch: Any, device: str, dtype: str, steps: int = 8) -> list[float]:
    """Losses of a small MLP trained under autocast(`dtype`) with fused AdamW (GradScaler for fp16)."""
    device_type = device.split(":")[0]
    gen = torch.Generator().manual_seed(6)
    layers = [torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 16)]
    with torch.no_grad():
        for layer in layers[::2]:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * 0.05)
            layer.bias.zero_()
    model = torch.nn.Sequential(*layers).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == "float16")
    x = torch.randn(128, 64, generator=gen).to(device)
    y = torch.randn(128, 16, generator=gen).to(device)
    losses = []
    for _ in range(steps):
        with torch.autocast(device_type=device_type, dtype=getattr(torch, dtype)):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss.detach()))
    return losses


def check_train_step(ctx: Context) -> Outcome:
    """An autocast training run with fused AdamW on every visible GPU: finite, decreasing loss."""
    torch = _import("torch")
    rows, problems = [], []
    for i in range(torch.cuda.device_count()):
        dtype = half_dtypes(torch.cuda.get_device_capability(i))[0]
        losses = train_losses(torch, f"cuda:{i}", dtype)
        problem = loss_problem(losses)
        if problem:
            problems.append(f"cuda:{i} {dtype}: {problem}")
        rows.append(f"cuda:{i} {dtype} loss {losses[0]:.3g} -> {losses[-1]:.3g}")
    if problems:
        return FAIL, "; ".join(problems)
    return PASS, "8 steps, autocast + fused AdamW: " + "; ".join(rows)


COLLECTIVE_BYTES = 64 << 20


def run_collectives(rank: int, world_size: int, port: int, backend: str = "nccl") -> None:
    """all_reduce, all_gather and broadcast of 64 MiB (float32) each; raises naming what came out wrong.

    backend "nccl" runs on GPU `rank`; "gloo" on the CPU (the same code, testable without a GPU).
    """
    torch = _import("torch")
    dist = _import("torch.distributed")
    device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        numel = COLLECTIVE_BYTES // 4
        problems = []
        summed = torch.full((numel,), float(rank + 1), device=device)
        dist.all_reduce(summed)
        expected = world_size * (world_size + 1) / 2
        if not bool((summed == expected).all()):
            problems.append(
                f"all_reduce gave {float(summed.min())}..{float(summed.max())}, expected {expected}"
            )
        parts = [torch.empty(numel, device=device) for _ in range(world_size)]
        dist.all_gather(parts, torch.full((numel,), float(rank + 1), device=device))
        wrong = [str(i) for i, part in enumerate(parts) if not bool((part == i + 1).all())]
        if wrong:
            problems.append(f"all_gather: wrong data from rank(s) {', '.join(wrong)}")
        reference = torch.arange(numel, dtype=torch.float32, device=device)
        sent = reference.clone() if rank == 0 else torch.zeros(numel, device=device)
        dist.broadcast(sent, src=0)
        if not bool(torch.equal(sent, reference)):
            problems.append("broadcast from rank 0 arrived changed")
        if backend == "nccl":
            torch.cuda.synchronize(device)
        if problems:
            raise RuntimeError(f"rank {rank}: " + "; ".join(problems))
    finally:
        dist.destroy_process_group()


def _collectives_worker(rank: int, world_size: int, port: int, backend: str) -> None:
    """torch.multiprocessing.spawn target."""
    run_collectives(rank, world_size, port, backend)


def spawn_collectives(world_size: int, backend: str = "nccl") -> None:
    """run_collectives in `world_size` processes (one per GPU for nccl)."""
    mp = _import("torch.multiprocessing")
    mp.spawn(_collectives_worker, args=(world_size, free_port(), backend), nprocs=world_size, join=True)


def check_nccl_collectives(ctx: Context) -> Outcome:
    """NCCL all_reduce, all_gather and broadcast of 64 MiB at world size 1, and one process per GPU."""
    torch = _import("torch")
    n = int(torch.cuda.device_count())
    major, minor, patch = (int(p) for p in torch.cuda.nccl.version()[:3])
    devices = [(torch.cuda.get_device_name(i), memory_pools_supported(i)) for i in range(n)]
    reason = mem_pool_skip((major, minor, patch), devices)
    if reason:
        return SKIPPED, reason
    run_collectives(0, 1, free_port())
    done = "all_reduce, all_gather, broadcast of 64 MiB"
    if n < 2:
        return PASS, f"{done} at world size 1 (1 GPU)"
    spawn_collectives(n)
    return PASS, f"{done} at world size 1 and {n} (one process per GPU)"


def _compile_probe(x: Any) -> Any:
    """Tiny function for the torch.compile check."""
    return x.sin() * 2 + x.cos() * x


def check_compile(ctx: Context) -> Outcome:
    """torch.compile of a tiny function on the GPU equals eager (skipped where Inductor has no backend)."""
    torch = _import("torch")
    too_old = compile_unsupported(torch.cuda.get_device_capability(0))
    if too_old:
        return SKIPPED, too_old
    x = torch.randn(1024, device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    compiled = torch.compile(_compile_probe)
    try:
        got = compiled(x)
    except Exception as exc:
        if too_old_for_triton(exc):
            return SKIPPED, f"GPUTooOldForTriton: {_short(exc)}"
        raise
    expected = _compile_probe(x)
    if torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        return PASS, "torch.compile == eager"
    return FAIL, f"torch.compile differs, max abs err {float((got - expected).abs().max()):.2e}"


INLINE_CPP = "torch::Tensor scaled_add(torch::Tensor x, torch::Tensor y, double alpha);"
INLINE_CUDA = r"""
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

__global__ void scaled_add_kernel(const float* x, const float* y, float* out, float alpha, int64_t n) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = alpha * x[i] + y[i];
}

torch::Tensor scaled_add(torch::Tensor x, torch::Tensor y, double alpha) {
  TORCH_CHECK(x.is_cuda() && y.is_cuda() && x.is_contiguous() && y.is_contiguous(), "contiguous CUDA inputs");
  auto out = torch::empty_like(x);
  const int64_t n = x.numel();
  const int threads = 256;
  const int blocks = static_cast<int>((n + threads - 1) / threads);
  scaled_add_kernel<<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(
      x.data_ptr<float>(), y.data_ptr<float>(), out.data_ptr<float>(), static_cast<float>(alpha), n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}
"""


@contextlib.contextmanager
def scoped_env(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of a block."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def check_cuda_extension(ctx: Context) -> Outcome:
    """A CUDA kernel built with torch.utils.cpp_extension.load_inline (the image's nvcc) runs correctly."""
    torch = _import("torch")
    cpp_extension = _import("torch.utils.cpp_extension")
    major, minor = torch.cuda.get_device_capability(0)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as build, scoped_env(TORCH_CUDA_ARCH_LIST=f"{major}.{minor}"):
        module = cpp_extension.load_inline(
            name="pci_smoke_scaled_add",
            cpp_sources=[INLINE_CPP],
            cuda_sources=[INLINE_CUDA],
            functions=["scaled_add"],
            build_directory=build,
            verbose=False,
        )
        gen = torch.Generator().manual_seed(7)
        x, y = torch.randn(100_003, generator=gen), torch.randn(100_003, generator=gen)
        got = module.scaled_add(x.cuda(), y.cuda(), 2.5).cpu()
    if not torch.allclose(got, 2.5 * x + y, rtol=1e-6, atol=1e-6):
        return FAIL, "load_inline kernel result differs from 2.5 * x + y"
    return PASS, f"built for sm_{major}{minor} and ran in {time.monotonic() - started:.1f} s"


def nms_inputs(torch: Any, count: int = 2000) -> tuple[Any, Any]:
    """Overlapping boxes (x1, y1, x2, y2) and scores for the nms check."""
    gen = torch.Generator().manual_seed(8)
    corner = torch.rand(count, 2, generator=gen) * 100
    size = torch.rand(count, 2, generator=gen) * 30 + 1
    return torch.cat([corner, corner + size], dim=1), torch.rand(count, generator=gen)


def check_torchvision_nms(ctx: Context) -> Outcome:
    """torchvision's CUDA nms keeps the boxes its CPU nms keeps (catches torch/torchvision mismatches)."""
    torch = _import("torch")
    ops = _import("torchvision.ops")
    boxes, scores = nms_inputs(torch)
    expected = ops.nms(boxes, scores, 0.5)
    got = ops.nms(boxes.cuda(), scores.cuda(), 0.5).cpu()
    if not bool(torch.equal(got, expected)):
        return FAIL, f"CUDA nms kept {len(got)} boxes, CPU nms {len(expected)}"
    return PASS, f"CUDA nms == CPU nms ({len(got)} of {len(boxes)} boxes kept)"


@dataclass(frozen=True)
class Check:
    """One named check and when it applies."""

    name: str
    func: Callable[[Context], Outcome]
    needs_torch: bool = True
    gpu: bool = False
    full_only: bool = False


CHECKS: list[Check] = [
    Check("python", check_python, needs_torch=False),
    Check("torch", check_torch, needs_torch=False),
    Check("torchvision", check_torchvision),
    Check("torchaudio", check_torchaudio),
    Check("numpy", check_numpy),
    Check("cuda_version", check_cuda_version),
    Check("cudnn", check_cudnn),
    Check("nccl_version", check_nccl),
    Check("arch_list", check_arch_list),
    Check("env", check_env, needs_torch=False),
    Check("driver", check_driver, needs_torch=False),
    Check("gpu_devices", check_gpu_devices, gpu=True),
    Check("gpu_matmul_fp32", check_matmul_fp32, gpu=True),
    Check("gpu_matmul_bf16", check_matmul_bf16, gpu=True),
    Check("gpu_conv2d", check_conv2d, gpu=True),
    Check("gpu_sdpa", check_sdpa, gpu=True),
    Check("gpu_train_step", check_train_step, gpu=True),
    Check("gpu_nccl", check_nccl_collectives, gpu=True),
    Check("gpu_compile", check_compile, gpu=True, full_only=True),
    Check("cuda_extension", check_cuda_extension, gpu=True, full_only=True),
    Check("torchvision_nms", check_torchvision_nms, gpu=True, full_only=True),
]


# --------------------------------------------------------------------------- runner


@dataclass
class Result:
    """Outcome of one check."""

    name: str
    status: str
    detail: str
    duration_s: float


def gpu_precheck(ctx: Context) -> Outcome | None:
    """A GPU check's outcome without a usable GPU: fail if one was expected (saying why), else skip."""
    if probe_gpu(ctx):
        return None
    reason = ctx.gpu_reason
    if ctx.require_gpu:
        return FAIL, f"{REQUIRE_GPU_LINE} ({reason})"
    if not ctx.is_cuda:
        return SKIPPED, NO_GPU
    expected = gpu_expected(ctx)
    if expected:
        return FAIL, f"{expected} but CUDA cannot start: {reason}"
    return SKIPPED, f"{NO_GPU} ({reason})"


def precheck(check: Check, ctx: Context) -> Outcome | None:
    """Outcome for a check that should not run (and why), else None."""
    if check.full_only and ctx.cell.variant != "full":
        return SKIPPED, "full variant only"
    if check.needs_torch and ctx.torch_error is not None:
        return SKIPPED, "torch did not import"
    if not check.gpu:
        return None
    if ctx.driver_too_old:
        return SKIPPED, DRIVER_TOO_OLD
    return gpu_precheck(ctx)


def run_one(check: Check, ctx: Context) -> Result:
    """Run one check, timing it and turning exceptions into failures."""
    start = time.monotonic()
    outcome = precheck(check, ctx)
    if outcome is None:
        try:
            outcome = check.func(ctx)
        except Exception as exc:
            outcome = FAIL, _short(exc)
    return Result(check.name, outcome[0], outcome[1], round(time.monotonic() - start, 3))


class Suite:
    """Runs the checks in order under a watchdog and reports once."""

    def __init__(self, ctx: Context, args: argparse.Namespace, checks: Sequence[Check]) -> None:
        self.ctx = ctx
        self.args = args
        self.checks = list(checks)
        self.results: list[Result] = []
        self.start = time.monotonic()
        self.current_start = self.start
        self.lock = threading.Lock()
        self.reported = False
        self.saved_stdout: int | None = None

    def quiet_stdout(self) -> None:
        """With --json, send what checks write to fd 1 (e.g. NCCL_DEBUG logs) to stderr."""
        if self.args.json:
            sys.stdout.flush()
            self.saved_stdout = os.dup(1)
            os.dup2(2, 1)

    def restore_stdout(self) -> None:
        """Undo quiet_stdout before the report is printed."""
        if self.saved_stdout is not None:
            sys.stdout.flush()
            os.dup2(self.saved_stdout, 1)
            self.saved_stdout = None

    def progress(self, event: dict[str, Any]) -> None:
        """With --progress, one JSON line on stderr (the host rebuilds a partial report from them)."""
        if self.args.progress:
            sys.stderr.write(PROGRESS_PREFIX + json.dumps(event) + "\n")
            sys.stderr.flush()

    def run(self) -> int:
        """Run every check; return the exit code."""
        timer = threading.Timer(self.args.timeout, self.on_timeout)
        timer.daemon = True
        timer.start()
        # Backstop for a hang that holds the GIL (the timer thread could not run):
        # faulthandler's C thread dumps tracebacks to stderr and exits 1.
        faulthandler.dump_traceback_later(self.args.timeout + BACKSTOP_S, exit=True)
        self.quiet_stdout()
        self.progress({"tag": self.ctx.cell.tag, "checks": [check.name for check in self.checks]})
        for check in self.checks:
            self.current_start = time.monotonic()
            self.progress({"start": check.name})
            result = run_one(check, self.ctx)
            with self.lock:
                self.results.append(result)
            self.progress({"result": asdict(result)})
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()
        code = self.report(self.results)
        return 1 if code is None else code

    def on_timeout(self) -> None:
        """Watchdog: report the running check as timed out and exit 1 (even if stuck in C)."""
        with self.lock:
            if self.reported or len(self.results) == len(self.checks):
                return  # the main thread finished first and reports
            results = list(self.results)
            started = self.current_start
        running = self.checks[len(results)]  # checks run, and are recorded, in order
        detail = f"timeout after {self.args.timeout:g} s"
        results.append(Result(running.name, FAIL, detail, round(time.monotonic() - started, 3)))
        for check in self.checks[len(results) :]:
            results.append(Result(check.name, SKIPPED, "not run: suite timeout", 0.0))
        for child in multiprocessing.active_children():
            child.kill()
        try:
            code = self.report(results)
        except BaseException:  # e.g. a closed stdout: still exit, never hang
            code = 1
        if code is not None:
            os._exit(code)

    def report(self, results: list[Result]) -> int | None:
        """Print the table or JSON (once), write --json-out; return the exit code.

        None when a report was already made (the watchdog lost the race).
        """
        with self.lock:
            if self.reported:
                return None
            self.reported = True
            passed = all(r.status != FAIL for r in results)
            doc = {
                "tag": self.ctx.cell.tag,
                "passed": passed,
                "gpu": bool(self.ctx.gpu),
                "gpu_reason": self.ctx.gpu_reason,
                "checks": [asdict(r) for r in results],
                "total_s": round(time.monotonic() - self.start, 3),
            }
            ctx = self.ctx
            self.restore_stdout()
            no_gpu_line = ctx.require_gpu and not ctx.gpu and not ctx.driver_too_old
            if no_gpu_line:
                out = sys.stderr if self.args.json else sys.stdout
                print(REQUIRE_GPU_LINE, file=out)
                print(f"why: {ctx.gpu_reason}", file=out)
            if self.args.json:
                print(json.dumps(doc, indent=2))
            else:
                print(format_table(doc))
            if self.args.json_out:
                Path(self.args.json_out).write_text(json.dumps(doc, indent=2) + "\n")
            sys.stdout.flush()
            sys.stderr.flush()
            return 0 if passed else 1


def format_table(doc: dict[str, Any]) -> str:
    """Readable table: check, status, duration, detail; then a summary line."""
    checks = doc["checks"]
    width = max([len("check"), *(len(c["name"]) for c in checks)])
    lines = [f"smoke suite for {doc['tag']}", f"{'check':<{width}}  status   duration  detail"]
    for c in checks:
        duration = f"{c['duration_s']:.2f}s"
        lines.append(f"{c['name']:<{width}}  {c['status']:<7}  {duration:>8}  {c['detail']}")
    failed = [c["name"] for c in checks if c["status"] == FAIL]
    verdict = f"FAILED: {', '.join(failed)}" if failed else "PASSED"
    lines.append(f"{verdict} ({len(checks)} checks, {doc['total_s']:.2f}s, gpu: {doc['gpu']})")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line arguments; argparse exits 2 on bad ones."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cell", required=True, help="path to cell.json")
    parser.add_argument("--require-gpu", action="store_true", help="fail when no GPU is visible")
    parser.add_argument(
        "--gpus-requested",
        action="store_true",
        help="the container was given GPUs: GPU checks fail, not skip, when CUDA cannot start",
    )
    parser.add_argument("--progress", action="store_true", help="report each check on stderr as a JSON line")
    parser.add_argument("--json-out", help="also write the JSON report to this file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--timeout", type=float, default=300.0, help="suite timeout in seconds")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parse_args(argv)
    try:
        cell = load_cell(args.cell)
    except CellError as exc:
        print(f"smoke: bad cell.json: {exc}", file=sys.stderr)
        return 2
    ctx = Context(cell=cell, require_gpu=args.require_gpu, gpus_requested=args.gpus_requested)
    return Suite(ctx, args, CHECKS).run()


if __name__ == "__main__":
    sys.exit(main())
