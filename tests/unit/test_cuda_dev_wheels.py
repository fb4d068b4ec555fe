"""Full CUDA cells: nvcc from NVIDIA's component wheels where PyPI has a compiler, the nvidia/cuda base
elsewhere; the component versions agree with the torch wheel's pins, or the cell is refused (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from builder.errors import ConfigError
from builder.model import compat, matrix
from builder.model.compat import Settings
from builder.model.naming import parse_tag
from tests.conftest import REPO
from tests.unit.conftest import InProcessCli

DEFAULT = yaml.safe_load((REPO / "matrix.yaml").read_text())
DATA = compat.load()
DEFAULTS, WHEELS, NVIDIA = Settings(), Settings(cuda_dev_base="wheels"), Settings(cuda_dev_base="nvidia")


def reasons(tag: str, settings: Settings = DEFAULTS, data: compat.CompatData = DATA) -> list[str]:
    return compat.problems(parse_tag(tag), settings, data)[0]


def test_every_cuda_minor_records_its_component_wheels() -> None:
    for cuda, release in DATA.cuda.items():
        wheels = release.dev_wheels
        assert wheels is not None, cuda
        assert {"nvcc", "cudart", "cccl"} <= set(wheels.extras), cuda
        suffix = "" if cuda.startswith("13.") else "-cu" + cuda.split(".")[0]
        assert wheels.nvcc_wheel.startswith(f"nvidia-cuda-nvcc{suffix}=="), cuda
        # PyPI's nvcc wheels hold the compiler from CUDA 13.0 on, in one tree; before, only ptxas
        assert wheels.compiler is cuda.startswith("13."), cuda
        assert (wheels.home == "nvidia/cu13") is wheels.compiler, cuda


def test_recorded_torch_pins_agree_with_the_component_wheels_of_their_cuda() -> None:
    """Where a torch wheel pins the runtime, it is the runtime the CUDA's component wheels install."""
    checked = 0
    for minor, release in DATA.torch.items():
        for cuda, pins in release.cuda_pins.items():
            wheels = DATA.cuda[cuda].dev_wheels
            assert wheels is not None
            runtime = pins.get(f"nvidia-cuda-runtime-cu{cuda.split('.')[0]}")
            if runtime is not None:
                assert wheels.packages[f"nvidia-cuda-runtime-cu{cuda.split('.')[0]}"] == runtime, minor
                checked += 1
    assert checked >= 6


def test_default_dev_base_is_wheels_only_where_pypi_has_a_compiler(default_matrix: matrix.Matrix) -> None:
    assert compat.default_cuda_dev_base("13.0", DATA) == "wheels"
    assert compat.default_cuda_dev_base("13.2", DATA) == "wheels"
    for cuda in ("11.8", "12.1", "12.4", "12.6", "12.8", "12.9"):
        assert compat.default_cuda_dev_base(cuda, DATA) == "nvidia", cuda
    full = [c for c in default_matrix.cells if c.variant == "full" and c.is_cuda]
    on_nvidia = sorted(c.tag for c in full if c.cuda_dev_base == "nvidia")
    assert on_nvidia == [
        "2.7-cuda11.8-ubuntu22.04-full",
        "2.9-cuda12.8-ubuntu22.04-full",
        "2.9-cuda12.8-ubuntu24.04-full",
    ]
    assert all(
        c.key.cuda is not None and c.key.cuda.startswith("13.") for c in full if c.tag not in on_nvidia
    )


def test_wheels_for_cuda_12_is_refused_naming_the_nvcc_wheel() -> None:
    (line,) = reasons("2.9-cuda12.8-ubuntu22.04-full", WHEELS)
    assert line == (
        "PyPI has no CUDA 12.8 compiler: nvidia-cuda-nvcc-cu12==12.8.93 (cuda-toolkit[nvcc]==12.8.1) holds "
        "ptxas, libnvvm and the crt headers but no nvcc; use `cuda_dev_base: nvidia`"
    )
    (old,) = reasons("2.7-cuda11.8-ubuntu22.04-full", WHEELS)
    assert "nvidia-cuda-nvcc-cu11==11.8.89" in old
    assert reasons("2.9-cuda12.8-ubuntu22.04-full") == []  # the default there is the nvidia base


def test_debian_cuda_12_full_names_both_missing_sources() -> None:
    (line,) = reasons("2.9-cuda12.8-debian12-full")
    assert "NVIDIA publishes no nvidia/cuda:12.8.1-cudnn-devel image for Debian 12" in line
    assert "and PyPI has no CUDA 12.8 compiler" in line
    (nvidia_on_debian,) = reasons("2.14-cuda13.0-debian12-full", NVIDIA)
    assert nvidia_on_debian.endswith("; use `cuda_dev_base: wheels`")
    assert reasons("2.14-cuda13.0-debian12-full") == []


def test_a_component_version_that_disagrees_with_torchs_pin_is_refused() -> None:
    (line,) = reasons("2.12-cuda13.0-debian12-full")
    assert line.startswith("torch 2.12.1's CUDA 13.0 wheel pins cuda-toolkit==13.0.2 but the CUDA 13.0")
    assert "need cuda-toolkit==13.0.3.0" in line
    assert reasons("2.12-cuda13.0-debian12") == []  # slim cells install no component wheels
    assert reasons("2.13-cuda13.0-debian12-full") == []  # 13.0.3 == 13.0.3.0 under PEP 440


def test_unrecorded_pins_are_a_warning_not_a_refusal() -> None:
    found, warnings = compat.problems(parse_tag("2.15-cuda13.0-ubuntu24.04-full"), DEFAULTS, DATA)
    assert found == []
    (warning,) = warnings
    assert "torch 2.15.0's CUDA 13.0 pins are not recorded" in warning


def test_a_cuda_without_an_nvcc_wheel_is_refused() -> None:
    cuda = DATA.cuda["13.0"].model_copy(update={"dev_wheels": None})
    data = DATA.model_copy(update={"cuda": {**DATA.cuda, "13.0": cuda}})
    (line,) = reasons("2.14-cuda13.0-ubuntu24.04-full", WHEELS, data)
    assert line == "NVIDIA publishes no nvcc wheel for CUDA 13.0; use `cuda_dev_base: nvidia`"
    assert compat.default_cuda_dev_base("13.0", data) == "nvidia"
    (debian,) = reasons("2.14-cuda13.0-debian12-full", data=data)
    assert debian.endswith(
        "(it does for ubuntu22.04, ubuntu24.04), and NVIDIA publishes no nvcc wheel for CUDA 13.0"
    )


def test_wheels_override_in_a_matrix_is_one_line(tmp_path: Path) -> None:
    overrides = [{"select": "2.9-cuda12.8-ubuntu22.04-full", "cuda_dev_base": "wheels"}]
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump({**DEFAULT, "overrides": overrides}))
    with pytest.raises(ConfigError) as info:
        matrix.load(path)
    (line,) = info.value.lines
    assert "2.9-cuda12.8-ubuntu22.04-full is impossible: PyPI has no CUDA 12.8 compiler" in line
    assert "\n" not in line


def test_explain_shows_where_cuda_home_comes_from(cli: InProcessCli) -> None:
    wheels = cli("explain", "2.14-cuda13.0-debian12-full")
    assert wheels.exit_code == 0, wheels.stderr
    assert "cuda-toolkit[nvcc,cudart,cccl,crt,nvvm]==13.0.3.0" in wheels.stdout
    assert "/opt/venv/lib/python3.11/site-packages/nvidia/cu13 (one tree" in wheels.stdout
    assert "nvidia-cuda-nvcc==13.0.88" in wheels.stdout
    base = cli("explain", "2.9-cuda12.8-ubuntu22.04-full")
    assert base.exit_code == 0, base.stderr
    assert "/usr/local/cuda" in base.stdout
    assert "nvidia-cuda-nvcc-cu12==12.8.93" in base.stdout
    as_json = cli("explain", "2.14-cuda13.0-debian12-full", "--json")
    toolkit = json.loads(as_json.stdout)["cuda_toolkit"]
    assert toolkit["requirement"] == "cuda-toolkit[nvcc,cudart,cccl,crt,nvvm]==13.0.3.0"
    assert "nvidia-cuda-crt==13.0.88" in toolkit["components"]
