"""What a cell resolves to, as data (`list --json`, `explain --json`) and as labelled rows (`explain`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from builder.errors import ConfigError
from builder.model import profiles
from builder.model.cell import Cell, CudaToolkit
from builder.model.matrix import Matrix
from builder.model.naming import floating_tag, immutable_tag, torch_index_url


def summary(cell: Cell) -> dict[str, Any]:
    """The cell's coordinates and main versions (one row of `list --json`)."""
    return {
        "tag": cell.tag,
        "immutable_tag": immutable_tag(cell),
        "floating_tag": floating_tag(cell),
        "torch": cell.key.torch,
        "torch_version": cell.torch_version,
        "accelerator": cell.key.accelerator,
        "cuda_version": cell.cuda_version,
        "os": cell.key.os,
        "variant": cell.variant,
        "python": cell.python_version,
        "base_image": cell.base_image_ref,
        "platforms": list(cell.platforms),
    }


def optional_profile(m: Matrix, name: str | None = None) -> profiles.ResolvedProfile | None:
    """The chosen mirror profile, or None when its environment is not set (explain still works)."""
    try:
        return profiles.resolve(m, name)
    except ConfigError:
        return None


def facts(cell: Cell, profile: profiles.ResolvedProfile | None) -> dict[str, Any]:
    """Everything `explain` shows, as data."""
    full = cell.variant == "full"
    return {
        **summary(cell),
        "torchvision": cell.torchvision_version if full else None,
        "torchaudio": cell.torchaudio_version if full else None,
        "cudnn": cell.cudnn_version,
        "nccl": cell.nccl_version,
        "min_driver": cell.min_driver,
        "arch_list": cell.arch_list,
        "gpu_archs_by_machine": cell.gpu_archs_by_machine or None,
        "wheel_source": cell.wheel_source,
        "wheel_index": cell.wheel_index or None,
        "cuda_dev_base": cell.cuda_dev_base,
        "cuda_toolkit": None if cell.cuda_toolkit is None else dataclasses.asdict(cell.cuda_toolkit),
        "size_budget_gb": cell.size_budget_gb,
        "warnings": list(cell.warnings),
        "profile": None
        if profile is None
        else {
            "name": profile.name,
            "base_image": profile.base_image(cell),
            "build_args": {k: v for k, v in profile.build_args(cell).items() if v},
        },
    }


def rows(cell: Cell, profile: profiles.ResolvedProfile | None) -> list[tuple[str, str]]:
    """(label, text) rows for a person: exact versions, base image, wheel source, driver floor."""
    full = cell.variant == "full"
    audio = cell.torchaudio_version or "none released for this torch"
    out: list[tuple[str, str]] = [
        ("tag", cell.tag),
        ("immutable tag", immutable_tag(cell)),
        ("floating tag", floating_tag(cell)),
        ("torch", cell.torch_version),
        ("torchvision", cell.torchvision_version + ("" if full else " (full variant only)")),
        ("torchaudio", audio + ("" if full or not cell.torchaudio_version else " (full variant only)")),
        ("accelerator", cell.key.accelerator),
        ("CUDA", cell.cuda_version or "none (CPU build)"),
        ("cuDNN", _cudnn_text(cell)),
        ("NCCL", cell.nccl_version or "none"),
        ("minimum driver", cell.min_driver or "none needed"),
        *_arch_rows(cell),
        (
            "Python",
            f"{cell.python_version} ({cell.os_family.capitalize()} {cell.os_version}'s python3, /opt/venv)",
        ),
        ("OS", f"{cell.os_family.capitalize()} {cell.os_version} ({cell.os_codename})"),
        ("variant", cell.variant),
        ("platforms", ", ".join(cell.platforms)),
        ("base image", cell.base_image_ref),
        ("wheel source", _wheel_source(cell)),
    ]
    if cell.cuda_toolkit is not None:
        out += _toolkit_rows(cell.cuda_toolkit)
    out.append(("size budget", f"{cell.size_budget_gb} GB"))
    if profile is not None:
        out.append((f"mirror profile ({profile.name})", profile.base_image(cell)))
        out += [(f"  {name}", value) for name, value in profile.build_args(cell).items() if value]
    out += [("warning", warning) for warning in cell.warnings]
    return out


def _arch_rows(cell: Cell) -> list[tuple[str, str]]:
    """One row of GPU architectures, or one per CPU when the cell's wheels differ by CPU (arm64's list)."""
    by_machine = cell.gpu_archs_by_machine
    if not by_machine or len({tuple(archs) for archs in by_machine.values()}) == 1:
        return [("GPU architectures", cell.arch_list or "none")]
    return [
        (f"GPU architectures ({machine})", " ".join(archs) or "none measured")
        for machine, archs in by_machine.items()
    ]


def _toolkit_rows(toolkit: CudaToolkit) -> list[tuple[str, str]]:
    if toolkit.requirement is None:
        return [
            ("CUDA compiler", "nvcc of the base image, NVIDIA's cuDNN devel image"),
            ("CUDA_HOME", toolkit.home),
            *([("  no wheels", toolkit.why_not_wheels)] if toolkit.why_not_wheels else []),
        ]
    return [
        ("CUDA compiler", f"nvcc from NVIDIA's wheels: {toolkit.requirement}"),
        ("CUDA_HOME", f"{toolkit.home} (one tree: bin/nvcc, include/, lib64 -> lib)"),
        *(("  component", component) for component in toolkit.components),
    ]


def _cudnn_text(cell: Cell) -> str:
    if not cell.cudnn_version:
        return "none"
    if "." in cell.cudnn_version:
        return cell.cudnn_version
    return (
        f"{cell.cudnn_version}.x (the {cell.wheel_index} build pins its own patch; the smoke test reports it)"
    )


def _wheel_source(cell: Cell) -> str:
    if cell.wheel_source == "pypi":
        return f"PyPI (the default Linux wheel carries CUDA {cell.cuda_minor}; no PyTorch index needed)"
    if cell.wheel_source == "custom":
        return f"custom index {cell.wheel_index}"
    return f"PyTorch index {cell.wheel_index} ({torch_index_url(cell)})"
