"""Every name an image gets: cell tags, immutable and floating tags, local names, labels, references.

- Cell tags: `{torch}-{accelerator}-{os}[-{variant}]`, e.g. `2.9-cuda12.8-ubuntu22.04`,
  `2.7-cuda11.8-ubuntu22.04-full`, `2.13-cpu-debian12`; `slim` is the default variant and is left out.
- The immutable tag names exact versions (`2.9.1-cuda12.8.1-cudnn9-ubuntu22.04`); the cell tag floats.
- Image references split the way Docker splits them: `[registry/]repository[:tag][@digest]`.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from builder.errors import ConfigError

if TYPE_CHECKING:
    from builder.model.cell import Cell

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

LOCAL_REPOSITORY = "pytorch-cuda-images"  # local images, and the default repository under a project
LABEL_PREFIX = "dev.pytorch-cuda-images"
CONTENT_HASH_LABEL = f"{LABEL_PREFIX}.content-hash"
ROLE_LABEL = f"{LABEL_PREFIX}.role"  # on the containers this tool starts
DOCKER_HUB = "docker.io"
PYTORCH_INDEX = "https://download.pytorch.org/whl/{index}"  # {index}: cu128, cpu, ...
CELLS_DIR = "images"  # images/<tag>/: what each cell renders (Dockerfile, cell.json) and its hash lock
RUNS_DIR = "reports/build"  # reports/build/<tag>/: what a `build` run leaves (build.log, smoke-result.json)
DEFAULT_PLATFORM = "linux-amd64"

_HOST_RE = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?$")
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


# --- cell tags ----------------------------------------------------------------------------------


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
    return f"{key.torch}-{key.accelerator}-{key.os}{_variant_suffix(key)}"


def format_immutable_tag(
    key: CellKey, *, torch_version: str, cuda_version: str | None, cudnn_major: int | None
) -> str:
    """The exact-version tag, e.g. `2.9.1-cuda12.8.1-cudnn9-ubuntu22.04` or `2.13.0-cpu-debian12`."""
    accelerator = "cpu" if cuda_version is None else f"cuda{cuda_version}"
    cudnn = f"-cudnn{cudnn_major}" if cudnn_major is not None else ""
    return f"{torch_version}-{accelerator}{cudnn}-{key.os}{_variant_suffix(key)}"


def _variant_suffix(key: CellKey) -> str:
    return "" if key.variant == DEFAULT_VARIANT else f"-{key.variant}"


def version_tuple(version: str) -> tuple[int, ...]:
    """`2.10` -> (2, 10); ignores a local label such as `+cpu`."""
    return tuple(int(part) for part in version.split("+")[0].split("."))


# --- the names of a resolved cell's image -------------------------------------------------------


def immutable_tag(cell: Cell) -> str:
    """The cell's exact-version tag; pushed first and never moved."""
    return format_immutable_tag(
        cell.key,
        torch_version=cell.torch_version,
        cuda_version=cell.cuda_version,
        cudnn_major=cell.cudnn_major,
    )


def floating_tag(cell: Cell) -> str:
    """The tag that moves to the newest build of a cell (after the immutable tag is verified)."""
    return cell.tag


def platform_tag(tag: str, platform: str) -> str:
    """One platform's tag of a multi-platform cell, e.g. `2.14.1-cuda13.0.3-cudnn9-debian13-linux-arm64`.

    The image index goes under the plain tag; each platform's image is pushed under this one first."""
    return f"{tag}-{platform.replace('/', '-')}"


def local_references(cell: Cell, platform: str | None = None) -> list[str]:
    """The local names a built cell gets: floating tag first, then the immutable one. The cell's first
    platform (the default) gets the plain tags; another platform's image gets `platform_tag`s."""
    tags = [floating_tag(cell), immutable_tag(cell)]
    if platform is not None and platform != cell.platforms[0]:
        tags = [platform_tag(tag, platform) for tag in tags]
    return [f"{LOCAL_REPOSITORY}:{tag}" for tag in tags]


def cell_labels(cell: Cell) -> list[tuple[str, str]]:
    """The cell's own labels (names without the `dev.pytorch-cuda-images.` prefix), fixed at render time."""
    return [
        ("tag", cell.tag),
        ("torch", cell.torch_version),
        ("cuda", cell.cuda_version or "none"),
        ("cudnn", cell.cudnn_version or "none"),
        ("python", cell.python_version),
        ("os", cell.key.os),
        ("variant", cell.variant),
    ]


def torch_index_url(cell: Cell, template: str = PYTORCH_INDEX) -> str:
    """The wheel index torch comes from: `template` with `{index}` filled in, a team's own index, or ""
    (plain PyPI)."""
    if cell.wheel_source == "custom":
        return cell.wheel_index
    if cell.wheel_source == "pytorch":
        return template.replace("{index}", cell.wheel_index)
    return ""


def requirements_name(platform: str = DEFAULT_PLATFORM) -> str:
    """The file name of a cell's hash lock for one platform: `requirements.linux-amd64.txt`."""
    return f"requirements.{platform}.txt"


def requirements_path(tag: str, platform: str = DEFAULT_PLATFORM) -> str:
    """A cell's hash lock (every distribution of its venv, `uv pip compile --generate-hashes` format)
    relative to the folder holding `images/`: `images/<tag>/requirements.linux-amd64.txt`."""
    return f"{CELLS_DIR}/{tag}/{requirements_name(platform)}"


def run_dir(root: str, cell: Cell, platform: str | None = None) -> str:
    """Where a build run of `cell` leaves its output below `root`: `<root>/<tag>`, and a folder per
    platform (`<root>/<tag>/linux-arm64`) for every platform but the cell's first."""
    if platform is None or platform == cell.platforms[0]:
        return f"{root}/{cell.tag}"
    return f"{root}/{cell.tag}/{platform.replace('/', '-')}"


# --- image references ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRef:
    """`[registry/]repository[:tag][@digest]`; `registry` is "" when the reference names none."""

    registry: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """`registry/repository`, what `docker push` and `RepoDigests` call the repository."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def with_tag(self, tag: str) -> ImageRef:
        return replace(self, tag=tag, digest="")

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_reference(text: str) -> ImageRef:
    """Split a reference as Docker does: the first path component is a registry when it has a dot or a
    port or is `localhost`; the tag follows the last `:` after the last `/`."""
    rest, _, digest = text.partition("@")
    tag = ""
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
    first, slash, remainder = rest.partition("/")
    if slash and is_registry_host(first):
        return ImageRef(first, remainder, tag, digest)
    return ImageRef("", rest, tag, digest)


def is_registry_host(component: str) -> bool:
    """Whether a reference's first component names a registry (`host.domain`, `host:port`, `localhost`)."""
    named = "." in component or ":" in component or component == "localhost"
    return named and bool(_HOST_RE.match(component))


def is_path_component(component: str) -> bool:
    """One component of a repository path as registries accept it: lowercase letters, digits, . _ -."""
    return bool(_COMPONENT_RE.match(component))


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (with or without a port)."""
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.partition(":")[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
