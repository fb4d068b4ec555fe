"""`compat check`: what PyPI released that builder/resources/compat.yaml does not know yet, as a reviewable diff.

The pure part takes release lists (versions, wheel files, Requires-Dist, Requires-Python) and the data
file's text, and proposes new `torch:` entries (a new minor) or updated fields (a new patch of a known
minor) as a unified diff. The data file is never written: a person reviews and applies the diff.
The I/O part at the end reads PyPI's JSON API or a PEP 691 simple index (a mirror).
"""

from __future__ import annotations

import difflib
import io
import json
import re
import ssl
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.parser import HeaderParser
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version
from pydantic import ValidationError

from builder.errors import ConfigError, MirrorError
from builder.model.compat import COMPAT_FILE, CompatData, TorchRelease

DATA_PATH = f"builder/resources/{COMPAT_FILE}"
PYPI = "https://pypi.org"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
COMMENT_COLUMN = 33
UNVERIFIED_CUDA = (
    "unverified: compat check reads only the PyPI wheel's CUDA; add the cuXYZ indexes "
    "download.pytorch.org publishes"
)

# ---------------------------------------------------------------------------------------------------
# Pure logic: releases in, proposal out.
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseFile:
    """One uploaded file of a release (JSON API `urls`/`releases` entry or a PEP 691 `files` entry)."""

    filename: str
    url: str = ""
    requires_python: str | None = None
    upload_time: str | None = None  # ISO 8601
    yanked: bool = False
    has_metadata: bool = False  # PEP 658: `<url>.metadata` serves the wheel's METADATA
    size: int = 0


@dataclass(frozen=True)
class Release:
    """A release of a project with the Requires-Dist of its default Linux wheel (None: not read)."""

    version: str
    files: tuple[ReleaseFile, ...]
    requires_dist: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Pin:
    """A version read from a `name==version` requirement, and the requirement as shown in comments."""

    version: str
    requirement: str


@dataclass(frozen=True)
class WheelCuda:
    """What a torch wheel's Requires-Dist says about CUDA, cuDNN and NCCL."""

    cuda: Pin | None = None  # version is major.minor
    cudnn: Pin | None = None  # version is major.minor.patch
    nccl: Pin | None = None


@dataclass(frozen=True)
class Change:
    """One field of one torch minor that PyPI says differs from the data (old None: a new minor)."""

    minor: str
    field: str
    old: str | None
    new: str


@dataclass
class Proposal:
    """The outcome of a check: the changes, notes for the reviewer, and the data text before and after."""

    changes: list[Change]
    notes: list[str]
    old_text: str
    new_text: str
    path: str = DATA_PATH

    @property
    def diff(self) -> str:
        """A unified diff of the data file, applicable with `git apply` (empty when current)."""
        lines = difflib.unified_diff(
            self.old_text.splitlines(keepends=True),
            self.new_text.splitlines(keepends=True),
            fromfile=f"a/{self.path}",
            tofile=f"b/{self.path}",
        )
        return "".join(lines)

    @property
    def current(self) -> bool:
        return self.old_text == self.new_text


_CUDA_RUNTIME = re.compile(r"^nvidia-cuda-runtime(-cu\d+)?$")
_CUDNN = re.compile(r"^nvidia-cudnn-cu\d+$")
_NCCL = re.compile(r"^nvidia-nccl-cu\d+$")


def _exact_pin(requirement: Requirement) -> str | None:
    for spec in requirement.specifier:
        if spec.operator in ("==", "==="):
            return spec.version
    return None


def _shorten(version: str, parts: int) -> str:
    return ".".join(version.split(".")[:parts])


def wheel_cuda(requires_dist: Iterable[str]) -> WheelCuda:
    """CUDA from `cuda-toolkit[...]==13.0.3` or `nvidia-cuda-runtime[-cu12]==12.8.90`; cuDNN; NCCL."""
    cuda = cudnn = nccl = None
    for text in requires_dist:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and not _on_linux(requirement):
            continue
        name = requirement.name.lower().replace("_", "-")
        version = _exact_pin(requirement)
        if version is None:
            continue
        shown = f"{name}{'[...]' if requirement.extras else ''}=={version}"
        if name == "cuda-toolkit" or (_CUDA_RUNTIME.match(name) and cuda is None):
            cuda = Pin(_shorten(version, 2), shown)
        elif _CUDNN.match(name):
            cudnn = Pin(_shorten(version, 3), shown)
        elif _NCCL.match(name):
            nccl = Pin(_shorten(version, 3), shown)
    return WheelCuda(cuda=cuda, cudnn=cudnn, nccl=nccl)


def _on_linux(requirement: Requirement) -> bool:
    assert requirement.marker is not None
    environment = {"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64"}
    return any(
        requirement.marker.evaluate({**environment, "python_version": py, "extra": ""})
        for py in ("3.10", "3.12", "3.14")
    )


def _wheel_tags(filename: str) -> list[tuple[str, str, str]]:
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return []
    return [(tag.interpreter, tag.abi, tag.platform) for tag in tags]


def is_linux_x86_64(filename: str) -> bool:
    return any("linux" in plat and plat.endswith("x86_64") for _, _, plat in _wheel_tags(filename))


def linux_pythons(files: Iterable[ReleaseFile]) -> list[str]:
    """CPython minors with Linux x86_64 wheels (`cp312-cp312-manylinux...`), free-threaded ones left out."""
    found: set[str] = set()
    for item in files:
        for interpreter, abi, plat in _wheel_tags(item.filename):
            if not ("linux" in plat and plat.endswith("x86_64")) or not interpreter.startswith("cp"):
                continue
            if abi.endswith("t"):
                continue
            digits = interpreter[2:]
            if digits.isdigit() and len(digits) >= 2:
                found.add(f"{digits[0]}.{digits[1:]}")
    return sorted(found, key=_minor_key)


def pythons_from_requires(requires_python: str, known: Sequence[str]) -> list[str]:
    """Fallback without wheel tags: the known Python minors that Requires-Python accepts."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet

    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return list(known)
    return [v for v in known if spec.contains(f"{v}.0")]


def requires_python(files: Iterable[ReleaseFile]) -> str | None:
    """Requires-Python of the release's Linux x86_64 wheels (else any file's)."""
    files = list(files)
    for item in sorted(files, key=lambda f: not is_linux_x86_64(f.filename)):
        if item.requires_python:
            return item.requires_python
    return None


def released_on(files: Iterable[ReleaseFile]) -> str | None:
    """The day of the release's first upload (YYYY-MM-DD)."""
    times = sorted(f.upload_time for f in files if f.upload_time)
    return times[0][:10] if times else None


def metadata_file(files: Iterable[ReleaseFile]) -> ReleaseFile | None:
    """The wheel whose METADATA speaks for the release: cp312 Linux x86_64 first, any Linux x86_64 next."""
    linux = [f for f in files if is_linux_x86_64(f.filename) and not f.yanked]
    linux.sort(key=lambda f: ("-cp312-cp312-" not in f.filename, not f.has_metadata, f.filename))
    return linux[0] if linux else None


def minor_of(version: str) -> str:
    parsed = Version(version)
    return f"{parsed.major}.{parsed.minor}"


def _stable(versions: Mapping[str, Sequence[ReleaseFile]]) -> list[Version]:
    out = []
    for text, files in versions.items():
        try:
            parsed = Version(text)
        except InvalidVersion:
            continue
        live = [f for f in files if not f.yanked]
        if parsed.is_prerelease or parsed.is_devrelease or parsed.local or not live:
            continue
        if not any(is_linux_x86_64(f.filename) for f in live):
            continue
        out.append(parsed)
    return sorted(out)


def newer_torch(data: CompatData, versions: Mapping[str, Sequence[ReleaseFile]]) -> list[str]:
    """The newest stable patch of each minor that is newer than the data: new patches and new minors."""
    known = data.torch_minors()
    newest_known = Version(known[-1]) if known else Version("0")
    best: dict[str, Version] = {}
    for version in _stable(versions):
        minor = f"{version.major}.{version.minor}"
        if minor in data.torch:
            if version <= Version(data.torch[minor].version):
                continue
        elif Version(minor) <= newest_known:
            continue  # an older minor the data leaves out on purpose
        best[minor] = max(version, best.get(minor, version))
    return [str(best[m]) for m in sorted(best, key=Version)]


def newer_torchvision(data: CompatData, versions: Mapping[str, Sequence[ReleaseFile]]) -> list[str]:
    """Stable torchvision releases newer than every torchvision the data names."""
    known = [Version(r.torchvision) for r in data.torch.values() if r.torchvision]
    floor = max(known) if known else Version("0")
    return [str(v) for v in _stable(versions) if v > floor]


def _torch_requirement(requires_dist: Iterable[str]) -> Requirement | None:
    for text in requires_dist:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.name.lower() == "torch" and requirement.marker is None:
            return requirement
    return None


def assign_torchvision(torchvision: Iterable[Release], torch_versions: Iterable[str]) -> dict[str, Release]:
    """torch version -> the newest torchvision release that accepts it, each torchvision going to the
    newest torch version it accepts (`torch==2.16.0` pins one; `torch>=2.14.0` goes to the newest)."""
    targets = sorted({Version(v) for v in torch_versions})
    chosen: dict[str, Release] = {}
    for release in sorted(torchvision, key=lambda r: Version(r.version)):
        requirement = _torch_requirement(release.requires_dist or ())
        if requirement is None:
            continue
        accepted = [t for t in targets if requirement.specifier.contains(t, prereleases=True)]
        if accepted:
            chosen[str(accepted[-1])] = release
    return chosen


def _quote(value: str | None) -> str:
    return "null" if value is None else json.dumps(value)


def _yaml_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _line(indent: int, key: str, value: str, comment: str | None = None) -> str:
    text = f"{' ' * indent}{key}: {value}"
    if comment:
        text = text.ljust(max(COMMENT_COLUMN - 1, len(text) + 1)) + f" # {comment}"
    return text + "\n"


def _python_comment(pythons: Sequence[str], from_tags: bool) -> str:
    if not pythons:
        return "unverified: no Linux x86_64 wheel tags found"
    tags = "-".join(f"cp{v.replace('.', '')}" for v in (pythons[0], pythons[-1]))
    if from_tags:
        return f"PyPI has {tags} Linux x86_64 wheels"
    return "unverified: from Requires-Python, no wheel tags were read"


@dataclass
class _Facts:
    """What PyPI says about one torch release, as data fields (value, comment)."""

    minor: str
    version: str
    fields: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    raw: dict[str, str | list[str] | None] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)


def _facts(release: Release, torchvision: Release | None, data: CompatData, notes: list[str]) -> _Facts:
    minor = minor_of(release.version)
    facts = _Facts(minor=minor, version=release.version)

    def put(name: str, raw: str | list[str] | None, value: str, comment: str | None = None) -> None:
        facts.fields[name] = (value, comment)
        facts.raw[name] = raw

    put("version", release.version, _quote(release.version))
    day = released_on(release.files)
    if day:
        put("released", day, _quote(day))
    if torchvision is not None:
        requirement = _torch_requirement(torchvision.requires_dist or ())
        put(
            "torchvision",
            torchvision.version,
            _quote(torchvision.version),
            f"Requires-Dist: torch{requirement.specifier}" if requirement else None,
        )
    known_pythons = sorted(
        {p for r in data.torch.values() for p in r.python} | {o.python for o in data.os.values()},
        key=_minor_key,
    )
    pythons = linux_pythons(release.files)
    req_python = requires_python(release.files)
    from_tags = bool(pythons)
    if not pythons and req_python:
        pythons = pythons_from_requires(req_python, known_pythons)
    if pythons:
        put("python", pythons, _yaml_list(pythons), _python_comment(pythons, from_tags))
    if req_python:
        put("requires_python", req_python, _quote(req_python))
    facts.sources.append(f"https://pypi.org/project/torch/{release.version}/")
    if torchvision is not None:
        facts.sources.append(f"https://pypi.org/project/torchvision/{torchvision.version}/")
    if release.requires_dist is None:
        notes.append(f"torch {release.version}: Requires-Dist could not be read; CUDA facts left as they are")
        return facts
    cuda = wheel_cuda(release.requires_dist)
    if cuda.cuda is None:
        notes.append(
            f"torch {release.version}: the default wheel pins no CUDA (no cuda-toolkit or "
            "nvidia-cuda-runtime requirement); pypi_cuda left as it is"
        )
    else:
        put("pypi_cuda", cuda.cuda.version, _quote(cuda.cuda.version), cuda.cuda.requirement)
        if cuda.cuda.version not in data.cuda:
            notes.append(
                f"torch {release.version}: its PyPI wheel carries CUDA {cuda.cuda.version}, which has no "
                f"`cuda:` entry in {DATA_PATH}; add one (version, min_driver, images, toolkit_wheel, "
                "arch_list) by hand"
            )
    if cuda.cudnn is not None:
        put("cudnn", cuda.cudnn.version, _quote(cuda.cudnn.version), cuda.cudnn.requirement)
    if cuda.nccl is not None:
        put("nccl", cuda.nccl.version, _quote(cuda.nccl.version), cuda.nccl.requirement)
    return facts


def _torch_blocks(lines: list[str]) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """Line range of the `torch:` section and of each `  "2.9":` entry inside it (end exclusive)."""
    start = next((i for i, line in enumerate(lines) if line.rstrip() == "torch:"), None)
    if start is None:
        raise ConfigError(f"{DATA_PATH}: no top-level `torch:` section")
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i][:1].isalpha()),
        len(lines),
    )
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    blocks: dict[str, tuple[int, int]] = {}
    heads = [
        (i, m[1]) for i in range(start + 1, end) if (m := re.match(r'^  "?([0-9.]+)"?:\s*(#.*)?$', lines[i]))
    ]
    for n, (i, minor) in enumerate(heads):
        blocks[minor] = (i, heads[n + 1][0] if n + 1 < len(heads) else end)
    return start, end, blocks


_FIELD_ORDER = (
    "version",
    "released",
    "torchvision",
    "torchaudio",
    "python",
    "requires_python",
    "cuda",
    "pypi_cuda",
    "cudnn",
    "nccl",
)


def _new_entry(facts: _Facts, data: CompatData) -> list[str]:
    newest = data.torch[data.torch_minors()[-1]] if data.torch else None
    fields = dict(facts.fields)
    fields.setdefault("torchvision", ('""', "unverified: no torchvision release accepts this torch yet"))
    if newest is not None and newest.torchaudio is None:
        fields["torchaudio"] = ("null", f"none for {data.torch_minors()[-1]} either; not read from PyPI")
    else:
        fields["torchaudio"] = ("null", "unverified: compat check does not read torchaudio")
    fields.setdefault("python", ("[]", "unverified: no wheel tags or Requires-Python read"))
    fields.setdefault("requires_python", ('""', "unverified: not read"))
    pypi_cuda = facts.raw.get("pypi_cuda")
    fields["cuda"] = (_yaml_list([pypi_cuda] if isinstance(pypi_cuda, str) else []), UNVERIFIED_CUDA)
    fields.setdefault("pypi_cuda", ("null", "unverified: not read"))
    out = [f'  "{facts.minor}":\n']
    out += [_line(4, name, *fields[name]) for name in _FIELD_ORDER if name in fields]
    out.append("    source:\n")
    out += [f"      - {url}\n" for url in facts.sources]
    return out


_FIELD_LINE = re.compile(r"^    (?P<key>[a-z_]+):(?P<rest>.*)$")


def _update_entry(block: list[str], facts: _Facts, current: TorchRelease, changes: list[Change]) -> list[str]:
    """The entry's lines with the fields PyPI changed rewritten (comments of untouched lines kept)."""
    old_values: dict[str, str | list[str] | None] = {
        "version": current.version,
        "released": current.released,
        "torchvision": current.torchvision,
        "python": current.python,
        "requires_python": current.requires_python,
        "pypi_cuda": current.pypi_cuda,
        "cudnn": current.cudnn,
        "nccl": current.nccl,
    }
    updates: dict[str, tuple[str, str | None]] = {}
    for name, (value, comment) in facts.fields.items():
        new_raw, old_raw = facts.raw[name], old_values.get(name)
        if new_raw != old_raw:
            updates[name] = (value, comment)
            changes.append(Change(facts.minor, name, _show(old_raw), _show(new_raw) or ""))
    pypi_cuda = facts.raw.get("pypi_cuda")
    if isinstance(pypi_cuda, str) and pypi_cuda not in current.cuda:
        merged = sorted({*current.cuda, pypi_cuda}, key=_minor_key)
        updates["cuda"] = (_yaml_list(merged), f"{pypi_cuda} added: the PyPI wheel carries it")
        changes.append(Change(facts.minor, "cuda", _show(current.cuda), _show(merged) or ""))
    if not updates:
        return block
    urls = {
        f"https://pypi.org/project/torch/{current.version}/": f"https://pypi.org/project/torch/{facts.version}/"
    }
    if "torchvision" in updates:
        old_tv = f"https://pypi.org/project/torchvision/{current.torchvision}/"
        urls[old_tv] = f"https://pypi.org/project/torchvision/{facts.raw['torchvision']}/"
    out: list[str] = []
    present = {m["key"] for line in block if (m := _FIELD_LINE.match(line.rstrip("\n")))}
    for line in block:
        match = _FIELD_LINE.match(line.rstrip("\n"))
        key = match["key"] if match else None
        if key in updates:
            out.append(_line(4, key, *updates[key]))
        else:
            url = line.strip().removeprefix("- ").split(" ")[0]
            out.append(line.replace(url, urls[url]) if url in urls else line)
        if key == "version" and "released" in updates and "released" not in present:
            out.append(_line(4, "released", *updates["released"]))
    return out


def _minor_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _show(value: str | list[str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ", ".join(value)


def _torchvision_only(minor: str, version: str, release: Release) -> _Facts:
    """Facts for a known torch release that a newer torchvision release now accepts."""
    facts = _Facts(minor=minor, version=version)
    requirement = _torch_requirement(release.requires_dist or ())
    comment = f"Requires-Dist: torch{requirement.specifier}" if requirement else None
    facts.fields["torchvision"] = (_quote(release.version), comment)
    facts.raw["torchvision"] = release.version
    return facts


def propose(data_text: str, torch: Sequence[Release], torchvision: Sequence[Release] = ()) -> Proposal:
    """Compare releases newer than the data with the data text; the result is a proposal, not a write.

    `torch`: the releases `newer_torch` names, with Requires-Dist read; `torchvision`: the releases
    `newer_torchvision` names, likewise.
    """
    data = parse_data(data_text)
    notes: list[str] = []
    changes: list[Change] = []
    lines = data_text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    new_by_minor = {minor_of(r.version): r for r in torch}
    versions = [r.version for r in torch]
    versions += [r.version for m, r in data.torch.items() if m not in new_by_minor]
    assigned = assign_torchvision(torchvision, versions)
    facts_by_minor: dict[str, _Facts] = {}
    for minor, release in new_by_minor.items():
        facts_by_minor[minor] = _facts(release, assigned.get(release.version), data, notes)
    for version, tv_release in assigned.items():
        minor = minor_of(version)
        if minor not in facts_by_minor and minor in data.torch:
            facts_by_minor[minor] = _torchvision_only(minor, version, tv_release)
    _, end, blocks = _torch_blocks(lines)
    out: list[str] = []
    index = 0
    additions: list[str] = []
    for minor in sorted(facts_by_minor, key=Version):
        facts = facts_by_minor[minor]
        if minor in blocks:
            lo, hi = blocks[minor]
            out += lines[index:lo]
            out += _update_entry(lines[lo:hi], facts, data.torch[minor], changes)
            index = hi
            continue
        additions += _new_entry(facts, data)
        changes.append(Change(minor, "entry", None, facts.version))
        notes.append(
            f"torch {minor} is new: check `cuda` against download.pytorch.org and `arch_list` against "
            "PyTorch's build scripts before applying"
        )
    out += lines[index:end] + additions + lines[end:]
    new_text = "".join(out)
    parse_data(new_text, where="the proposed data")
    return Proposal(changes=changes, notes=notes, old_text="".join(lines), new_text=new_text)


def parse_data(text: str, where: str = DATA_PATH) -> CompatData:
    try:
        return CompatData.model_validate(yaml.safe_load(text))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: not valid compat data: {str(exc).splitlines()[0]}") from None


def shipped_data_text() -> str:
    return resources.files("builder.resources").joinpath(COMPAT_FILE).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------------
# I/O: PyPI's JSON API and PEP 691 simple indexes.
# ---------------------------------------------------------------------------------------------------

Fetch = Callable[[str, Mapping[str, str]], bytes]
"""GET a URL with extra headers; raises MirrorError (HTTP 404: NotFoundError)."""

JSON_ACCEPT = {"Accept": "application/json"}
RANGE_BLOCK = 1 << 18


class NotFoundError(MirrorError):
    """The index has no such project, release or file (HTTP 404)."""


class NotJsonError(MirrorError):
    """The answer is not JSON (an HTML-only simple index, for one)."""


def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    if SYSTEM_CA_BUNDLE.is_file():
        context.load_verify_locations(cafile=str(SYSTEM_CA_BUNDLE))
    return context


def http_get(url: str, headers: Mapping[str, str], timeout: float = 60.0) -> bytes:
    """GET `url`; every failure becomes a MirrorError naming the URL. A Range request must get a 206."""
    request = urllib.request.Request(
        url, headers={"User-Agent": "pytorch-cuda-images compat-check", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=_ssl_context()) as response:
            if "Range" in headers and response.status != 206:
                raise MirrorError(f"{url}: the server ignores HTTP Range requests")
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFoundError(f"{url}: not found (HTTP 404)") from None
        raise MirrorError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MirrorError(f"{url}: unreachable: {reason}") from None


def _json(fetch: Fetch, url: str, headers: Mapping[str, str] = JSON_ACCEPT) -> Any:
    body = fetch(url, headers)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise NotJsonError(f"{url}: not a JSON answer") from None


class _RangeReader(io.RawIOBase):
    """A remote file read with HTTP Range requests, in cached blocks (for zipfile)."""

    def __init__(self, fetch: Fetch, url: str, size: int) -> None:
        self.fetch, self.url, self.size = fetch, url, size
        self.position = 0
        self.blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def _block(self, number: int) -> bytes:
        if number not in self.blocks:
            first = number * RANGE_BLOCK
            last = min(self.size, first + RANGE_BLOCK) - 1
            self.blocks[number] = self.fetch(self.url, {"Range": f"bytes={first}-{last}"})
        return self.blocks[number]

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.size - self.position)
        chunks, position = [], self.position
        while position < self.position + want:
            block = self._block(position // RANGE_BLOCK)
            offset = position % RANGE_BLOCK
            piece = block[offset : offset + self.position + want - position]
            if not piece:
                break
            chunks.append(piece)
            position += len(piece)
        data = b"".join(chunks)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def wheel_metadata(fetch: Fetch, url: str, size: int) -> str:
    """The METADATA of a remote wheel, read from its zip directory with a few Range requests."""
    with zipfile.ZipFile(io.BufferedReader(_RangeReader(fetch, url, size), RANGE_BLOCK)) as wheel:
        names = [n for n in wheel.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if not names:
            raise MirrorError(f"{url}: no *.dist-info/METADATA in the wheel")
        return wheel.read(names[0]).decode("utf-8", "replace")


def requires_dist_from_metadata(text: str) -> tuple[str, ...]:
    """`Requires-Dist:` lines of a wheel's METADATA file."""
    return tuple(HeaderParser().parsestr(text).get_all("Requires-Dist") or ())


def read_requires_dist(
    fetch: Fetch, files: Sequence[ReleaseFile], notes: list[str]
) -> tuple[str, ...] | None:
    """Requires-Dist of the release's default Linux wheel: PEP 658 metadata, else its zip directory."""
    chosen = metadata_file(files)
    if chosen is None or not chosen.url:
        return None
    if chosen.has_metadata:
        try:
            text = fetch(chosen.url + ".metadata", {"Accept": "*/*"}).decode("utf-8", "replace")
            return requires_dist_from_metadata(text)
        except MirrorError as exc:
            notes.append(f"{chosen.filename}: PEP 658 metadata unreadable ({exc}); reading the wheel")
    if not chosen.size:
        return None
    try:
        return requires_dist_from_metadata(wheel_metadata(fetch, chosen.url, chosen.size))
    except (MirrorError, zipfile.BadZipFile, OSError) as exc:
        notes.append(f"{chosen.filename}: METADATA unreadable: {exc}")
        return None


class PypiJson:
    """PyPI's JSON API (`/pypi/<project>/json`, `/pypi/<project>/<version>/json`)."""

    def __init__(self, base: str = PYPI, fetch: Fetch = http_get) -> None:
        self.base = base.rstrip("/")
        self.fetch = fetch
        self.notes: list[str] = []
        self._info: dict[str, Mapping[str, Any]] = {}
        self._files: dict[str, dict[str, list[ReleaseFile]]] = {}

    def releases(self, project: str) -> dict[str, list[ReleaseFile]]:
        url = f"{self.base}/pypi/{project}/json"
        payload = _json(self.fetch, url)
        self._info[project] = payload.get("info") or {}
        self._files[project] = {
            version: [_json_file(url, f) for f in files]
            for version, files in (payload.get("releases") or {}).items()
        }
        return self._files[project]

    def release(self, project: str, version: str) -> Release:
        files = tuple(self._files.get(project, {}).get(version, ()))
        url = f"{self.base}/pypi/{project}/{version}/json"
        try:
            payload = _json(self.fetch, url)
        except NotFoundError:
            info = self._info.get(project, {})
            if info.get("version") == version and info.get("requires_dist") is not None:
                return Release(version, files, tuple(info["requires_dist"]))
            return Release(version, files, read_requires_dist(self.fetch, files, self.notes))
        files = files or tuple(_json_file(url, f) for f in payload.get("urls") or ())
        requires = (payload.get("info") or {}).get("requires_dist")
        if requires is None:
            return Release(version, files, read_requires_dist(self.fetch, files, self.notes))
        return Release(version=version, files=files, requires_dist=tuple(requires))


def _json_file(page: str, item: Mapping[str, Any]) -> ReleaseFile:
    return ReleaseFile(
        filename=str(item.get("filename", "")),
        url=urljoin(page, str(item.get("url", ""))),
        requires_python=item.get("requires_python") or None,
        upload_time=item.get("upload_time_iso_8601") or item.get("upload_time"),
        yanked=bool(item.get("yanked")),
        has_metadata=bool(item.get("core_metadata") or item.get("core-metadata")),
        size=int(item.get("size") or 0),
    )


def _simple_file(page: str, item: Mapping[str, Any]) -> ReleaseFile:
    return ReleaseFile(
        filename=str(item.get("filename", "")),
        url=urljoin(page, str(item.get("url", ""))),
        requires_python=item.get("requires-python") or None,
        upload_time=item.get("upload-time"),
        yanked=bool(item.get("yanked")),
        has_metadata=bool(item.get("core-metadata") or item.get("dist-info-metadata")),
        size=int(item.get("size") or 0),
    )


def _wheel_version(filename: str) -> str | None:
    try:
        return str(parse_wheel_filename(filename)[1])
    except InvalidWheelFilename:
        return None


class SimpleIndex:
    """A PEP 691 (JSON) simple index, such as a mirror; Requires-Dist from PEP 658 metadata or the wheel.

    A mirror that answers only HTML is left for PyPI's JSON API (the fallback); one that does not answer
    at all is an error (MirrorError), not a reason to ask someone else.
    """

    def __init__(self, url: str, fetch: Fetch = http_get, fallback: PypiJson | None = None) -> None:
        self.url = url.rstrip("/")
        self.fetch = fetch
        self.fallback = fallback or PypiJson(fetch=fetch)
        self.notes: list[str] = []
        self._files: dict[str, dict[str, list[ReleaseFile]]] = {}
        self._fell_back: set[str] = set()

    def releases(self, project: str) -> dict[str, list[ReleaseFile]]:
        page = f"{self.url}/{project}/"
        try:
            payload = _json(self.fetch, page, {"Accept": f"{SIMPLE_JSON}, text/html;q=0.01"})
        except NotJsonError:
            payload = None
        if not isinstance(payload, dict) or "files" not in payload:
            self.notes.append(
                f"{page}: not a PEP 691 JSON project page; used {self.fallback.base}'s JSON API"
            )
            self._fell_back.add(project)
            return self.fallback.releases(project)
        by_version: dict[str, list[ReleaseFile]] = {str(v): [] for v in payload.get("versions") or ()}
        for item in payload["files"]:
            entry = _simple_file(page, item)
            version = _wheel_version(entry.filename)
            if version is not None:
                by_version.setdefault(version, []).append(entry)
        self._files[project] = by_version
        return by_version

    def release(self, project: str, version: str) -> Release:
        if project in self._fell_back:
            return self.fallback.release(project, version)
        files = tuple(self._files.get(project, {}).get(version, ()))
        return Release(version, files, read_requires_dist(self.fetch, files, self.notes))


def check(index_url: str | None = None, data_text: str | None = None, fetch: Fetch = http_get) -> Proposal:
    """Ask PyPI (or the PEP 691 index at `index_url`) what is newer than the data; never writes anything."""
    text = shipped_data_text() if data_text is None else data_text
    data = parse_data(text)
    source: PypiJson | SimpleIndex = (
        SimpleIndex(index_url, fetch=fetch) if index_url else PypiJson(fetch=fetch)
    )
    torch_files = source.releases("torch")
    torch = [source.release("torch", v) for v in newer_torch(data, torch_files)]
    vision_files = source.releases("torchvision")
    vision = [source.release("torchvision", v) for v in newer_torchvision(data, vision_files)]
    proposal = propose(text, torch, vision)
    notes = source.notes + (source.fallback.notes if isinstance(source, SimpleIndex) else [])
    proposal.notes = notes + proposal.notes
    return proposal
