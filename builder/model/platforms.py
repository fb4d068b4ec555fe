"""Platforms: the CPU architectures an image is built for (`linux/amd64`, `linux/arm64`), their names in
Docker, Debian, Python wheels and CI runners, and whether this host can run a foreign one (binfmt_misc).

Pure, except `emulation_available` and `registered_qemu`, which read the kernel's binfmt_misc
registrations under /proc (and run the registered QEMU's `--version`).
"""

from __future__ import annotations

import platform as _host
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

PLATFORMS = ("linux/amd64", "linux/arm64")
DEFAULT_PLATFORM = "linux/amd64"
ARCHES = tuple(p.split("/")[1] for p in PLATFORMS)  # Docker's and Debian's names: amd64, arm64
WHEEL_MACHINE = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}  # platform_machine, wheel tags
UV_PLATFORM = {"linux/amd64": "x86_64-manylinux_2_28", "linux/arm64": "aarch64-manylinux_2_28"}
BINFMT_HANDLER = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}
BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
#: The oldest QEMU user mode proven here to run torch: 10.0 (Debian 13's qemu-user 10.0.13) imports torch
#: 2.14.1 aarch64 and passes the smoke suite; Debian 12's qemu-user-static 7.2 segfaults in `import torch`.
QEMU_MIN_VERSION = (10, 0)
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
        f"register QEMU for {name} with the kernel, version {_dotted(QEMU_MIN_VERSION)} or newer "
        "(Debian 12's 7.2 cannot run torch): `apt-get install qemu-user-static binfmt-support` "
        "(Debian 13), or "
        f"`docker run --privileged --rm tonistiigi/binfmt --install {name}`, or "
        f"`python -m tools.sandbox up --arch {name}` (Debian 13's QEMU, on any Debian); "
        "check with `python -m builder doctor`"
    )


@dataclass(frozen=True)
class BinfmtEntry:
    """One binfmt_misc registration: whether it is enabled, its interpreter, its flags (`F`: the kernel
    opens the interpreter when it is registered, so containers use it without having it), and the QEMU
    version that interpreter reports (None when it cannot be run from here)."""

    enabled: bool
    interpreter: str
    flags: str
    version: tuple[int, ...] | None = None

    @property
    def fixed(self) -> bool:
        return "F" in self.flags

    @property
    def new_enough(self) -> bool:
        return self.version is not None and self.version >= QEMU_MIN_VERSION

    @property
    def usable(self) -> bool:
        """Enabled, usable inside containers, and a QEMU proven to run torch."""
        return self.enabled and self.fixed and self.new_enough

    def describe(self) -> str:
        version = f"QEMU {_dotted(self.version)}" if self.version else "QEMU of unknown version"
        state = "" if self.enabled else ", disabled"
        return f"{version} ({self.interpreter}, flags {self.flags or 'none'}{state})"

    def problem(self) -> str | None:
        """Why containers of this platform would not run torch under it; None when they would."""
        if not self.enabled:
            return "the registration is disabled"
        if not self.fixed:
            return "without the F flag containers cannot reach the interpreter"
        if self.version is None:
            return f"its version is unknown here; {_dotted(QEMU_MIN_VERSION)} or newer runs torch"
        if not self.new_enough:
            return f"older than {_dotted(QEMU_MIN_VERSION)}, the oldest proven to run torch"
        return None


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def parse_binfmt(text: str) -> BinfmtEntry:
    """A binfmt_misc entry file (`enabled`, `interpreter PATH`, `flags: POF`, ...), version left unknown."""
    lines = text.splitlines()
    fields = dict(line.replace(":", "", 1).partition(" ")[::2] for line in lines[1:] if line.strip())
    return BinfmtEntry(
        enabled=bool(lines) and lines[0].strip() == "enabled",
        interpreter=fields.get("interpreter", "").strip(),
        flags=fields.get("flags", "").strip(),
    )


def parse_qemu_version(text: str) -> tuple[int, ...] | None:
    """`qemu-aarch64 version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)` -> (10, 0, 13)."""
    found = re.search(r"version (\d+(?:\.\d+)+)", text)
    return tuple(int(part) for part in found.group(1).split(".")) if found else None


def registered_qemu(arch_name: str) -> BinfmtEntry | None:
    """The kernel's binfmt registration for `arch_name` with the version its interpreter reports (the
    file at that path now: Debian's `*-binfmt-P` names are links to the emulator), or None when there is
    none."""
    try:
        entry = parse_binfmt(binfmt_path(arch_name).read_text())
    except OSError:
        return None
    emulator = Path(entry.interpreter).resolve()
    try:
        proc = subprocess.run(
            [str(emulator), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return entry
    version = parse_qemu_version(proc.stdout) if proc.returncode == 0 else None
    return BinfmtEntry(entry.enabled, entry.interpreter, entry.flags, version)
