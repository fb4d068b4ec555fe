"""What PyPI's releases say that builder/resources/compat.yaml does not, as an edit of that file.

Pure: release lists (versions, wheel files, Requires-Dist, Requires-Python) and the data file's text in,
a Proposal out: new `torch:` entries (a new minor) or updated fields (a new patch of a known minor), the
data text after the edit and its unified diff. The edit is a ruamel.yaml round trip, so every comment and
line that the edit does not touch stays byte for byte. The data file itself is never written.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.tokens import CommentToken

from builder import yaml_roundtrip
from builder.errors import ConfigError
from builder.model.compat import COMPAT_FILE, CompatData, TorchRelease
from tools.pypi import Release, ReleaseFile, is_linux_x86_64, wheel_tags

DATA_PATH = f"builder/resources/{COMPAT_FILE}"
UNVERIFIED_CUDA = (
    "unverified: compat check reads only the PyPI wheel's CUDA; add the cuXYZ indexes "
    "download.pytorch.org publishes"
)
# The order of a torch entry's fields; a field the edit adds goes after the nearest one before it.
FIELD_ORDER = (
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

    def to_json(self) -> dict[str, Any]:
        """The shape the run report reads (`report render --compat FILE`)."""
        return {"current": self.current, "diff": self.diff, "notes": list(self.notes)}


# --- requirements -> CUDA, cuDNN, NCCL; wheel tags -> Python ------------------------------------------


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


def _on_linux(requirement: Requirement) -> bool:
    assert requirement.marker is not None
    environment = {"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64"}
    return any(
        requirement.marker.evaluate({**environment, "python_version": py, "extra": ""})
        for py in ("3.10", "3.12", "3.14")
    )


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


def linux_pythons(files: Iterable[ReleaseFile]) -> list[str]:
    """CPython minors with Linux x86_64 wheels (`cp312-cp312-manylinux...`), free-threaded ones left out."""
    found: set[str] = set()
    for item in files:
        for interpreter, abi, plat in wheel_tags(item.filename):
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
    try:
        spec = SpecifierSet(requires_python)
    except InvalidSpecifier:
        return list(known)
    return [v for v in known if spec.contains(f"{v}.0")]


def requires_python(files: Iterable[ReleaseFile]) -> str | None:
    """Requires-Python of the release's Linux x86_64 wheels (else any file's)."""
    for item in sorted(files, key=lambda f: not is_linux_x86_64(f.filename)):
        if item.requires_python:
            return item.requires_python
    return None


def released_on(files: Iterable[ReleaseFile]) -> str | None:
    """The day of the release's first upload (YYYY-MM-DD)."""
    times = sorted(f.upload_time for f in files if f.upload_time)
    return times[0][:10] if times else None


# --- which releases are newer than the data ------------------------------------------------------------


def minor_of(version: str) -> str:
    parsed = Version(version)
    return f"{parsed.major}.{parsed.minor}"


def _minor_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


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


# --- facts of one release, as data fields ----------------------------------------------------------------

Raw = str | list[str] | None


@dataclass
class _Facts:
    """What PyPI says about one torch release: per field the raw value and the comment to show."""

    minor: str
    version: str
    fields: dict[str, tuple[Raw, str | None]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    def put(self, name: str, raw: Raw, comment: str | None = None) -> None:
        self.fields[name] = (raw, comment)

    def raw(self, name: str) -> Raw:
        return self.fields[name][0] if name in self.fields else None


def _python_comment(pythons: Sequence[str], from_tags: bool) -> str:
    if not pythons:
        return "unverified: no Linux x86_64 wheel tags found"
    tags = "-".join(f"cp{v.replace('.', '')}" for v in (pythons[0], pythons[-1]))
    if from_tags:
        return f"PyPI has {tags} Linux x86_64 wheels"
    return "unverified: from Requires-Python, no wheel tags were read"


def _torchvision_comment(release: Release) -> str | None:
    requirement = _torch_requirement(release.requires_dist or ())
    return f"Requires-Dist: torch{requirement.specifier}" if requirement else None


def _facts(release: Release, torchvision: Release | None, data: CompatData, notes: list[str]) -> _Facts:
    facts = _Facts(minor=minor_of(release.version), version=release.version)
    facts.put("version", release.version)
    day = released_on(release.files)
    if day:
        facts.put("released", day)
    if torchvision is not None:
        facts.put("torchvision", torchvision.version, _torchvision_comment(torchvision))
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
        facts.put("python", pythons, _python_comment(pythons, from_tags))
    if req_python:
        facts.put("requires_python", req_python)
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
        facts.put("pypi_cuda", cuda.cuda.version, cuda.cuda.requirement)
        pin_note = _cuda_pin_note(release.version, cuda.cuda, data)
        if pin_note:
            notes.append(pin_note)
        if cuda.cuda.version not in data.cuda:
            notes.append(
                f"torch {release.version}: its PyPI wheel carries CUDA {cuda.cuda.version}, which has no "
                f"`cuda:` entry in {DATA_PATH}; add one (version, min_driver, images, toolkit_wheel, "
                "arch_list) by hand"
            )
    if cuda.cudnn is not None:
        facts.put("cudnn", cuda.cudnn.version, cuda.cudnn.requirement)
    if cuda.nccl is not None:
        facts.put("nccl", cuda.nccl.version, cuda.nccl.requirement)
    return facts


def _cuda_pin_note(version: str, cuda: Pin, data: CompatData) -> str | None:
    """A note when the wheel's CUDA pin is not the one `cuda_pins` records (full cells check against it)."""
    shown, _, exact = cuda.requirement.partition("==")
    name = shown.removesuffix("[...]")
    current = data.torch.get(minor_of(version))
    recorded = current.cuda_pins.get(cuda.version, {}).get(name) if current else None
    if recorded is not None and Version(recorded) == Version(exact):
        return None
    return (
        f"torch {version}: its PyPI wheel pins {name}=={exact}; set torch.{minor_of(version)}.cuda_pins "
        f'to {{"{cuda.version}": {{{name}: "{exact}"}}}} by hand (full cells built from wheels check it)'
    )


def _torchvision_only(minor: str, version: str, release: Release) -> _Facts:
    """Facts for a known torch release that a newer torchvision release now accepts."""
    facts = _Facts(minor=minor, version=version)
    facts.put("torchvision", release.version, _torchvision_comment(release))
    return facts


# --- the round-trip edit ---------------------------------------------------------------------------------


def _node(raw: Raw) -> Any:
    """A value as the data file writes it: strings double-quoted, lists in flow style, None as null."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return DoubleQuotedScalarString(raw)
    seq = CommentedSeq([DoubleQuotedScalarString(v) for v in raw])
    seq.fa.set_flow_style()
    return seq


def _following_lines(token: CommentToken | None) -> str:
    """What a comment token holds after its first line: blank lines and full-line comments that follow."""
    return token.value.partition("\n")[2] if token is not None else ""


def _set(entry: CommentedMap, key: str, raw: Raw, comment: str | None) -> None:
    """Set a field with its trailing comment (none: the old one goes); a new field goes in FIELD_ORDER."""
    if key not in entry:
        before = FIELD_ORDER[: FIELD_ORDER.index(key)] if key in FIELD_ORDER else FIELD_ORDER
        present = [list(entry).index(k) for k in before if k in entry]
        entry.insert(max(present) + 1 if present else len(entry), key, _node(raw))
    else:
        entry[key] = _node(raw)
    slot = entry.ca.items.get(key)
    following = _following_lines(slot[2] if slot else None)
    entry.ca.items.pop(key, None)
    if comment:
        entry.yaml_add_eol_comment(f"# {comment}", key, column=yaml_roundtrip.COMMENT_COLUMN)
        entry.ca.items[key][2].value = f"# {comment}\n{following}"
    elif following:
        entry.ca.items[key] = [None, None, CommentToken(f"\n{following}", CommentMark(0), None), None]


def _last_slot(node: Any) -> tuple[list[Any], int] | None:
    """Where the comment after a node's last line lives: (ruamel comment slot, index in it)."""
    if isinstance(node, CommentedMap) and node:
        key = list(node)[-1]
        inner = _last_slot(node[key])
        return inner or (node.ca.items.setdefault(key, [None, None, None, None]), 2)
    if isinstance(node, CommentedSeq) and len(node):
        inner = _last_slot(node[-1])
        return inner or (node.ca.items.setdefault(len(node) - 1, [None, None, None, None]), 0)
    return None


def _move_following_lines(source: Any, target: Any) -> None:
    """Move the blank lines (and comments) after `source`'s last line to after `target`'s."""
    old, new = _last_slot(source), _last_slot(target)
    if old is None or new is None or old[0][old[1]] is None:
        return
    token = old[0][old[1]]
    first, newline, following = token.value.partition("\n")
    if not following:
        return
    if first:
        token.value = first + newline
    else:
        old[0][old[1]] = None
    new[0][new[1]] = CommentToken(f"\n{following}", CommentMark(0), None)


def _new_entry(facts: _Facts, data: CompatData) -> CommentedMap:
    newest = data.torch[data.torch_minors()[-1]] if data.torch else None
    fields = dict(facts.fields)
    fields.setdefault("torchvision", ("", "unverified: no torchvision release accepts this torch yet"))
    if newest is not None and newest.torchaudio is None:
        fields["torchaudio"] = (None, f"none for {data.torch_minors()[-1]} either; not read from PyPI")
    else:
        fields["torchaudio"] = (None, "unverified: compat check does not read torchaudio")
    fields.setdefault("python", ([], "unverified: no wheel tags or Requires-Python read"))
    fields.setdefault("requires_python", ("", "unverified: not read"))
    pypi_cuda = facts.raw("pypi_cuda")
    fields["cuda"] = ([pypi_cuda] if isinstance(pypi_cuda, str) else [], UNVERIFIED_CUDA)
    fields.setdefault("pypi_cuda", (None, "unverified: not read"))
    entry = CommentedMap()
    for name in FIELD_ORDER:
        if name in fields:
            _set(entry, name, *fields[name])
    entry["source"] = CommentedSeq(facts.sources)
    return entry


def _show(value: Raw) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ", ".join(value)


def _update_entry(entry: CommentedMap, facts: _Facts, current: TorchRelease, changes: list[Change]) -> None:
    """Rewrite the fields PyPI changed (their comments replaced), and the PyPI links among the sources."""
    old_values: dict[str, Raw] = {
        "version": current.version,
        "released": current.released,
        "torchvision": current.torchvision,
        "python": current.python,
        "requires_python": current.requires_python,
        "pypi_cuda": current.pypi_cuda,
        "cudnn": current.cudnn,
        "nccl": current.nccl,
    }
    updates: dict[str, tuple[Raw, str | None]] = {}
    for name, (raw, comment) in facts.fields.items():
        if raw != old_values.get(name):
            updates[name] = (raw, comment)
            changes.append(Change(facts.minor, name, _show(old_values.get(name)), _show(raw) or ""))
    pypi_cuda = facts.raw("pypi_cuda")
    if isinstance(pypi_cuda, str) and pypi_cuda not in current.cuda:
        merged = sorted({*current.cuda, pypi_cuda}, key=_minor_key)
        updates["cuda"] = (merged, f"{pypi_cuda} added: the PyPI wheel carries it")
        changes.append(Change(facts.minor, "cuda", _show(current.cuda), _show(merged) or ""))
    for name in FIELD_ORDER:
        if name in updates:
            _set(entry, name, *updates[name])
    links = {
        f"https://pypi.org/project/torch/{current.version}/": f"https://pypi.org/project/torch/{facts.version}/"
    }
    if "torchvision" in updates:
        links[f"https://pypi.org/project/torchvision/{current.torchvision}/"] = (
            f"https://pypi.org/project/torchvision/{facts.raw('torchvision')}/"
        )
    sources = entry.get("source")
    if updates and isinstance(sources, CommentedSeq):
        for index, url in enumerate(sources):
            if url in links:
                sources[index] = links[url]


def propose(data_text: str, torch: Sequence[Release], torchvision: Sequence[Release] = ()) -> Proposal:
    """Compare releases newer than the data with the data text; the result is a proposal, not a write.

    `torch`: the releases `newer_torch` names, with Requires-Dist read; `torchvision`: the releases
    `newer_torchvision` names, likewise.
    """
    data = parse_data(data_text)
    old_text = data_text if data_text.endswith("\n") else data_text + "\n"
    document = yaml_roundtrip.load(old_text)
    section = document.get("torch") if isinstance(document, CommentedMap) else None
    if not isinstance(section, CommentedMap):
        raise ConfigError(f"{DATA_PATH}: no top-level `torch:` section")
    notes: list[str] = []
    changes: list[Change] = []
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
    for minor in sorted(facts_by_minor, key=Version):
        facts = facts_by_minor[minor]
        if minor in data.torch:
            _update_entry(section[minor], facts, data.torch[minor], changes)
            continue
        entry = _new_entry(facts, data)
        if section:
            _move_following_lines(section[list(section)[-1]], entry)
        section[DoubleQuotedScalarString(minor)] = entry
        changes.append(Change(minor, "entry", None, facts.version))
        notes.append(
            f"torch {minor} is new: check `cuda` against download.pytorch.org and `arch_list` against "
            "PyTorch's build scripts before applying"
        )
    new_text = yaml_roundtrip.dump(document) if changes else old_text
    parse_data(new_text, where="the proposed data")
    return Proposal(changes=changes, notes=notes, old_text=old_text, new_text=new_text)


def parse_data(text: str, where: str = DATA_PATH) -> CompatData:
    try:
        return CompatData.model_validate(yaml.safe_load(text))
    except (ValidationError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: not valid compat data: {str(exc).splitlines()[0]}") from None


def shipped_data_text() -> str:
    return resources.files("builder.resources").joinpath(COMPAT_FILE).read_text(encoding="utf-8")
