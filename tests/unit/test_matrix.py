"""matrix.yaml validation and expansion: each bad input is one line naming file, key, value, allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from builder.errors import ConfigError, ImpossibleCellError
from builder.model import matrix
from tests.conftest import REPO

DEFAULT = yaml.safe_load((REPO / "matrix.yaml").read_text())


def write_matrix(tmp_path: Path, **changes: object) -> Path:
    spec = {**DEFAULT, **changes}
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def error_lines(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        matrix.load(path)
    for line in info.value.lines:
        assert "\n" not in line
        assert "Traceback" not in line
    return info.value.lines


def test_default_matrix_has_at_least_40_cells(default_matrix: matrix.Matrix) -> None:
    assert len(default_matrix.cells) >= 40
    tags = [c.tag for c in default_matrix.cells]
    assert len(tags) == len(set(tags))
    assert "2.13-cpu-debian12" in tags
    assert "2.14-cuda13.0-debian12" in tags


def test_default_matrix_spans_2_5_to_2_15(default_matrix: matrix.Matrix) -> None:
    minors = {c.key.torch for c in default_matrix.cells}
    assert {"2.5", "2.15"} <= minors
    assert {c.variant for c in default_matrix.cells} == {"slim", "full"}
    assert {c.os_family for c in default_matrix.cells} == {"ubuntu", "debian"}


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    path.write_text("axes: [unclosed\n")
    (line,) = error_lines(path)
    assert line.startswith(f"{path}: invalid YAML at line")


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    axes = {**DEFAULT["axes"], "acelerator": ["cpu"]}
    (line,) = error_lines(write_matrix(tmp_path, axes=axes))
    assert "axes.acelerator: unknown key (did you mean accelerator?)" in line
    assert "allowed: torch, accelerator, os, variant" in line


def test_unknown_top_level_key(tmp_path: Path) -> None:
    (line,) = error_lines(write_matrix(tmp_path, exlude=[]))
    assert "exlude: unknown key (did you mean exclude?)" in line


@pytest.mark.parametrize(
    ("axis", "values", "expected"),
    [
        (
            "accelerator",
            ["cpu", "cuda99.1"],
            ["axes.accelerator[1]: unknown accelerator 'cuda99.1'", "allowed: cpu, cuda11.8"],
        ),
        ("variant", ["slim", "huge"], ["axes.variant[1]: 'huge'", "'slim' or 'full'"]),
        ("torch", ["2.9", "2.16"], ["axes.torch[1]: a PyTorch version never released '2.16'", "2.15"]),
    ],
)
def test_unknown_axis_value_names_it_and_what_is_allowed(
    tmp_path: Path, axis: str, values: list[str], expected: list[str]
) -> None:
    (line,) = error_lines(write_matrix(tmp_path, axes={**DEFAULT["axes"], axis: values}))
    for text in expected:
        assert text in line


def test_each_problem_gets_its_own_line(tmp_path: Path) -> None:
    axes = {**DEFAULT["axes"], "torch": ["1.0"], "os": ["centos7"]}
    lines = error_lines(write_matrix(tmp_path, axes=axes))
    assert len(lines) == 2


def test_empty_matrix(tmp_path: Path) -> None:
    axes = {"torch": ["2.15"], "accelerator": ["cuda11.8"], "os": ["ubuntu22.04"], "variant": ["slim"]}
    (line,) = error_lines(write_matrix(tmp_path, axes=axes, include=[]))
    assert "expands to no valid cell" in line


def test_empty_axis(tmp_path: Path) -> None:
    axes = {**DEFAULT["axes"], "os": []}
    lines = error_lines(write_matrix(tmp_path, axes=axes))
    assert any("axes.os: empty; allowed:" in line for line in lines)


def test_duplicate_include(tmp_path: Path) -> None:
    cell = {"torch": "2.13", "accelerator": "cpu", "os": "debian12", "variant": "full"}
    (line,) = error_lines(write_matrix(tmp_path, include=[cell, dict(cell)]))
    assert "include[1]: duplicate of include[0] (2.13-cpu-debian12-full)" in line


def test_impossible_include_is_an_error(tmp_path: Path) -> None:
    cell = {"torch": "2.9", "accelerator": "cuda11.8", "os": "ubuntu22.04"}
    (line,) = error_lines(write_matrix(tmp_path, include=[cell]))
    assert (
        "include[0]: 2.9-cuda11.8-ubuntu22.04 is impossible: PyTorch 2.9 publishes no CUDA 11.8 wheels"
        in line
    )


def test_secret_in_customization_is_refused(tmp_path: Path) -> None:
    overrides = [{"select": "*", "pip": ["git+https://bob:hunter2@git.example.com/pkg.git"]}]
    (line,) = error_lines(write_matrix(tmp_path, overrides=overrides))
    assert "overrides[0].pip" in line and "credentials in a URL" in line


def test_token_in_snippet_is_refused(tmp_path: Path) -> None:
    overrides = [{"select": "*", "snippet": "ENV HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz0123456789"}]
    (line,) = error_lines(write_matrix(tmp_path, overrides=overrides))
    assert "overrides[0].snippet" in line


def test_exclude_drops_matching_cells(tmp_path: Path) -> None:
    m = matrix.load(write_matrix(tmp_path, exclude=[{"os": "ubuntu24.04"}]))
    assert all(c.key.os != "ubuntu24.04" or "full" in c.tag or c.key.torch == "2.15" for c in m.cells)
    assert not any(c.tag == "2.9-cuda12.8-ubuntu24.04" for c in m.cells)


def test_drops_carry_reasons(default_matrix: matrix.Matrix) -> None:
    drops = {d.key.tag: d.reasons for d in default_matrix.drops}
    assert "PyTorch 2.9 publishes no CUDA 11.8 wheels" in drops["2.9-cuda11.8-ubuntu22.04"][0]


def test_user_example_is_refused_with_reasons_and_neighbours(default_matrix: matrix.Matrix) -> None:
    with pytest.raises(ImpossibleCellError) as info:
        default_matrix.cell("2.9-cuda11.8-ubuntu20.04")
    text = "\n".join(info.value.lines)
    assert "PyTorch 2.9 publishes no CUDA 11.8 wheels (it publishes CUDA 12.6, 12.8, " in text
    assert "13.0)" in text
    assert "Ubuntu 20.04's python3 is 3.8" in text
    last = info.value.lines[-1]
    assert last.startswith("nearest valid tags: ")
    assert "2.9-cuda12.6-ubuntu22.04" in last
    assert "2.7-cuda11.8-ubuntu22.04" in last


def test_custom_wheel_index_warns_instead_of_refusing(tmp_path: Path) -> None:
    overrides = [{"select": "2.9-cuda11.8-*", "wheel_index": "https://nexus.example.com/whl/cu118"}]
    include = [{"torch": "2.9", "accelerator": "cuda11.8", "os": "ubuntu22.04"}]
    m = matrix.load(write_matrix(tmp_path, overrides=overrides, include=include))
    cell = m.cell("2.9-cuda11.8-ubuntu22.04")
    assert cell.wheel_source == "custom"
    assert any("custom wheel index" in w for w in cell.warnings)


def test_pypi_source_when_default_wheel_carries_the_cuda(default_matrix: matrix.Matrix) -> None:
    cell = default_matrix.cell("2.14-cuda13.0-debian12")
    assert cell.wheel_source == "pypi"
    assert cell.pinned("torch", cell.torch_version) == "torch==2.14.1"
    cpu = default_matrix.cell("2.13-cpu-debian12")
    assert cpu.pinned("torch", cpu.torch_version) == "torch==2.13.0+cpu"


def test_select_globs(default_matrix: matrix.Matrix) -> None:
    chosen = default_matrix.select(["2.13-*"])
    assert chosen and all(c.key.torch == "2.13" for c in chosen)
    with pytest.raises(ConfigError, match="matches no cell"):
        default_matrix.select(["9.9-*"])


def test_default_budgets_have_one_home_and_the_readme_shows_them(default_matrix) -> None:  # type: ignore[no-untyped-def]
    """matrix.yaml sets no budgets, so the cells get `Budgets`' defaults, which the README lists."""
    readme = (REPO / "README.md").read_text()
    line = next(row for row in readme.splitlines() if row.startswith("budgets: "))
    assert yaml.safe_load(line)["budgets"] == matrix.Budgets().model_dump()
    assert "budgets" not in DEFAULT
    assert (
        default_matrix.cell("2.9-cuda12.8-ubuntu22.04-full").size_budget_gb
        == matrix.Budgets().full_cuda
        == 16.0
    )
    # nvcc from wheels, not NVIDIA's devel image: one CUDA in the image, a budget near the measured 7.26 GB
    assert (
        default_matrix.cell("2.14-cuda13.0-debian12-full").size_budget_gb
        == matrix.Budgets().full_cuda_wheels
        == 9.0
    )
