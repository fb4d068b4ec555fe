"""Host side of the smoke gate: run the in-image suite (`smoke_suite.py`) in a container and judge it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.build.engine import Engine
from builder.errors import EngineUnavailableError, SmokeFailedError
from builder.model.cell import Cell
from builder.model.naming import TAG_RE, local_references
from builder.resources import smoke_suite

IN_IMAGE_DIR = "/opt/pytorch-cuda-images"
DEFAULT_TIMEOUT_S = 300.0


@dataclass
class SmokeReport:
    """The suite's JSON report plus how the run ended."""

    passed: bool
    gpu: bool
    checks: list[dict[str, Any]]
    seconds: float
    raw: dict[str, Any]

    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if c.get("status") == "fail"]

    def table(self) -> list[str]:
        width = max((len(str(c.get("name", ""))) for c in self.checks), default=10)
        return [
            f"{str(c.get('name', '')).ljust(width)}  {str(c.get('status', '')).ljust(7)} "
            f"{float(c.get('duration_s', 0.0)):6.2f}s  {c.get('detail', '')}"
            for c in self.checks
        ]


def suite_command(*, require_gpu: bool, timeout: float) -> list[str]:
    command = [
        "python",
        f"{IN_IMAGE_DIR}/smoke.py",
        "--cell",
        f"{IN_IMAGE_DIR}/cell.json",
        "--json",
        "--timeout",
        str(timeout),
    ]
    return [*command, "--require-gpu"] if require_gpu else command


def run(
    engine: Engine,
    image: str,
    *,
    require_gpu: bool = False,
    gpus: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> SmokeReport:
    """Run the suite in a fresh container; a timeout or unreadable output raises, failed checks do not."""
    result = engine.run(
        image, suite_command(require_gpu=require_gpu, timeout=timeout), timeout=timeout + 30, gpus=gpus
    )
    if result.exit_code is None:
        raise SmokeFailedError(f"smoke suite timed out after {timeout:.0f} s in {image}")
    try:
        raw: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        tail = (result.stdout + result.stderr).strip().splitlines()[-10:]
        raise SmokeFailedError(
            f"smoke suite gave no report (exit {result.exit_code})",
            lines=[f"smoke suite gave no report (exit {result.exit_code}); last output:", *tail],
        ) from None
    return SmokeReport(
        passed=bool(raw.get("passed")) and result.exit_code == 0,
        gpu=bool(raw.get("gpu")),
        checks=list(raw.get("checks", [])),
        seconds=result.seconds,
        raw=raw,
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
    status: str  # "pass" | "fail" | "skipped"
    detail: str


def doctor(cell: Cell | None) -> list[HostCheck]:
    """Engine, GPU runtime and driver against the cell's floor, checked before any build or run."""
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
        if engine.has_nvidia_runtime():
            checks.append(HostCheck("gpu runtime", "pass", "NVIDIA container runtime registered"))
        else:
            checks.append(
                HostCheck("gpu runtime", "skipped", "no NVIDIA container runtime: containers see no GPU")
            )
    driver = smoke_suite.read_driver_version()
    checks.append(driver_check(cell, driver))
    return checks


def driver_check(cell: Cell | None, driver: str | None) -> HostCheck:
    """The host driver against the cell's minimum (pure: the driver version is passed in)."""
    if cell is not None and not cell.is_cuda:
        return HostCheck("driver", "pass", f"{cell.tag} is a CPU image: no driver needed")
    if driver is None:
        detail = "no NVIDIA driver on this host: CUDA images run their library checks only, GPU checks skip"
        return HostCheck("driver", "skipped", detail)
    if cell is None or cell.min_driver is None:
        return HostCheck("driver", "pass", f"NVIDIA driver {driver}")
    if smoke_suite.driver_older(driver, cell.min_driver):
        return HostCheck(
            "driver",
            "fail",
            f"driver {driver} is older than the minimum {cell.min_driver} for CUDA {cell.cuda_minor}"
            f" ({cell.tag})",
        )
    return HostCheck(
        "driver", "pass", f"driver {driver} >= {cell.min_driver} needed by CUDA {cell.cuda_minor}"
    )


def smoke(target: str, matrix_path: Path, *, require_gpu: bool, timeout: float) -> tuple[str, SmokeReport]:
    """`smoke`: the suite against a cell's local image (TARGET a tag of the matrix) or any image reference;
    (the image, its report). Judge the report with `gate`."""
    from builder.model import matrix

    image = local_references(matrix.load(matrix_path).cell(target))[0] if TAG_RE.match(target) else target
    engine = Engine.connect()
    report = run(engine, image, require_gpu=require_gpu, gpus=engine.has_nvidia_runtime(), timeout=timeout)
    return image, report
