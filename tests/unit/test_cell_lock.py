"""Per-cell hash locks: the committed locks are current, stale/missing/foreign locks are refused (exit 2),
the lock format parses into a dependency graph, and `lock --update` diffs per package."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder.build import cell_lock, lock
from builder.errors import ConfigError
from builder.model import matrix, profiles
from builder.model.naming import requirements_path
from builder.resources import install_lock
from tests.conftest import REPO

CPU = "2.13-cpu-debian12"
CUDA = "2.14-cuda13.0-debian12"


def _text(tag: str) -> str:
    return (REPO / requirements_path(tag)).read_text()


def test_committed_locks_are_current_and_every_cell_is_locked_or_recorded(
    default_matrix: matrix.Matrix,
) -> None:
    unlocked = lock.read(REPO / "matrix.lock")["unlocked"]
    assert cell_lock.problems(default_matrix.cells, REPO, unlocked) == []
    for cell in default_matrix.cells:
        assert (REPO / requirements_path(cell.tag)).exists() != (cell.tag in unlocked), cell.tag


def test_a_lock_pins_every_distribution_with_sha256_and_gives_the_graph() -> None:
    pins = install_lock.parse(_text(CUDA))
    assert pins["torch"].version == "2.14.1" and pins["torch"].root
    assert all(pin.hashes and all(h.startswith("sha256:") for h in pin.hashes) for pin in pins.values())
    assert "cuda-toolkit" in pins["nvidia-cublas"].via and "torch" in pins["cuda-toolkit"].via
    assert {p.name for p in pins.values() if p.root} == {"torch", "numpy", "pip"}
    full = install_lock.parse(_text(CUDA + "-full"))
    assert "jupyterlab" in full and "jupyterlab" not in pins
    # the full cell's torch stage installs the slim lock: the full lock agrees with every slim pin
    assert all(full[name].version == pin.version for name, pin in pins.items())


def test_the_cpu_cell_pins_the_cpu_wheel_and_no_cuda_wheels() -> None:
    pins = install_lock.parse(_text(CPU))
    assert pins["torch"].version == "2.13.0+cpu"
    assert not [name for name in pins if name.startswith("nvidia-")]


def test_stale_foreign_and_missing_locks_are_named(default_matrix: matrix.Matrix) -> None:
    cell = default_matrix.cell(CPU)
    text = _text(CPU)
    assert cell_lock.problem(cell, text, None) == ""
    assert "stale" in cell_lock.problem(cell, text.replace("# input: ", "# input: 0"), None)
    assert "Python 3.12" in cell_lock.problem(cell, text.replace("# python: 3.11", "# python: 3.12"), None)
    assert "platform linux-arm64" in cell_lock.problem(cell, text.replace("linux-amd64", "linux-arm64"), None)
    assert "missing" in cell_lock.problem(cell, None, None)
    assert cell_lock.problem(cell, None, cell_lock.input_digest(cell)) == ""
    assert "missing" in cell_lock.problem(cell, None, "0" * 64)  # recorded for another input


def test_an_unlockable_cell_is_refused_with_its_reason(default_matrix: matrix.Matrix) -> None:
    unlocked = lock.read(REPO / "matrix.lock")["unlocked"]
    tag = "2.7-cuda11.8-ubuntu22.04-full"  # torch 2.7.1+cu118 is only on download.pytorch.org
    with pytest.raises(ConfigError, match=r"no hash lock: .*download\.pytorch\.org.*never built unlocked"):
        cell_lock.locked_pins(default_matrix.cell(tag), REPO, unlocked)
    assert cell_lock.locked_pins(default_matrix.cell(CPU), REPO, unlocked)["torch"].version == "2.13.0+cpu"


def test_diff_is_per_package() -> None:
    old = _text(CUDA)
    new = old.replace("numpy==2.4.6", "numpy==2.4.7").replace(
        "pip==26.3 \\", "pip==26.3 \\\n    --hash=sha256:" + "e" * 64 + " \\"
    )
    new += "extra-pkg==1.0 \\\n    --hash=sha256:" + "f" * 64 + "\n    # via torch\n"
    assert cell_lock.diff(old, new) == [
        "+ extra-pkg 1.0",
        "  numpy 2.4.6 -> 2.4.7",
        "~ pip 26.3 (hashes changed)",
    ]
    assert cell_lock.diff(old, old) == []


def test_only_torch_family_comes_from_the_pytorch_index(default_matrix: matrix.Matrix) -> None:
    official = profiles.resolve(default_matrix, "official")
    text = cell_lock._pyproject(default_matrix.cell("2.7-cuda11.8-ubuntu22.04-full"), official)
    assert "explicit = true" in text and "https://download.pytorch.org/whl/cu118" in text
    sources = text.split("[tool.uv.sources]", 1)[1]
    assert sorted(line.split(" =")[0] for line in sources.strip().splitlines()) == [
        "torch",
        "torchaudio",
        "torchvision",
    ]
    assert "[[tool.uv.index]]" not in cell_lock._pyproject(default_matrix.cell(CUDA), official)


def test_lock_check_exits_2_with_one_line_on_a_stale_lock(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    for name in ("matrix.yaml", "matrix.lock"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "images", tmp_path / "images")
    assert cli("lock", "--matrix", str(tmp_path / "matrix.yaml")).exit_code == 0
    path = tmp_path / requirements_path(CPU)
    path.write_text(path.read_text().replace("# python: 3.11", "# python: 3.10"))
    result = cli("lock", "--matrix", str(tmp_path / "matrix.yaml"))
    assert result.exit_code == 2
    assert result.stderr.count("error:") == 1 and "locked for Python 3.10" in result.stderr
    path.unlink()
    result = cli("lock", "--matrix", str(tmp_path / "matrix.yaml"))
    assert result.exit_code == 2 and f"{requirements_path(CPU)}: missing" in result.stderr


def test_pip_hash_mismatch_report_becomes_one_line() -> None:
    pip_output = (
        "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated ...\n"
        "    torch==2.13.0 from http://127.0.0.1:8080/packages/torch-2.13.0%2Bcpu-cp311-cp311-manylinux_2_28"
        f"_x86_64.whl#sha256={'c' * 64} (from -r /tmp/lock-x/requirements.txt (line 1)):\n"
        f"        Expected sha256 {'a' * 64}\n"
        f"        Expected     or {'b' * 64}\n"
        f"             Got        {'c' * 64}\n"
    )
    assert install_lock.mismatch_line(pip_output) == (
        f"ERROR: hash mismatch: torch==2.13.0: expected sha256:{'a' * 64} got sha256:{'c' * 64} "
        "(torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl)"
    )
