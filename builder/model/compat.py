"""Compatibility facts (which PyTorch x CUDA x OS x Python combinations exist) and the rules over them.

The facts live in `builder/resources/compat.yaml`, each entry citing its public source; this module only
loads them and answers questions. Nothing here touches the network or the engine.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from builder.errors import ConfigError
from builder.model.cell import CudaToolkit
from builder.model.naming import CellKey, version_tuple
from builder.model.platforms import DEFAULT_PLATFORM, PLATFORMS

COMPAT_FILE = "compat.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Aarch64Wheels(_Strict):
    """A release's linux/arm64 wheels: what PyPI's aarch64 wheel is, for which Pythons, and whether
    download.pytorch.org/whl/cpu has a `+cpu` aarch64 build."""

    pypi: str  # "cpu", or the CUDA minor PyPI's aarch64 wheel carries
    arch_list: str | None = None  # the aarch64 CUDA wheel's GPU architectures, where measured
    python: list[str]
    cpu_index: bool
    source: list[str] | str


class TorchRelease(_Strict):
    version: str
    released: str | None = None
    torchvision: str
    torchaudio: str | None
    python: list[str]
    requires_python: str
    cuda: list[str]
    pypi_cuda: str | None
    cudnn: str | None = None
    nccl: str | None = None
    cuda_pins: dict[str, dict[str, str]] = Field(default_factory=dict)  # CUDA -> {package: version}
    arch_list: dict[str, str] = Field(default_factory=dict)
    aarch64: Aarch64Wheels | None = None
    source: list[str] | str


class DevWheels(_Strict):
    """NVIDIA's per-component wheels that a full image's CUDA_HOME is made of (cuda-toolkit extras)."""

    extras: list[str]
    packages: dict[str, str]  # what the extras install at the CUDA's toolkit_wheel release
    compiler: bool  # the nvcc wheel holds the compiler driver (bin/nvcc), not only ptxas
    home: str | None = None  # the one tree (under site-packages) every component installs into
    source: list[str] | str

    @property
    def nvcc_wheel(self) -> str:
        name = next(n for n in self.packages if n.startswith("nvidia-cuda-nvcc"))
        return f"{name}=={self.packages[name]}"


class CudaRelease(_Strict):
    version: str
    min_driver: str
    cudnn_image_tag: str
    images: dict[str, list[Literal["runtime", "devel"]]] = Field(default_factory=dict)
    toolkit_wheel: str | None = None
    dev_wheels: DevWheels | None = None
    arch_list: str
    source: list[str] | str

    @property
    def toolkit_requirement(self) -> str | None:
        """`cuda-toolkit[nvcc,cudart,cccl]==12.8.1`: the component wheels, pinned through the metapackage."""
        if self.dev_wheels is None or self.toolkit_wheel is None:
            return None
        return f"cuda-toolkit[{','.join(self.dev_wheels.extras)}]=={self.toolkit_wheel}"


class DriverCompat(_Strict):
    minor_version: dict[str, str]  # CUDA major -> lowest driver of minor-version compatibility
    source: list[str] | str


class OsRelease(_Strict):
    family: Literal["ubuntu", "debian"]
    version: str
    codename: str
    image: str
    python: str
    eol: str | None = None
    source: list[str] | str


class CompatData(_Strict):
    torch: dict[str, TorchRelease]
    cuda: dict[str, CudaRelease]
    os: dict[str, OsRelease]
    driver_compat: DriverCompat

    def torch_minors(self) -> list[str]:
        return sorted(self.torch, key=version_tuple)

    def cuda_minors(self) -> list[str]:
        return sorted(self.cuda, key=version_tuple)

    def accelerators(self) -> list[str]:
        return ["cpu", *(f"cuda{c}" for c in self.cuda_minors())]

    def oses(self) -> list[str]:
        return sorted(self.os, key=lambda name: (self.os[name].family, version_tuple(self.os[name].version)))


@cache
def load() -> CompatData:
    """The shipped compatibility data (parsed once)."""
    text = resources.files("builder.resources").joinpath(COMPAT_FILE).read_text(encoding="utf-8")
    try:
        return CompatData.model_validate(yaml.safe_load(text))
    except ValidationError as exc:  # a broken data file is a bug in the package, reported plainly
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"builder/resources/{COMPAT_FILE}: {where}: {first['msg']}") from None


def os_label(name: str, data: CompatData) -> str:
    """`ubuntu22.04` -> `Ubuntu 22.04`."""
    release = data.os[name]
    return f"{release.family.capitalize()} {release.version}"


def python_range(versions: list[str]) -> str:
    ordered = sorted(versions, key=version_tuple)
    return ordered[0] if len(ordered) == 1 else f"{ordered[0]}-{ordered[-1]}"


def default_cuda_dev_base(cuda: str, data: CompatData) -> Literal["wheels", "nvidia"]:
    """Full CUDA cells get nvcc from NVIDIA's wheels wherever PyPI has a compiler for that CUDA.

    Wheels come through any PyPI mirror and never vanish the way old nvidia/cuda tags do. PyPI's nvcc
    wheels hold the compiler from CUDA 13.0 on; before that they hold only ptxas (compat.yaml
    `dev_wheels.compiler`), so NVIDIA's cuDNN devel image is the default there.
    """
    wheels = data.cuda[cuda].dev_wheels
    return "wheels" if wheels is not None and wheels.compiler else "nvidia"


class Settings(BaseModel):
    """Per-cell choices that change what is possible (from matrix.yaml overrides)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cuda_dev_base: Literal["wheels", "nvidia"] | None = None
    wheel_index: str | None = None  # a team's own wheel index: compat warns instead of refusing


def problems(key: CellKey, settings: Settings, data: CompatData) -> tuple[list[str], list[str]]:
    """Why a cell cannot exist (first list) and what is merely unverified (second list, warnings)."""
    reasons: list[str] = []
    warnings: list[str] = []
    release = data.torch.get(key.torch)
    if release is None:
        return [f"PyTorch {key.torch} was never released (known: {', '.join(data.torch_minors())})"], []
    if key.os not in data.os:
        return [f"unknown OS {key.os} (known: {', '.join(data.oses())})"], []
    cuda = key.cuda
    if cuda is not None and cuda not in data.cuda:
        return [f"unknown CUDA {cuda} (known: {', '.join(data.cuda_minors())})"], []
    if cuda is not None and cuda not in release.cuda:
        message = (
            f"PyTorch {key.torch} publishes no CUDA {cuda} wheels "
            f"(it publishes CUDA {', '.join(release.cuda)})"
        )
        if settings.wheel_index:
            warnings.append(f"{message}; trusting the custom wheel index {settings.wheel_index}")
        else:
            reasons.append(message)
    python = data.os[key.os].python
    if python not in release.python:
        reasons.append(
            f"{os_label(key.os, data)}'s python3 is {python} but torch {key.torch} wheels need Python "
            f"{python_range(release.python)} (Requires-Python {release.requires_python})"
        )
    if cuda is not None and key.variant == "full" and cuda in data.cuda:
        reasons.extend(_dev_base_problems(key, cuda, settings, data))
        if (settings.cuda_dev_base or default_cuda_dev_base(cuda, data)) == "wheels":
            pin_reasons, pin_warnings = _pin_problems(key, cuda, data)
            reasons += pin_reasons
            warnings += pin_warnings
    return reasons, warnings


def arm64_accelerators(release: TorchRelease) -> list[str]:
    """The accelerators a release has linux/arm64 wheels for (through the sources a cell uses)."""
    wheels = release.aarch64
    if wheels is None:
        return []
    found = ["cpu"] if wheels.cpu_index else []
    if wheels.pypi != "cpu" and wheels.pypi == release.pypi_cuda:
        found.append(f"cuda{wheels.pypi}")
    return found


def platform_problems(
    key: CellKey, platform: str, settings: Settings, data: CompatData
) -> tuple[list[str], list[str]]:
    """Why an existing cell cannot be built for `platform` (first list; each reason ends with what would
    work) and what is merely trusted (second list, warnings, with a custom wheel index)."""
    if platform not in PLATFORMS:
        return [f"unknown platform {platform} (known: {', '.join(PLATFORMS)})"], []
    if platform == DEFAULT_PLATFORM:
        return [], []
    release = data.torch[key.torch]
    wheels = release.aarch64
    reasons: list[str] = []
    if wheels is None:
        reasons.append(f"PyTorch {key.torch} publishes no {platform} wheels")
    else:
        if key.cuda is None and not wheels.cpu_index:
            reasons.append(
                f"PyTorch {key.torch} publishes no torch=={release.version}+cpu wheel for {platform}"
            )
        if key.cuda is not None and key.accelerator not in arm64_accelerators(release):
            built = "CPU builds" if wheels.pypi == "cpu" else f"CUDA {wheels.pypi} builds"
            reasons.append(
                f"PyTorch {key.torch}'s {platform} wheels on PyPI are {built}; "
                f"no CUDA {key.cuda} build for {platform}"
            )
        python = data.os[key.os].python
        if python not in wheels.python:
            reasons.append(
                f"PyTorch {key.torch} has no cp{python.replace('.', '')} wheels for {platform} "
                f"({os_label(key.os, data)}'s python3 is {python}; "
                f"{platform} wheels: Python {python_range(wheels.python)})"
            )
    if reasons and settings.wheel_index:
        return [], [f"{r}; trusting the custom wheel index {settings.wheel_index}" for r in reasons]
    if reasons:
        works = arm64_accelerators(release)
        hint = (
            f"{platform} works for {key.torch}-{'/'.join(works)}"
            if works
            else f"{platform} has no {key.torch} cell"
        )
        reasons = [f"{r} ({hint})" for r in reasons]
    return reasons, []


def _dev_base_problems(key: CellKey, cuda: str, settings: Settings, data: CompatData) -> list[str]:
    dev_base = settings.cuda_dev_base or default_cuda_dev_base(cuda, data)
    cuda_release = data.cuda[cuda]
    if dev_base == "wheels":
        return [f"{why}; use `cuda_dev_base: nvidia`" for why in wheels_problems(cuda, data)]
    if "devel" not in cuda_release.images.get(key.os, []):
        where = [os for os, kinds in cuda_release.images.items() if "devel" in kinds]
        no_wheels = wheels_problems(cuda, data)
        return [
            f"NVIDIA publishes no nvidia/cuda:{cuda_release.version}-{cuda_release.cudnn_image_tag}-devel "
            f"image for {os_label(key.os, data)} (it does for {', '.join(where) or 'no OS'})"
            + (f", and {no_wheels[0]}" if no_wheels else "; use `cuda_dev_base: wheels`")
        ]
    return []


def wheels_problems(cuda: str, data: CompatData) -> list[str]:
    """Why NVIDIA's wheels on PyPI cannot give a CUDA_HOME with nvcc for `cuda` ([] when they can)."""
    cuda_release = data.cuda[cuda]
    wheels = cuda_release.dev_wheels
    if cuda_release.toolkit_wheel is None or wheels is None:
        return [f"NVIDIA publishes no nvcc wheel for CUDA {cuda}"]
    if not wheels.compiler:
        return [
            f"PyPI has no CUDA {cuda} compiler: {wheels.nvcc_wheel} (cuda-toolkit[nvcc]=="
            f"{cuda_release.toolkit_wheel}) holds ptxas, libnvvm and the crt headers but no nvcc"
        ]
    return []


def _pin_problems(key: CellKey, cuda: str, data: CompatData) -> tuple[list[str], list[str]]:
    """Component wheels whose version differs from the torch wheel's own pin (pip cannot install both),
    and a warning where the torch wheel's pins are not recorded."""
    release, cuda_release = data.torch[key.torch], data.cuda[cuda]
    wheels = cuda_release.dev_wheels
    if wheels is None or cuda_release.toolkit_wheel is None:
        return [], []
    pins = release.cuda_pins.get(cuda)
    if pins is None:
        return [], [
            f"torch {release.version}'s CUDA {cuda} pins are not recorded (compat.yaml torch.{key.torch}."
            f"cuda_pins), so the CUDA {cuda} component wheels are not checked against them"
        ]
    ours = {**wheels.packages, "cuda-toolkit": cuda_release.toolkit_wheel}
    reasons = [
        f"torch {release.version}'s CUDA {cuda} wheel pins {name}=={pinned} but the CUDA {cuda} component "
        f"wheels (compat.yaml cuda.{cuda}.dev_wheels) need {name}=={ours[name]}; use `cuda_dev_base: nvidia`"
        for name, pinned in sorted(pins.items())
        if name in ours and Version(pinned) != Version(ours[name])
    ]
    return reasons, []


def base_image(key: CellKey, settings: Settings, data: CompatData) -> str:
    """Registry-relative base image: plain OS, or NVIDIA's cuDNN devel image for full cells that ask."""
    cuda = key.cuda
    if key.variant == "full" and cuda is not None:
        dev_base = settings.cuda_dev_base or default_cuda_dev_base(cuda, data)
        if dev_base == "nvidia":
            release = data.cuda[cuda]
            return f"nvidia/cuda:{release.version}-{release.cudnn_image_tag}-devel-{key.os}"
    image = data.os[key.os].image
    return image if "/" in image.split(":")[0] else f"library/{image}"


def cuda_toolkit(cuda: str, python: str, dev_base: str, data: CompatData) -> CudaToolkit:
    """Where a full cell's nvcc and CUDA_HOME come from: the component wheels' one tree, or the base's."""
    release = data.cuda[cuda]
    wheels = release.dev_wheels
    if dev_base == "nvidia" or wheels is None or wheels.home is None:
        why = wheels_problems(cuda, data)
        return CudaToolkit(home="/usr/local/cuda", why_not_wheels=why[0] if why else None)
    return CudaToolkit(
        home=f"/opt/venv/lib/python{python}/site-packages/{wheels.home}",
        requirement=release.toolkit_requirement,
        components=tuple(f"{name}=={version}" for name, version in wheels.packages.items()),
    )


def minor_version_driver(cuda: str, data: CompatData) -> str | None:
    """Lowest driver that runs CUDA `cuda` through minor-version compatibility (None: no such floor)."""
    return data.driver_compat.minor_version.get(cuda.split(".")[0])


def arch_list(key: CellKey, data: CompatData) -> str | None:
    cuda = key.cuda
    if cuda is None:
        return None
    return data.torch[key.torch].arch_list.get(cuda, data.cuda[cuda].arch_list)


def arm64_arch_list(key: CellKey, data: CompatData) -> str | None:
    """The GPU architectures of the release's linux/arm64 CUDA wheel (None: a CPU cell, or not measured)."""
    wheels = data.torch[key.torch].aarch64
    if key.cuda is None or wheels is None or wheels.pypi != key.cuda:
        return None
    return wheels.arch_list
