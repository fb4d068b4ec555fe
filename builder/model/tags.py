"""Tag grammar: `{torch}-{accelerator}-{os}[-{variant}]`, the identifier of one matrix cell.

`2.9-cuda12.8-ubuntu22.04`, `2.7-cuda11.8-ubuntu22.04-full`, `2.13-cpu-debian12`.
`slim` is the default variant and is left out of the canonical form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from builder.errors import ConfigError

VARIANTS = ("slim", "full")
DEFAULT_VARIANT = "slim"
GRAMMAR = "{torch}-{accelerator}-{os}[-{variant}]"
EXAMPLE = "2.9-cuda12.8-ubuntu22.04 or 2.13-cpu-debian12-full"

TORCH_RE = r"(?P<torch>\d+\.\d+)"
ACCELERATOR_RE = r"(?P<accelerator>cpu|cuda\d+\.\d+)"
OS_RE = r"(?P<os>ubuntu\d{2}\.\d{2}|debian\d+)"
VARIANT_RE = r"(?:-(?P<variant>slim|full))?"
TAG_RE = re.compile(rf"^{TORCH_RE}-{ACCELERATOR_RE}-{OS_RE}{VARIANT_RE}$")
ACCELERATOR_PATTERN = re.compile(rf"^{ACCELERATOR_RE}$")
OS_PATTERN = re.compile(rf"^{OS_RE}$")
TORCH_PATTERN = re.compile(rf"^{TORCH_RE}$")


@dataclass(frozen=True, order=True)
class CellKey:
    """The four coordinates of a matrix cell."""

    torch: str
    accelerator: str
    os: str
    variant: str = DEFAULT_VARIANT

    @property
    def tag(self) -> str:
        return format_tag(self)

    @property
    def is_cuda(self) -> bool:
        return self.accelerator.startswith("cuda")

    @property
    def cuda(self) -> str | None:
        """CUDA major.minor, or None for cpu."""
        return self.accelerator.removeprefix("cuda") if self.is_cuda else None


def parse_tag(tag: str) -> CellKey:
    """Parse a tag; a malformed one raises ConfigError naming the grammar and an example."""
    match = TAG_RE.match(tag.strip())
    if match is None:
        raise ConfigError(f"malformed tag {tag!r}: expected {GRAMMAR}, e.g. {EXAMPLE}")
    return CellKey(
        torch=match["torch"],
        accelerator=match["accelerator"],
        os=match["os"],
        variant=match["variant"] or DEFAULT_VARIANT,
    )


def format_tag(key: CellKey) -> str:
    """The canonical tag of a cell (slim left out)."""
    suffix = "" if key.variant == DEFAULT_VARIANT else f"-{key.variant}"
    return f"{key.torch}-{key.accelerator}-{key.os}{suffix}"


def immutable_tag(
    key: CellKey, *, torch_version: str, cuda_version: str | None, cudnn_major: int | None
) -> str:
    """The exact-version tag, e.g. `2.9.1-cuda12.8.1-cudnn9-ubuntu22.04` or `2.13.0-cpu-debian12`."""
    accelerator = "cpu" if cuda_version is None else f"cuda{cuda_version}"
    cudnn = f"-cudnn{cudnn_major}" if cudnn_major is not None else ""
    suffix = "" if key.variant == DEFAULT_VARIANT else f"-{key.variant}"
    return f"{torch_version}-{accelerator}{cudnn}-{key.os}{suffix}"


def version_tuple(version: str) -> tuple[int, ...]:
    """`2.10` -> (2, 10); ignores a local label such as `+cpu`."""
    return tuple(int(part) for part in version.split("+")[0].split("."))
