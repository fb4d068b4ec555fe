"""Platforms: the CPU architectures an image is built for (`linux/amd64`, `linux/arm64`), their names in
Docker, Debian, Python wheels and CI runners, and whether this host can run a foreign one (binfmt_misc).

Pure, except `emulation_available`, which reads the kernel's binfmt_misc registrations under /proc.
"""

from __future__ import annotations

import platform as _host
from pathlib import Path

PLATFORMS = ("linux/amd64", "linux/arm64")
DEFAULT_PLATFORM = "linux/amd64"
ARCHES = tuple(p.split("/")[1] for p in PLATFORMS)  # Docker's and Debian's names: amd64, arm64
WHEEL_MACHINE = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}  # platform_machine, wheel tags
UV_PLATFORM = {"linux/amd64": "x86_64-manylinux_2_28", "linux/arm64": "aarch64-manylinux_2_28"}
QEMU_STATIC = {"amd64": "qemu-x86_64-static", "arm64": "qemu-aarch64-static"}
BINFMT_HANDLER = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}
BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
_MACHINE_PLATFORM = {
    "x86_64": "linux/amd64",
    "amd64": "linux/amd64",
    "aarch64": "linux/arm64",
    "arm64": "linux/arm64",
}


def arch(platform: str) -> str:
    """`linux/arm64` -> `arm64`."""
    return platform.split("/")[1]


def tag_suffix(platform: str) -> str:
    """`linux/arm64` -> `linux-arm64`: the per-platform tag suffix and file name part."""
    return platform.replace("/", "-")


def native_platform(machine: str | None = None) -> str:
    """The platform of a machine (`uname -m` or the engine's Architecture); this host's by default."""
    name = (machine or _host.machine()).lower()
    return _MACHINE_PLATFORM.get(name, f"linux/{name}")


def binfmt_path(arch_name: str) -> Path:
    return Path(BINFMT_DIR) / BINFMT_HANDLER.get(arch_name, f"qemu-{arch_name}")


def emulation_available(platform: str, native: str | None = None) -> bool:
    """Whether the host runs `platform`'s binaries: its own platform, or a QEMU handler registered and
    enabled in binfmt_misc."""
    if platform == (native or native_platform()):
        return True
    try:
        return binfmt_path(arch(platform)).read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


def enable_hint(platform: str) -> str:
    """How to let this host run `platform`'s binaries under emulation."""
    name = arch(platform)
    return (
        f"register QEMU for {name} with the kernel: `apt-get install qemu-user-static binfmt-support` "
        f"(Debian, Ubuntu), or `docker run --privileged --rm tonistiigi/binfmt --install {name}`, "
        f"or `python -m tools.sandbox up --arch {name}`; check with `cat {binfmt_path(name)}`"
    )
