"""matrix.yaml: its model, validation with one-line errors, and expansion into resolved cells."""

from __future__ import annotations

import difflib
import fnmatch
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from builder.errors import ConfigError, ImpossibleCellError
from builder.model import compat
from builder.model.cell import Cell, Customization
from builder.model.naming import PYTORCH_INDEX, VARIANTS, CellKey, version_tuple
from builder.model.secrets import looks_secret

DEFAULT_MATRIX = Path("matrix.yaml")
Platform = Literal["linux/amd64", "linux/arm64"]  # builder.model.platforms.PLATFORMS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Axes(_Strict):
    torch: list[str]
    accelerator: list[str]
    os: list[str]
    variant: list[Literal["slim", "full"]] = Field(
        default_factory=lambda: list[Literal["slim", "full"]](["slim"])
    )


class Selector(_Strict):
    """A cell or a set of cells; missing coordinates match anything (exclude)."""

    torch: str | None = None
    accelerator: str | None = None
    os: str | None = None
    variant: Literal["slim", "full"] | None = None
    platforms: list[Platform] | None = None  # include only: this cell's platforms (each must be possible)

    def matches(self, key: CellKey) -> bool:
        pairs = ((self.torch, key.torch), (self.accelerator, key.accelerator), (self.os, key.os))
        variant_ok = self.variant is None or self.variant == key.variant
        return variant_ok and all(want is None or want == have for want, have in pairs)


class Override(_Strict):
    """Settings and additions for the cells whose tag matches `select` (a glob, cibuildwheel style)."""

    select: str
    cuda_dev_base: Literal["wheels", "nvidia"] | None = None
    wheel_index: str | None = None
    pip: list[str] = Field(default_factory=list)
    apt: list[str] = Field(default_factory=list)
    snippet: str = ""
    size_budget_gb: float | None = None
    platforms: list[Platform] | None = None  # where a matched cell cannot be built for one, it is left out

    @field_validator("pip", "apt")
    @classmethod
    def _no_secret_packages(cls, values: list[str]) -> list[str]:
        for value in values:
            _refuse_secret(value)
        return values

    @field_validator("snippet", "wheel_index")
    @classmethod
    def _no_secret_text(cls, value: str | None) -> str | None:
        if value:
            _refuse_secret(value)
        return value


class Budgets(_Strict):
    """Image size budgets in GB (decimal, as `docker images` shows them)."""

    slim_cpu: float = 2.5
    slim_cuda: float = 7.0
    full_cpu: float = 5.0
    full_cuda: float = 16.0  # on NVIDIA's cuDNN devel image, which carries a second CUDA and cuDNN
    full_cuda_wheels: float = (
        9.0  # nvcc from NVIDIA's wheels: `make verify` measured 7.26 GB (2.14, CUDA 13.0)
    )

    def for_key(self, key: CellKey, dev_base: str | None = None) -> float:
        if dev_base == "wheels":
            return self.full_cuda_wheels
        value: float = getattr(self, f"{key.variant}_{'cuda' if key.is_cuda else 'cpu'}")
        return value


class Profile(_Strict):
    """Where a build takes its base images, Python packages, wheels, apt and conda packages from.

    Values may name environment variables as `${NAME}` (the `local` profile does).
    """

    description: str = ""
    registry: str = "docker.io"
    pypi: str = "https://pypi.org/simple"
    pytorch: str = PYTORCH_INDEX  # {index}: cu128, cpu, ...
    pytorch_layout: Literal["index", "find-links"] = "index"
    apt: dict[Literal["debian", "debian_security", "ubuntu", "ubuntu_security"], str] = Field(
        default_factory=dict
    )
    conda: str = "https://conda.anaconda.org"
    trusted_host: bool = False
    ca_bundle: str | None = None
    lock_bases: bool = True  # false for a per-machine registry (the sandbox): digests differ per machine

    @field_validator("registry", "pypi", "pytorch", "conda")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        _refuse_secret(value)
        return value


class Mirrors(_Strict):
    default: str = "official"
    profiles: dict[str, Profile]


class RegistryTarget(_Strict):
    target: str = "localhost:5000/pytorch"


class MatrixFile(_Strict):
    axes: Axes
    platforms: list[Platform] = Field(default_factory=lambda: list[Platform](["linux/amd64"]))
    include: list[Selector] = Field(default_factory=list)
    exclude: list[Selector] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)
    budgets: Budgets = Field(default_factory=Budgets)
    mirrors: Mirrors
    registry: RegistryTarget = Field(default_factory=RegistryTarget)


def _refuse_secret(value: str) -> None:
    kind = looks_secret(value)
    if kind:
        raise ValueError(f"looks like {kind}; secrets never go into matrix.yaml (use the environment)")


@dataclass(frozen=True)
class Drop:
    """A cartesian-product cell that cannot exist (or, with `platform`, cannot be built for that
    platform, which the matrix or an override asked for), and why."""

    key: CellKey
    reasons: tuple[str, ...]
    platform: str = ""


@dataclass(frozen=True)
class Matrix:
    """A validated matrix.yaml with its expansion."""

    path: Path
    spec: MatrixFile
    cells: tuple[Cell, ...]
    drops: tuple[Drop, ...]
    platform_drops: tuple[
        Drop, ...
    ] = ()  # a platform the matrix or an override asked for, left out of a cell

    def cell(self, tag_or_key: str | CellKey) -> Cell:
        """The cell for a tag; an impossible or absent tag raises with reasons and neighbours."""
        from builder.model.naming import parse_tag

        key = parse_tag(tag_or_key) if isinstance(tag_or_key, str) else tag_or_key
        for cell in self.cells:
            if cell.key == key:
                return cell
        reasons, _ = compat.problems(key, settings_for(self.spec, key), compat.load())
        if not reasons:
            _, resolved, _ = resolve(self.spec, key)
            if resolved is not None:
                return resolved
        raise ImpossibleCellError(
            f"{key.tag} is impossible", lines=impossible_lines(key, reasons, self.neighbours(key))
        )

    def neighbours(self, key: CellKey, limit: int = 4) -> list[str]:
        """Valid tags near `key`: same torch, same accelerator, same OS, each with the rest closest."""
        data = compat.load()
        universe = [
            k
            for k in _universe(data, key.variant)
            if not compat.problems(k, settings_for(self.spec, k), data)[0]
        ]
        picks: list[str] = []
        for same in ("torch", "accelerator", "os"):
            pool = [k for k in universe if getattr(k, same) == getattr(key, same) and k != key]
            pool.sort(key=lambda k: _distance(key, k, data))
            for candidate in pool[: 2 if same == "torch" else 1]:
                if candidate.tag not in picks:
                    picks.append(candidate.tag)
        return picks[:limit]

    def select_or_all(self, patterns: Iterable[str] | None) -> list[Cell]:
        """Every cell, or with patterns (`--only`) those whose tag matches one."""
        return self.select(patterns) if patterns else list(self.cells)

    def select(self, patterns: Iterable[str]) -> list[Cell]:
        """Cells whose tag matches any glob; a pattern that matches nothing is an error."""
        chosen: list[Cell] = []
        for pattern in patterns:
            hits = [c for c in self.cells if fnmatch.fnmatchcase(c.tag, pattern)]
            if not hits:
                if any(ch in pattern for ch in "*?["):
                    raise ConfigError(f"{self.path}: --only {pattern!r} matches no cell")
                hits = [self.cell(pattern)]
            chosen.extend(c for c in hits if c not in chosen)
        return chosen


def impossible_lines(key: CellKey, reasons: list[str], neighbours: list[str]) -> list[str]:
    lines = [f"{key.tag} is impossible: {reason}" for reason in reasons]
    if neighbours:
        lines.append(f"nearest valid tags: {', '.join(neighbours)}")
    return lines


def _universe(data: compat.CompatData, variant: str) -> list[CellKey]:
    return [
        CellKey(t, a, o, variant)
        for t, a, o in itertools.product(data.torch_minors(), data.accelerators(), data.oses())
    ]


def _distance(want: CellKey, have: CellKey, data: compat.CompatData) -> tuple[float, ...]:
    torch_order = data.torch_minors()
    torch_gap = (
        abs(torch_order.index(want.torch) - torch_order.index(have.torch)) if want.torch in torch_order else 0
    )

    def accel_pos(accelerator: str) -> float:
        return (
            -1.0 if accelerator == "cpu" else float(".".join(str(v) for v in version_tuple(accelerator[4:])))
        )

    accel_gap = abs(accel_pos(want.accelerator) - accel_pos(have.accelerator))
    if (want.accelerator == "cpu") != (have.accelerator == "cpu"):
        accel_gap += 100
    want_os = data.os.get(want.os)
    have_os = data.os[have.os]
    same_family = want_os is not None and want_os.family == have_os.family
    os_gap = abs(float(want_os.version) - float(have_os.version)) if same_family and want_os else 50.0
    return (torch_gap + accel_gap + os_gap, os_gap, -version_tuple(have.torch)[1])


def settings_for(spec: MatrixFile, key: CellKey) -> compat.Settings:
    """Settings from every override whose selector matches the tag, later ones winning."""
    merged: dict[str, Any] = {}
    for override in spec.overrides:
        if fnmatch.fnmatchcase(key.tag, override.select):
            for name in ("cuda_dev_base", "wheel_index"):
                value = getattr(override, name)
                if value is not None:
                    merged[name] = value
    return compat.Settings(**merged)


def _customization(spec: MatrixFile, key: CellKey) -> tuple[Customization, float | None]:
    pip: list[str] = []
    apt: list[str] = []
    snippets: list[str] = []
    budget: float | None = None
    for override in spec.overrides:
        if fnmatch.fnmatchcase(key.tag, override.select):
            pip += [p for p in override.pip if p not in pip]
            apt += [a for a in override.apt if a not in apt]
            if override.snippet:
                snippets.append(override.snippet.rstrip("\n"))
            budget = override.size_budget_gb if override.size_budget_gb is not None else budget
    return Customization(pip=tuple(pip), apt=tuple(apt), snippet="\n".join(snippets)), budget


def platforms_for(spec: MatrixFile, key: CellKey) -> list[str]:
    """The platforms a cell asks for: the last matching override's `platforms`, else the matrix's."""
    chosen: list[str] = list(spec.platforms)
    for override in spec.overrides:
        if override.platforms is not None and fnmatch.fnmatchcase(key.tag, override.select):
            chosen = list(override.platforms)
    return chosen


def resolve(
    spec: MatrixFile, key: CellKey, platforms: list[str] | None = None
) -> tuple[list[str], Cell | None, list[Drop]]:
    """Resolve one key into a Cell, or return the reasons it cannot exist. `platforms` (an include's own)
    must all be possible; otherwise the matrix's or an override's platforms apply and each impossible one
    is left out of the cell (third list: those, with their reasons)."""
    data = compat.load()
    settings = settings_for(spec, key)
    reasons, warnings = compat.problems(key, settings, data)
    if reasons:
        return reasons, None, []
    kept: list[str] = []
    left_out: list[Drop] = []
    for platform in dict.fromkeys(platforms or platforms_for(spec, key)):
        why, trusted = compat.platform_problems(key, platform, settings, data)
        warnings += trusted
        if not why:
            kept.append(platform)
        elif platforms:
            reasons += [f"{platform}: {reason}" for reason in why]
        else:
            left_out.append(Drop(key, tuple(why), platform))
    if reasons:
        return reasons, None, []
    if not kept:
        return [f"{d.platform}: {r}" for d in left_out for r in d.reasons], None, []
    release = data.torch[key.torch]
    os_release = data.os[key.os]
    cuda = key.cuda
    cuda_release = data.cuda[cuda] if cuda else None
    if settings.wheel_index:
        wheel_source, wheel_index = "custom", settings.wheel_index
    elif cuda is not None and cuda == release.pypi_cuda:
        wheel_source, wheel_index = "pypi", ""
    else:
        wheel_source, wheel_index = "pytorch", "cpu" if cuda is None else "cu" + cuda.replace(".", "")
    local_label = "+" + ("cpu" if cuda is None else "cu" + cuda.replace(".", ""))
    customization, budget = _customization(spec, key)
    dev_base = None
    if cuda is not None and key.variant == "full":
        dev_base = settings.cuda_dev_base or compat.default_cuda_dev_base(cuda, data)
    cell = Cell(
        key=key,
        torch_version=release.version,
        torchvision_version=release.torchvision,
        torchaudio_version=release.torchaudio,
        python_version=os_release.python,
        os_family=os_release.family,
        os_version=os_release.version,
        os_codename=os_release.codename,
        base_image=compat.base_image(key, settings, data),
        wheel_source=wheel_source,
        wheel_index=wheel_index,
        local_label=local_label if wheel_source != "pypi" else "",
        cuda_version=cuda_release.version if cuda_release else None,
        cudnn_version=_cudnn(release, wheel_source) if cuda else None,
        nccl_version=release.nccl if cuda else None,
        min_driver=cuda_release.min_driver if cuda_release else None,
        min_driver_compat=compat.minor_version_driver(cuda, data) if cuda else None,
        arch_list=compat.arch_list(key, data),
        arm64_arch_list=compat.arm64_arch_list(key, data),
        cuda_dev_base=dev_base,
        cuda_toolkit=compat.cuda_toolkit(cuda, os_release.python, dev_base, data)
        if cuda and dev_base
        else None,
        size_budget_gb=budget if budget is not None else spec.budgets.for_key(key, dev_base),
        customization=customization,
        warnings=tuple(warnings),
        platforms=tuple(kept),
    )
    return [], cell, left_out


def _cudnn(release: compat.TorchRelease, wheel_source: str) -> str | None:
    """cuDNN as the default PyPI wheel pins it; other builds of the release share only its major."""
    if release.cudnn is None or wheel_source == "pypi":
        return release.cudnn
    return release.cudnn.split(".")[0]


def load(path: Path = DEFAULT_MATRIX) -> Matrix:
    """Read, validate and expand a matrix file; every problem becomes one line of a ConfigError."""
    spec = parse(path)
    data = compat.load()
    errors = _axis_errors(path, spec, data)
    if errors:
        raise ConfigError(errors[0], lines=errors)
    keys = [
        CellKey(*combo)
        for combo in itertools.product(
            spec.axes.torch, spec.axes.accelerator, spec.axes.os, spec.axes.variant
        )
    ]
    keys = [k for k in keys if not any(sel.matches(k) for sel in spec.exclude)]
    cells: dict[CellKey, Cell] = {}
    drops: list[Drop] = []
    platform_drops: list[Drop] = []
    for key in keys:
        reasons, cell, left_out = resolve(spec, key)
        if cell is None:
            drops.append(Drop(key, tuple(reasons)))
        else:
            cells[key] = cell
            platform_drops += left_out
    errors = []
    seen: dict[CellKey, int] = {}
    for index, selector in enumerate(spec.include):
        key = _include_key(path, index, selector)
        if key in seen:
            errors.append(f"{path}: include[{index}]: duplicate of include[{seen[key]}] ({key.tag})")
            continue
        seen[key] = index
        own = [str(p) for p in selector.platforms] if selector.platforms is not None else None
        reasons, cell, left_out = resolve(spec, key, own)
        if cell is None:
            errors.append(f"{path}: include[{index}]: {key.tag} is impossible: {'; '.join(reasons)}")
        else:
            cells[key] = cell
            platform_drops = [d for d in platform_drops if d.key != key] + left_out
    if errors:
        raise ConfigError(errors[0], lines=errors)
    if not cells:
        raise ConfigError(
            f"{path}: the matrix expands to no valid cell ({len(drops)} dropped; see `list --explain-drops`)"
        )
    ordered = tuple(sorted(cells.values(), key=lambda c: _sort_key(c.key)))
    return Matrix(
        path=path, spec=spec, cells=ordered, drops=tuple(drops), platform_drops=tuple(platform_drops)
    )


def _sort_key(key: CellKey) -> tuple[Any, ...]:
    accel = (0,) if key.accelerator == "cpu" else version_tuple(key.accelerator[4:])
    return (version_tuple(key.torch), accel, key.os, VARIANTS.index(key.variant))


def _include_key(path: Path, index: int, selector: Selector) -> CellKey:
    missing = [n for n in ("torch", "accelerator", "os") if getattr(selector, n) is None]
    if missing:
        raise ConfigError(
            f"{path}: include[{index}]: missing {', '.join(missing)} (an include names one cell)"
        )
    assert selector.torch and selector.accelerator and selector.os
    return CellKey(selector.torch, selector.accelerator, selector.os, selector.variant or "slim")


def _axis_errors(path: Path, spec: MatrixFile, data: compat.CompatData) -> list[str]:
    allowed = {"torch": data.torch_minors(), "accelerator": data.accelerators(), "os": data.oses()}
    errors: list[str] = []
    for axis, values in allowed.items():
        chosen: list[str] = getattr(spec.axes, axis)
        if not chosen:
            errors.append(f"{path}: axes.{axis}: empty; allowed: {', '.join(values)}")
        errors.extend(_value_errors(path, f"axes.{axis}", chosen, values, axis))
    for section in ("include", "exclude"):
        for index, selector in enumerate(getattr(spec, section)):
            for axis, values in allowed.items():
                value = getattr(selector, axis)
                if value is not None:
                    errors.extend(_value_errors(path, f"{section}[{index}].{axis}", [value], values, axis))
    if spec.mirrors.default not in spec.mirrors.profiles:
        errors.append(
            f"{path}: mirrors.default: unknown profile {spec.mirrors.default!r}; "
            f"allowed: {', '.join(spec.mirrors.profiles)}"
        )
    return errors


def _value_errors(path: Path, where: str, chosen: list[str], allowed: list[str], axis: str) -> list[str]:
    errors = []
    for index, value in enumerate(chosen):
        if value not in allowed:
            what = "a PyTorch version never released" if axis == "torch" else f"unknown {axis}"
            hint = difflib.get_close_matches(value, allowed, n=1)
            suggestion = f" (did you mean {hint[0]}?)" if hint else ""
            errors.append(
                f"{path}: {where}[{index}]: {what} {value!r}{suggestion}; allowed: {', '.join(allowed)}"
            )
    return errors


def parse(path: Path) -> MatrixFile:
    """Parse and validate the file's structure (not yet its values against the compat data)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(MatrixFile.model_fields)}")
    try:
        return MatrixFile.model_validate(raw)
    except ValidationError as exc:
        lines = [_error_line(path, error) for error in exc.errors()]
        raise ConfigError(lines[0], lines=lines) from None


def _error_line(path: Path, error: Any) -> str:
    loc = error["loc"]
    where = ""
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    bad = error.get("input")
    if error["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = list(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        suggestion = f" (did you mean {hint[0]}?)" if hint else ""
        return f"{path}: {where}: unknown key{suggestion}; allowed: {', '.join(allowed)}"
    message = error["msg"].removeprefix("Value error, ")
    shown = f" {bad!r}" if bad is not None and not isinstance(bad, dict | list) else ""
    return f"{path}: {where}:{shown} {message}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model found by following a location path from MatrixFile."""
    model: type[BaseModel] = MatrixFile
    for part in loc:
        if isinstance(part, int) or part not in model.model_fields:
            continue
        annotation = model.model_fields[part].annotation
        inner = _first_model(annotation)
        if inner is None:
            return model if part == loc[-1] else None
        model = inner
    return model


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _first_model(arg)
        if found is not None:
            return found
    return None
