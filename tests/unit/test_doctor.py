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


def test_doctor_on_a_535_driver_per_cuda_version(default_matrix: matrix.Matrix) -> None:
    """Which cells run (pass), run with limits (warn: minor-version compatibility) or fail on driver 535."""
    from builder.build.gate import driver_overview

    rows = {row.name: row for row in driver_overview(default_matrix.cells, "535.104.05")}
    for row in rows.values():
        print(f"{row.name:10} {row.status:5} {row.detail}")
    assert {name for name, row in rows.items() if row.status == "pass"} == {"CUDA 11.8", "CUDA 12.1"}
    assert {name for name, row in rows.items() if row.status == "warn"} == {
        "CUDA 12.4",
        "CUDA 12.6",
        "CUDA 12.8",
        "CUDA 12.9",
    }
    assert {name for name, row in rows.items() if row.status == "fail"} == {"CUDA 13.0", "CUDA 13.2"}
    assert "minor-version compatibility (>= 525.60.13)" in rows["CUDA 12.8"].detail
    assert not any(row.blocking for row in rows.values())


def test_cuda_12_cell_warns_on_535_instead_of_failing(default_matrix: matrix.Matrix) -> None:
    check = driver_check(default_matrix.cell("2.9-cuda12.8-ubuntu22.04"), "535.104.05")
    assert check.status == "warn"
    assert "runs through CUDA 12.x minor-version compatibility (driver >= 525.60.13)" in check.detail


def test_too_old_driver_names_the_minor_version_floor(default_matrix: matrix.Matrix) -> None:
    check = driver_check(default_matrix.cell("2.14-cuda13.0-debian12"), "535.104.05")
    assert "CUDA 13.x minor-version compatibility needs >= 580" in check.detail
    assert "forward-compatibility package" in check.detail
