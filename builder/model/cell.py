"""The resolved matrix cell: every fact the templates, the build and the smoke suite need."""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.model.naming import CellKey
from builder.model.platforms import DEFAULT_PLATFORM


@dataclass(frozen=True)
class Customization:
    """What a team adds on top of the shipped templates (from matrix.yaml)."""

    pip: tuple[str, ...] = ()
    apt: tuple[str, ...] = ()
    snippet: str = ""


@dataclass(frozen=True)
class CudaToolkit:
    """A full CUDA cell's compiler: NVIDIA's component wheels in one tree, or the nvidia/cuda base's."""

    home: str  # CUDA_HOME
    requirement: str | None = None  # `cuda-toolkit[nvcc,...]==13.0.3.0` (wheels only)
    components: tuple[str, ...] = ()  # what the requirement installs, `nvidia-cuda-nvcc==13.0.88`, ...
    why_not_wheels: str | None = None  # the nvidia base: why PyPI's wheels cannot give this CUDA's nvcc


@dataclass(frozen=True)
class Cell:
    """One buildable image: a CellKey plus the exact versions and choices it resolves to."""

    key: CellKey
    torch_version: str
    torchvision_version: str
    torchaudio_version: str | None
    python_version: str
    os_family: str
    os_version: str
    os_codename: str
    base_image: (
        str  # registry-relative, e.g. "library/debian:12" or "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04"
    )
    wheel_source: str  # "pypi" | "pytorch" | "custom"
    wheel_index: str  # index path suffix ("cu128", "cpu") or a custom URL; "" for pypi
    local_label: str  # "+cu128", "+cpu" or ""
    cuda_version: str | None = None  # "12.8.1"
    cudnn_version: str | None = None
    nccl_version: str | None = None
    min_driver: str | None = None  # the CUDA toolkit's own release driver: everything works from here on
    min_driver_compat: str | None = None  # minor-version compatibility floor: runs where SASS exists
    arch_list: str | None = None  # TORCH_CUDA_ARCH_LIST, "7.5;8.0;9.0"
    arm64_arch_list: str | None = None  # the same for the linux/arm64 wheel, where measured
    cuda_dev_base: str | None = None  # "wheels" | "nvidia" (full CUDA cells)
    cuda_toolkit: CudaToolkit | None = None  # full CUDA cells: where nvcc and CUDA_HOME come from
    size_budget_gb: float = 0.0
    customization: Customization = field(default_factory=Customization)
    warnings: tuple[str, ...] = ()
    platforms: tuple[str, ...] = (DEFAULT_PLATFORM,)  # every one has wheels; the first is the default build

    @property
    def tag(self) -> str:
        return self.key.tag

    @property
    def variant(self) -> str:
        return self.key.variant

    @property
    def is_cuda(self) -> bool:
        return self.key.is_cuda

    @property
    def cuda_minor(self) -> str | None:
        return self.key.cuda

    @property
    def cudnn_major(self) -> int | None:
        return int(self.cudnn_version.split(".")[0]) if self.cudnn_version else None

    @property
    def gpu_archs(self) -> tuple[str, ...]:
        """`7.5;8.0;9.0+PTX` -> ("sm_75", "sm_80", "sm_90")."""
        return _sm_names(self.arch_list)

    @property
    def gpu_archs_by_machine(self) -> dict[str, list[str]]:
        """The GPU architectures per CPU (`uname -m`) for a cell built for more than linux/amd64; an arm64
        wheel whose list was never measured expects none (never amd64's list)."""
        if self.platforms == (DEFAULT_PLATFORM,):
            return {}
        return {"x86_64": list(self.gpu_archs), "aarch64": list(_sm_names(self.arm64_arch_list))}

    @property
    def base_image_ref(self) -> str:
        """The base image as Docker Hub names it, e.g. `docker.io/library/debian:12`."""
        return f"docker.io/{self.base_image}"

    def pinned(self, package: str, version: str) -> str:
        """`torch==2.9.1+cu128` style requirement for a PyTorch-index package."""
        label = self.local_label if self.wheel_source == "pytorch" else ""
        return f"{package}=={version}{label}"


def _sm_names(arch_list: str | None) -> tuple[str, ...]:
    if not arch_list:
        return ()
    archs = (a.replace("+PTX", "") for a in arch_list.split(";") if a)
    return tuple("sm_" + a.replace(".", "") for a in archs)
