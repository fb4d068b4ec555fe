"""doctor's driver check against a cell's minimum driver (pure: the host driver is passed in)."""

from __future__ import annotations

from builder.build.gate import driver_check
from builder.model import matrix


def test_too_old_driver_is_reported_with_both_versions(default_matrix: matrix.Matrix) -> None:
    cell = default_matrix.cell("2.14-cuda13.0-debian12")
    check = driver_check(cell, "535.104.05")
    assert check.status == "fail"
    assert check.detail.startswith(
        f"driver 535.104.05 is older than the minimum {cell.min_driver} for CUDA 13.0"
    )


def test_new_enough_driver_passes(default_matrix: matrix.Matrix) -> None:
    check = driver_check(default_matrix.cell("2.14-cuda13.0-debian12"), "590.10.01")
    assert check.status == "pass"


def test_cpu_cell_needs_no_driver(default_matrix: matrix.Matrix) -> None:
    assert driver_check(default_matrix.cell("2.13-cpu-debian12"), None).status == "pass"


def test_no_driver_skips_gpu_checks(default_matrix: matrix.Matrix) -> None:
    check = driver_check(default_matrix.cell("2.9-cuda12.8-ubuntu22.04"), None)
    assert check.status == "skipped" and "library checks only" in check.detail
