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
import ctypes
import datetime
import faulthandler
import importlib
import json
import multiprocessing
import os
import re
import shutil
import site
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PASS = "pass"
FAIL = "fail"
SKIPPED = "skipped"

NO_GPU = "no GPU visible"
REQUIRE_GPU_LINE = "no GPU visible but --require-gpu was given"
DRIVER_TOO_OLD = "driver too old"

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


def parse_cell(data: object) -> Cell:
    """Validate the decoded cell.json."""
    if not isinstance(data, dict):
        raise CellError("top level must be a JSON object")
    archs = _field(data, "gpu_archs", list, optional=True) or []
    if not all(isinstance(a, str) for a in archs):
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
    torch_error: str | None = None
    driver_too_old: bool = False
    gpu: bool | None = None  # set before the first GPU check

    @property
    def is_cuda(self) -> bool:
        return self.cell.cuda is not None


# --------------------------------------------------------------------------- checks


def check_python(ctx: Context) -> Outcome:
    """Interpreter major.minor equals the cell's python."""
    found = f"{sys.version_info.major}.{sys.version_info.minor}"
    if found == major_minor(ctx.cell.python):
        return PASS, f"python {sys.version.split()[0]}"
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
    """torch.cuda.nccl.version() works; the wheel's libnccl agrees via ncclGetVersion."""
    if not ctx.is_cuda:
        return SKIPPED, "cpu cell"
    torch = _import("torch")
    torch_version = tuple(int(p) for p in torch.cuda.nccl.version()[:3])
    path = find_shared_lib("libnccl")
    if path is None:
        return FAIL, "libnccl.so.* not found (site-packages nvidia/**/lib or loaded by torch)"
    lib = ctypes.CDLL(path)
    code = ctypes.c_int(0)
    rc = lib.ncclGetVersion(ctypes.byref(code))
    if rc != 0:
        return FAIL, f"ncclGetVersion in {path} returned error {rc}"
    lib_version = nccl_version_from_int(code.value)
    shown = ".".join(map(str, torch_version))
    if lib_version != torch_version:
        return FAIL, f"torch NCCL {shown} != {path} {'.'.join(map(str, lib_version))}"
    return PASS, f"NCCL {shown} ({path})"


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


def check_driver(ctx: Context) -> Outcome:
    """The host driver is at least the cell's min_driver (when a driver is visible)."""
    found = read_driver_version()
    if found is None:
        return SKIPPED, "no NVIDIA driver found"
    if not ctx.is_cuda or ctx.cell.min_driver is None:
        return SKIPPED, f"cpu cell (driver {found})"
    if driver_older(found, ctx.cell.min_driver):
        ctx.driver_too_old = True
        return FAIL, (
            f"driver {found} is older than the minimum {ctx.cell.min_driver} for CUDA {ctx.cell.cuda}"
        )
    return PASS, f"driver {found} >= {ctx.cell.min_driver}"


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


def _nccl_all_reduce(rank: int, world_size: int, port: int) -> float:
    """Join an NCCL group on GPU `rank`, all_reduce (rank + 1), return the sum."""
    torch = _import("torch")
    dist = _import("torch.distributed")
    torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        t = torch.full((4,), float(rank + 1), device=f"cuda:{rank}")
        dist.all_reduce(t)
        torch.cuda.synchronize(rank)
        return float(t[0].item())
    finally:
        dist.destroy_process_group()


def _nccl_worker(rank: int, world_size: int, port: int) -> None:
    """torch.multiprocessing.spawn target: all_reduce and check the sum."""
    got = _nccl_all_reduce(rank, world_size, port)
    expected = world_size * (world_size + 1) / 2
    if got != expected:
        raise RuntimeError(f"rank {rank}: all_reduce gave {got}, expected {expected}")


def check_nccl_all_reduce(ctx: Context) -> Outcome:
    """NCCL all_reduce with world size 1, and one process per GPU when there are 2+."""
    torch = _import("torch")
    got = _nccl_all_reduce(0, 1, free_port())
    if got != 1.0:
        return FAIL, f"world size 1 all_reduce gave {got}, expected 1.0"
    n = int(torch.cuda.device_count())
    if n < 2:
        return PASS, "world size 1 all_reduce ok (1 GPU, multi-process test not applicable)"
    mp = _import("torch.multiprocessing")
    mp.spawn(_nccl_worker, args=(n, free_port()), nprocs=n, join=True)
    return PASS, f"world size 1 and world size {n} (one process per GPU) all_reduce ok"


def _compile_probe(x: Any) -> Any:
    """Tiny function for the torch.compile check."""
    return x.sin() * 2 + x.cos() * x


def check_compile(ctx: Context) -> Outcome:
    """torch.compile of a tiny function on the GPU equals eager."""
    torch = _import("torch")
    x = torch.randn(1024, device="cuda", generator=torch.Generator("cuda").manual_seed(3))
    compiled = torch.compile(_compile_probe)
    got, expected = compiled(x), _compile_probe(x)
    if torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        return PASS, "torch.compile == eager"
    return FAIL, f"torch.compile differs, max abs err {float((got - expected).abs().max()):.2e}"


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
    Check("gpu_nccl", check_nccl_all_reduce, gpu=True),
    Check("gpu_compile", check_compile, gpu=True, full_only=True),
]


# --------------------------------------------------------------------------- runner


@dataclass
class Result:
    """Outcome of one check."""

    name: str
    status: str
    detail: str
    duration_s: float


def gpu_visible(ctx: Context) -> bool:
    """torch sees at least one CUDA device."""
    if ctx.torch_error is not None:
        return False
    try:
        torch = _import("torch")
        return bool(torch.cuda.is_available()) and int(torch.cuda.device_count()) > 0
    except Exception:
        return False


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
    if ctx.gpu is None:
        ctx.gpu = gpu_visible(ctx)
    if not ctx.gpu:
        return (FAIL, REQUIRE_GPU_LINE) if ctx.require_gpu else (SKIPPED, NO_GPU)
    return None


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

    def run(self) -> int:
        """Run every check; return the exit code."""
        timer = threading.Timer(self.args.timeout, self.on_timeout)
        timer.daemon = True
        timer.start()
        # Backstop for a hang that holds the GIL (the timer thread could not run):
        # faulthandler's C thread dumps tracebacks to stderr and exits 1.
        faulthandler.dump_traceback_later(self.args.timeout + 30, exit=True)
        self.quiet_stdout()
        for check in self.checks:
            self.current_start = time.monotonic()
            result = run_one(check, self.ctx)
            with self.lock:
                self.results.append(result)
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
                "checks": [asdict(r) for r in results],
                "total_s": round(time.monotonic() - self.start, 3),
            }
            ctx = self.ctx
            self.restore_stdout()
            no_gpu_line = ctx.require_gpu and not ctx.gpu and not ctx.driver_too_old
            if no_gpu_line:
                print(REQUIRE_GPU_LINE, file=sys.stderr if self.args.json else sys.stdout)
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
    ctx = Context(cell=cell, require_gpu=args.require_gpu)
    return Suite(ctx, args, CHECKS).run()


if __name__ == "__main__":
    sys.exit(main())
