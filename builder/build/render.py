"""Rendering a resolved cell: `images/<tag>/Dockerfile` and `cell.json`, and the cell's build context.

Pure apart from reading templates and shipped files and writing the output folder; rendering is
deterministic (the same matrix and templates give byte-identical files on every machine).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

import jinja2

from builder.errors import ConfigError
from builder.model.cell import Cell
from builder.model.naming import (
    CELLS_DIR,
    TAG_RE,
    cell_labels,
    immutable_tag,
    requirements_path,
    torch_index_url,
)
from builder.model.profiles import OFFICIAL_APT

TEMPLATE = "Dockerfile.j2"
# Per-cell copies an older layout rendered next to the Dockerfile; render removes them, --check names them.
RETIRED_NAMES = ("smoke.py", "entrypoint.sh", "certs/extra-ca.crt", ".dockerignore")

# The build context is laid out as the repository is, so that `docker build -f images/<tag>/Dockerfile .`
# from its root and the tool's in-memory context (Renderer.context) hold the same files at the same paths;
# each file exists once. The rendered Dockerfiles COPY these paths (the root .dockerignore lets in only them).
SUITE_PATH = "builder/resources/smoke_suite.py"
ENTRYPOINT_PATH = "builder/resources/entrypoint.sh"
DEV_SETUP_PATH = "builder/resources/dev-setup.sh"
INSTALLER_PATH = "builder/resources/install_lock.py"  # installs a cell's hash lock in the image
SETTLE_PATH = "builder/resources/settle-layer.sh"  # ends each RUN step: same bytes on every rebuild
CA_DIR = "certs/"
CA_FILE = "certs/extra-ca.crt"  # empty in the repository; the tool puts the profile's CA bundle here


@dataclass(frozen=True)
class ContextPaths:
    """Where a cell's files sit in its build context (what its Dockerfile COPYs)."""

    tag: str
    suite: str = SUITE_PATH
    entrypoint: str = ENTRYPOINT_PATH
    dev_setup: str = DEV_SETUP_PATH
    installer: str = INSTALLER_PATH
    settle: str = SETTLE_PATH
    ca_dir: str = CA_DIR

    @property
    def dockerfile(self) -> str:
        return f"{CELLS_DIR}/{self.tag}/Dockerfile"

    @property
    def cell_json(self) -> str:
        return f"{CELLS_DIR}/{self.tag}/cell.json"

    @property
    def lock(self) -> str:
        """The cell's hash lock (the full variant's devtools stage installs the rest of it)."""
        return requirements_path(self.tag)

    @property
    def torch_lock(self) -> str:
        """The hash lock the torch stage installs: the slim sibling's, so slim and full share that stage."""
        return requirements_path(self.tag.removesuffix("-full"))

    def torch_lock_for(self, platform: str) -> str:
        """`torch_lock` for one platform of a multi-platform cell (`linux/arm64`)."""
        return requirements_path(self.tag.removesuffix("-full"), platform.replace("/", "-"))


def shipped_file(context_path: str) -> bytes:
    """A file the package ships (the smoke suite, the entrypoint), by its path in the build context."""
    return resources.files("builder.resources").joinpath(PurePosixPath(context_path).name).read_bytes()


APT_SOURCES = {
    "debian": (
        "deb ${APT_MIRROR} {codename} main",
        "deb ${APT_MIRROR} {codename}-updates main",
        "deb ${APT_SECURITY_MIRROR} {codename}-security main",
    ),
    "ubuntu": (
        "deb ${APT_MIRROR} {codename} main restricted universe multiverse",
        "deb ${APT_MIRROR} {codename}-updates main restricted universe multiverse",
        "deb ${APT_SECURITY_MIRROR} {codename}-security main restricted universe multiverse",
    ),
}


def expected_values(cell: Cell) -> dict[str, object]:
    """cell.json: what the in-image smoke suite checks the image against."""
    full = cell.variant == "full"
    values: dict[str, object] = {
        "tag": cell.tag,
        "immutable_tag": immutable_tag(cell),
        "variant": cell.variant,
        "python": cell.python_version,
        "torch": cell.torch_version,
        "torchvision": cell.torchvision_version if full else None,
        "torchaudio": cell.torchaudio_version if full else None,
        "cuda": cell.cuda_minor,
        "cudnn_major": cell.cudnn_major,
        "min_driver": cell.min_driver,
        "gpu_archs": list(cell.gpu_archs),
    }
    if cell.is_cuda and cell.gpu_archs_by_machine:
        values["gpu_archs_by_machine"] = cell.gpu_archs_by_machine
    return values


SHIPPED_TEMPLATES = Path(str(resources.files("builder.resources").joinpath("templates")))


def images_dir(matrix_path: Path) -> Path:
    """Where a matrix's cells are rendered unless told otherwise: `images/` next to its matrix.yaml."""
    return matrix_path.parent / CELLS_DIR


def templates_for(matrix_path: Path) -> Path:
    """A project's own `templates/` next to its matrix.yaml when it has one, else the shipped templates."""
    project = matrix_path.resolve().parent / "templates"
    return project if project.is_dir() else SHIPPED_TEMPLATES


@dataclass
class Renderer:
    """Renders cells with the templates in `templates_dir` (StrictUndefined: a typo is an error)."""

    templates_dir: Path

    def __post_init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.templates_dir),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            autoescape=False,
        )

    def files(self, cell: Cell) -> dict[str, bytes]:
        """The files rendered for the cell into `images/<tag>/`, by name."""
        return {
            "Dockerfile": self._dockerfile(cell).encode(),
            "cell.json": (json.dumps(expected_values(cell), indent=2, sort_keys=True) + "\n").encode(),
        }

    def context(
        self, cell: Cell, *, ca_bundle: bytes = b"", locks: Mapping[str, bytes] | None = None
    ) -> dict[str, bytes]:
        """The cell's whole build context by path: its rendered files, its hash locks (`locks`, by path:
        `cell_lock.context_files`), the shipped smoke suite and lock installer (and, for full cells, the
        entrypoint and the dev setup script) and the CA bundle (empty: none)."""
        paths = ContextPaths(cell.tag)
        rendered = self.files(cell)
        context = {
            paths.dockerfile: rendered["Dockerfile"],
            paths.cell_json: rendered["cell.json"],
            paths.suite: shipped_file(paths.suite),
            paths.installer: shipped_file(paths.installer),
            paths.settle: shipped_file(paths.settle),
            CA_FILE: ca_bundle,
            **(locks or {}),
        }
        if cell.variant == "full":
            context[paths.entrypoint] = shipped_file(paths.entrypoint)
            context[paths.dev_setup] = shipped_file(paths.dev_setup)
        return context

    def _dockerfile(self, cell: Cell) -> str:
        family = cell.os_family
        context = {
            "cell": cell,
            "immutable_tag": immutable_tag(cell),
            "cell_labels": cell_labels(cell),
            "apt_sources": [line.replace("{codename}", cell.os_codename) for line in APT_SOURCES[family]],
            "apt_defaults": {"mirror": OFFICIAL_APT[family], "security": OFFICIAL_APT[f"{family}_security"]},
            "torch_index_default": torch_index_url(cell),
            "paths": ContextPaths(cell.tag),
        }
        try:
            return self.env.get_template(TEMPLATE).render(context)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"templates/{exc.name or TEMPLATE}:{exc.lineno}: {exc.message}") from None
        except jinja2.UndefinedError as exc:
            where = self._template_frame(exc) or f"templates/{TEMPLATE}"
            raise ConfigError(f"{where}: {exc.message} (rendering {cell.tag})") from None
        except jinja2.TemplateNotFound as exc:
            raise ConfigError(f"templates/: template {exc.name!r} not found") from None

    def _template_frame(self, exc: BaseException) -> str | None:
        """`templates/partials/x.j2:LINE` of the innermost template frame of an exception."""
        found = None
        for frame, line in traceback.walk_tb(exc.__traceback__):
            filename = frame.f_code.co_filename
            if filename.endswith(".j2") and Path(filename).is_relative_to(self.templates_dir):
                found = f"templates/{Path(filename).relative_to(self.templates_dir)}:{line}"
        return found


def write(out_dir: Path, tag: str, files: Mapping[str, bytes]) -> Path:
    """Write one cell's files into `out_dir/<tag>/`, removing the copies an older layout left there."""
    target = out_dir / tag
    for name in RETIRED_NAMES:
        if (target / name).exists():
            (target / name).unlink()
            if (target / name).parent != target and not any((target / name).parent.iterdir()):
                (target / name).parent.rmdir()
    target.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = target / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
        path.chmod(0o644)
    return target


def stale(out_dir: Path, rendered: Mapping[str, Mapping[str, bytes]], *, complete: bool) -> list[str]:
    """Files under out_dir that differ from a fresh render, are missing, or (complete) belong to no cell."""
    problems: list[str] = []
    for tag, files in rendered.items():
        for name, content in files.items():
            path = out_dir / tag / name
            if not path.exists():
                problems.append(f"missing: {path}")
            elif path.read_bytes() != content or path.stat().st_mode & 0o777 != 0o644:
                problems.append(f"stale: {path}")
        for name in RETIRED_NAMES:
            if (out_dir / tag / name).exists():
                problems.append(f"stale: {out_dir / tag / name} (no longer generated)")
    if complete and out_dir.is_dir():
        for child in sorted(out_dir.iterdir()):
            if child.is_dir() and child.name not in rendered and TAG_RE.match(child.name):
                problems.append(f"stale: {child}/ (no such cell in the matrix)")
    return problems


def remove_orphans(out_dir: Path, keep: Iterable[str]) -> list[Path]:
    """Delete cell folders under out_dir that the matrix no longer has."""
    keep_set = set(keep)
    removed = []
    if out_dir.is_dir():
        for child in sorted(out_dir.iterdir()):
            if child.is_dir() and child.name not in keep_set and TAG_RE.match(child.name):
                shutil.rmtree(child)
                removed.append(child)
    return removed


def content_hash(files: Mapping[str, bytes], build_args: Mapping[str, str] | None = None) -> str:
    """sha256 over the build context and the build arguments: equal hashes mean an identical build input."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    for name in sorted(build_args or {}):
        digest.update(f"{name}={(build_args or {})[name]}\0".encode())
    return digest.hexdigest()


def render_all(cells: Iterable[Cell], templates_dir: Path) -> dict[str, dict[str, bytes]]:
    """Every cell's files, in memory, by tag (a template or matrix problem raises ConfigError)."""
    renderer = Renderer(templates_dir)
    return {cell.tag: renderer.files(cell) for cell in cells}


@dataclass(frozen=True)
class RenderRun:
    """What `render` did (or, with check, found): cells rendered, stale files, removed folders."""

    cells: int
    problems: list[str]
    removed: list[Path]
    seconds: float


def render_cells(
    cells: list[Cell], templates_dir: Path, out_dir: Path, *, complete: bool, check: bool
) -> RenderRun:
    """Render cells into `out_dir/<tag>/`; `complete` (all cells): also drop folders of cells gone from the
    matrix. With check nothing is written: the stale or missing files are listed instead."""
    started = time.perf_counter()
    rendered = render_all(cells, templates_dir)
    if check:
        problems = stale(out_dir, rendered, complete=complete)
        return RenderRun(len(rendered), problems, [], time.perf_counter() - started)
    for tag, files in rendered.items():
        write(out_dir, tag, files)
    removed = remove_orphans(out_dir, rendered) if complete else []
    return RenderRun(len(rendered), [], removed, time.perf_counter() - started)
