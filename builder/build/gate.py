"""Host side of the smoke gate: run the in-image suite (`smoke_suite.py`) in a container and judge it."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.build.engine import CDI_ALL_GPUS, Engine, GpuRequest, RunResult
from builder.errors import ConfigError, ContainerStartError, EngineUnavailableError, SmokeFailedError
from builder.model.cell import Cell
from builder.model.naming import TAG_RE, local_references
from builder.model.platforms import arch, enable_hint, registered_qemu
from builder.resources import smoke_suite

IN_IMAGE_DIR = "/opt/pytorch-cuda-images"
DEFAULT_TIMEOUT_S = 300.0
# NCCL's shared-memory transport needs more than Docker's 64 MB /dev/shm, and pinned memory an unlimited
# memlock (NCCL troubleshooting: --shm-size=1g --ulimit memlock=-1).
SMOKE_SHM_SIZE = "1g"
# The host stops the container this long after the suite's --timeout: later than the suite's own watchdog
# (at --timeout) and its backstop (smoke_suite.BACKSTOP_S later), so their report always reaches the host.
HOST_KILL_MARGIN_S = 60.0


@dataclass
class SmokeReport:
    """The suite's JSON report plus how the run ended."""

    passed: bool
    gpu: bool
    checks: list[dict[str, Any]]
    seconds: float
    raw: dict[str, Any]
    host_config: dict[str, Any] = field(default_factory=dict)

    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if c.get("status") == "fail"]

    def table(self) -> list[str]:
        width = max((len(str(c.get("name", ""))) for c in self.checks), default=10)
        return [
            f"{str(c.get('name', '')).ljust(width)}  {str(c.get('status', '')).ljust(7)} "
            f"{float(c.get('duration_s', 0.0)):6.2f}s  {c.get('detail', '')}"
            for c in self.checks
        ]


def suite_command(*, require_gpu: bool, timeout: float, gpus_requested: bool = False) -> list[str]:
    command = [
        "python",
        f"{IN_IMAGE_DIR}/smoke.py",
        "--cell",
        f"{IN_IMAGE_DIR}/cell.json",
        "--json",
        "--progress",
        "--timeout",
        str(timeout),
    ]
    if gpus_requested:
        command.append("--gpus-requested")
    return [*command, "--require-gpu"] if require_gpu else command


def explain_start_refusal(message: str, gpu: GpuRequest | None) -> str:
    """One readable line for an engine's refusal to start a smoke container."""
    requirement = re.search(r"unsatisfied condition: ([^,\s]+)", message)
    if requirement:
        return (
            f"the NVIDIA runtime refused the image's NVIDIA_REQUIRE_CUDA ({requirement[1]}): the host "
            "driver supports an older CUDA; update the driver, or where `doctor TAG` says minor-version "
            "compatibility applies run with NVIDIA_DISABLE_REQUIRE=1"
        )
    if 'could not select device driver "cdi"' in message:
        return "this engine has no CDI support enabled (CDI needs Docker >= 25 with the `cdi` feature)"
    if "could not select device driver" in message:
        return (
            "no NVIDIA runtime or hook answers GPU requests on this engine "
            "(install the NVIDIA Container Toolkit, then `nvidia-ctk runtime configure --runtime=docker`)"
        )
    if "unresolvable CDI devices" in message:
        return (
            f"no CDI spec names {CDI_ALL_GPUS}: generate one with "
            "`nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`"
        )
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if lines else "the engine gave no reason"


def partial_report(stderr: str, why: str) -> dict[str, Any] | None:
    """The suite's report rebuilt from its --progress lines, when it could not print one itself.

    The check that was running fails with `why`; later ones are marked not run. None without progress lines.
    """
    plan: list[str] | None = None
    tag = ""
    results: list[dict[str, Any]] = []
    running: str | None = None
    for line in stderr.splitlines():
        if not line.startswith(smoke_suite.PROGRESS_PREFIX):
            continue
        try:
            event = json.loads(line[len(smoke_suite.PROGRESS_PREFIX) :])
        except json.JSONDecodeError:
            continue
        if "checks" in event:
            plan, tag = list(event["checks"]), str(event.get("tag", ""))
        elif "start" in event:
            running = str(event["start"])
        elif "result" in event:
            results.append(dict(event["result"]))
            running = None
    if plan is None:
        return None
    checks = list(results)
    if running is not None:
        checks.append({"name": running, "status": "fail", "detail": why, "duration_s": 0.0})
    done = {c["name"] for c in checks}
    checks += [
        {"name": name, "status": "skipped", "detail": "not run: suite stopped", "duration_s": 0.0}
        for name in plan
        if name not in done
    ]
    tail = [line for line in stderr.splitlines() if not line.startswith(smoke_suite.PROGRESS_PREFIX)][-40:]
    return {"tag": tag, "passed": False, "gpu": False, "checks": checks, "partial": True, "log_tail": tail}


def container_facts(host_config: dict[str, Any], gpu: GpuRequest | None) -> dict[str, Any]:
    """What the report records of the smoke container (from `docker inspect`'s HostConfig)."""
    return {
        "gpu_request": gpu,
        "DeviceRequests": host_config.get("DeviceRequests"),
        "ShmSize": host_config.get("ShmSize"),
        "Ulimits": host_config.get("Ulimits"),
    }


def run(
    engine: Engine,
    image: str,
    *,
    require_gpu: bool = False,
    gpus: Sequence[GpuRequest] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> SmokeReport:
    """Run the suite in a fresh container and return its report (partial when the suite was stopped).

    gpus: the GPU requests to try, in order (Engine.gpu_requests()); the next is tried when the engine
    refuses one. A refusal of every one, or a run without any report, raises SmokeFailedError (one line).
    """
    command = suite_command(require_gpu=require_gpu, timeout=timeout, gpus_requested=bool(gpus))
    refusals: list[str] = []
    attempts: list[GpuRequest | None] = [*gpus] or [None]
    for gpu in attempts:
        memlock_refused: list[dict[str, Any]] = []
        try:
            result = _run_once(engine, image, command, timeout, gpu, memlock_refused)
        except ContainerStartError as exc:
            refusals.append(f"{gpu or 'no'} GPU request: {explain_start_refusal(str(exc), gpu)}")
            continue
        report = _report(result, image, timeout, gpu)
        report.raw["container"]["memlock_refused"] = memlock_refused
        return report
    raise SmokeFailedError(f"the smoke container for {image} did not start: {'; '.join(refusals)}")


MEMLOCK_REFUSED = "error setting rlimit"  # runc, when the engine may not raise RLIMIT_MEMLOCK


def _run_once(
    engine: Engine,
    image: str,
    command: list[str],
    timeout: float,
    gpu: GpuRequest | None,
    memlock_refused: list[dict[str, Any]],
) -> RunResult:
    """One run with an unlimited memlock; where the engine may not raise it (dockerd without CAP_SYS_RESOURCE)
    the run goes ahead with the engine's limit and the refusal is recorded in `memlock_refused`."""
    options: dict[str, Any] = {
        "timeout": timeout + HOST_KILL_MARGIN_S,
        "gpu": gpu,
        "shm_size": SMOKE_SHM_SIZE,
    }
    try:
        return engine.run(image, command, memlock_unlimited=True, **options)
    except ContainerStartError as exc:
        if MEMLOCK_REFUSED not in str(exc):
            raise
        memlock_refused.append({**container_facts(exc.host_config, gpu), "reason": str(exc)})
    return engine.run(image, command, memlock_unlimited=False, **options)


def _report(result: RunResult, image: str, timeout: float, gpu: GpuRequest | None) -> SmokeReport:
    raw: dict[str, Any] | None
    try:
        raw = json.loads(result.stdout) if result.exit_code is not None else None
    except json.JSONDecodeError:
        raw = None
    if raw is None:
        why = (
            f"still running when the host stopped the container ({timeout + HOST_KILL_MARGIN_S:.0f} s)"
            if result.exit_code is None
            else f"the suite exited {result.exit_code} without a report while this ran (stuck holding the "
            "GIL: its backstop dumped the tracebacks and ended it)"
        )
        raw = partial_report(result.stderr, why)
    if raw is None:
        tail = (result.stdout + result.stderr).strip().splitlines()[-10:]
        if result.exit_code is None:
            raise SmokeFailedError(f"smoke suite timed out after {timeout:.0f} s in {image}")
        raise SmokeFailedError(
            f"smoke suite gave no report (exit {result.exit_code})",
            lines=[f"smoke suite gave no report (exit {result.exit_code}); last output:", *tail],
        )
    raw["container"] = container_facts(result.host_config, gpu)
    return SmokeReport(
        passed=bool(raw.get("passed")) and result.exit_code == 0,
        gpu=bool(raw.get("gpu")),
        checks=list(raw.get("checks", [])),
        seconds=result.seconds,
        raw=raw,
        host_config=result.host_config,
    )


def gate_machine(report: SmokeReport, machine: str) -> None:
    """Raise SmokeFailedError unless the suite ran on `machine` (`uname -m`: aarch64 for linux/arm64),
    as its python check reports: an image for one platform must not have been built for another."""
    details = [str(c.get("detail", "")) for c in report.raw.get("checks", []) if c.get("name") == "python"]
    if not any(detail.endswith(f"({machine})") for detail in details):
        raise SmokeFailedError(
            f"the smoke suite did not run on {machine}: python check says {details or 'nothing'}"
        )


def gate(report: SmokeReport) -> None:
    """Raise SmokeFailedError naming every failed check: such an image is never tagged."""
    if not report.passed:
        failed = report.failures()
        names = ", ".join(str(c.get("name")) for c in failed) or "the suite exited non-zero"
        raise SmokeFailedError(
            f"smoke tests failed: {names}",
            lines=[
                f"smoke tests failed: {names}",
                *(f"  {c.get('name')}: {c.get('detail')}" for c in failed),
            ],
        )


@dataclass
class HostCheck:
    """One host-side check of `doctor`: can this machine run the cell's images?"""

    name: str
    status: str  # "pass" | "warn" | "fail" | "skipped"
    detail: str
    blocking: bool = True  # a failure makes `doctor` exit 1 (the per-CUDA overview only informs)


def doctor(cell: Cell | None, cells: Sequence[Cell] = (), driver: str | None = None) -> list[HostCheck]:
    """Engine, GPU requests and driver against the cell's needs, checked before any build or run.

    driver: judge this driver version instead of the host's. Without a cell, every CUDA minor of `cells` is
    judged against the driver (which runs, which runs with limits, which fails).
    """
    if driver is not None and not re.fullmatch(r"\d+(\.\d+){0,2}", driver):
        raise ConfigError(f"--driver {driver!r}: allowed: a driver version such as 535.104.05")
    checks: list[HostCheck] = []
    engine: Engine | None = None
    try:
        engine = Engine.connect()
    except EngineUnavailableError as exc:
        checks.append(HostCheck("engine", "fail", str(exc)))
    else:
        version = engine.version()
        checks.append(
            HostCheck("engine", "pass", f"Docker {version.get('Version')} (API {version.get('ApiVersion')})")
        )
    if engine is not None:
        kinds = engine.gpu_requests()
        if kinds:
            names = {"cdi": f"CDI ({CDI_ALL_GPUS})", "legacy": "legacy (--gpus all)"}
            shown = ", then ".join(names[kind] for kind in kinds)
            checks.append(HostCheck("gpu requests", "pass", f"smoke containers ask for GPUs by {shown}"))
        else:
            detail = "no NVIDIA runtime, hook or CDI spec: containers see no GPU"
            checks.append(HostCheck("gpu requests", "skipped", detail))
    if engine is not None:
        checks.extend(platform_checks(cell, cells, engine.native_platform()))
    found = driver or smoke_suite.read_driver_version()
    checks.append(driver_check(cell, found, simulated=driver is not None))
    if cell is None and found is not None:
        checks.extend(driver_overview(cells, found))
    return checks


def platform_checks(cell: Cell | None, cells: Sequence[Cell], native: str) -> list[HostCheck]:
    """Whether this engine runs each platform the cell (or, without one, the matrix) is built for: its
    own, or another under QEMU (binfmt): which QEMU is registered and whether it is new enough to run
    torch; how to enable one when not (a warning: CI builds each platform on a native runner)."""
    wanted = list(dict.fromkeys(p for c in ([cell] if cell else cells) for p in c.platforms)) or [native]
    return [_platform_check(platform, native) for platform in wanted]


def _platform_check(platform: str, native: str) -> HostCheck:
    name = f"platform {platform}"
    if platform == native:
        return HostCheck(name, "pass", "the engine's own")
    entry = registered_qemu(arch(platform))
    if entry is None or not entry.enabled:
        return HostCheck(
            name, "warn", f"this {native} engine cannot run it; {enable_hint(platform)}", blocking=False
        )
    problem = entry.problem()
    if problem is None:
        return HostCheck(name, "pass", f"runs under {entry.describe()}: builds are slow")
    detail = f"{entry.describe()} is registered but {problem}; {enable_hint(platform)}"
    return HostCheck(name, "warn", detail, blocking=False)


def driver_check(cell: Cell | None, driver: str | None, *, simulated: bool = False) -> HostCheck:
    """The driver against the cell's needs: pass, warn (runs with limits) or fail (pure: driver passed in)."""
    if cell is not None and not cell.is_cuda:
        return HostCheck("driver", "pass", f"{cell.tag} is a CPU image: no driver needed")
    if driver is None:
        detail = "no NVIDIA driver on this host: CUDA images run their library checks only, GPU checks skip"
        return HostCheck("driver", "skipped", detail)
    given = " (given with --driver)" if simulated else ""
    if cell is None or cell.min_driver is None or cell.cuda_minor is None:
        return HostCheck("driver", "pass", f"NVIDIA driver {driver}{given}")
    status, detail = smoke_suite.driver_verdict(
        cell.cuda_minor, driver, cell.min_driver, floor=cell.min_driver_compat, archs=cell.gpu_archs
    )
    if status == smoke_suite.FAIL:
        major = cell.cuda_minor.split(".")[0]
        floor = f"; CUDA {major}.x minor-version compatibility needs >= {cell.min_driver_compat}"
        detail += f" ({cell.tag}){floor if cell.min_driver_compat else ''}; a forward-compatibility package "
        detail += "(cuda-compat) in the image runs it on data-center GPUs only"
    elif status == smoke_suite.WARN and cell.base_image.startswith("nvidia/cuda"):
        detail += (
            f"; its {cell.base_image} base sets NVIDIA_REQUIRE_CUDA, so the NVIDIA runtime refuses to start "
            "it on this driver unless NVIDIA_DISABLE_REQUIRE=1 is set"
        )
    return HostCheck("driver", status, detail + given)


def driver_overview(cells: Sequence[Cell], driver: str) -> list[HostCheck]:
    """One line per CUDA minor of the matrix: runs on `driver` (pass), with limits (warn), or not (fail)."""
    by_cuda: dict[str, list[Cell]] = {}
    for cell in cells:
        if cell.cuda_minor is not None and cell.min_driver is not None:
            by_cuda.setdefault(cell.cuda_minor, []).append(cell)
    rows = []
    for cuda, group in sorted(by_cuda.items(), key=lambda item: smoke_suite.version_tuple(item[0])):
        first = group[0]
        assert first.min_driver is not None
        floor = first.min_driver_compat
        status, _ = smoke_suite.driver_verdict(cuda, driver, first.min_driver, floor=floor)
        if status == smoke_suite.PASS:
            detail = f"runs: driver {driver} >= {first.min_driver}"
        elif status == smoke_suite.WARN:
            detail = (
                f"runs through minor-version compatibility (>= {floor}) on GPUs the wheel has SASS for; "
                f"PTX JIT and newer-driver features need >= {first.min_driver}"
            )
        else:
            detail = f"fails: needs driver >= {first.min_driver}" + (
                f" (CUDA {cuda.split('.')[0]}.x minor-version compatibility from {floor})" if floor else ""
            )
        rows.append(
            HostCheck(
                f"CUDA {cuda}", status, f"{detail}; {len(group)} cells, e.g. {first.tag}", blocking=False
            )
        )
    return rows


def smoke(target: str, matrix_path: Path, *, require_gpu: bool, timeout: float) -> tuple[str, SmokeReport]:
    """`smoke`: the suite against a cell's local image (TARGET a tag of the matrix) or any image reference;
    (the image, its report). Judge the report with `gate`."""
    from builder.model import matrix

    image = local_references(matrix.load(matrix_path).cell(target))[0] if TAG_RE.match(target) else target
    engine = Engine.connect()
    report = run(engine, image, require_gpu=require_gpu, gpus=engine.gpu_requests(), timeout=timeout)
    return image, report
