"""Each image's bill of materials: one CycloneDX 1.6 JSON document, made after the smoke gate passed.

It lists the Python distributions installed in `/opt/venv` (`pkg:pypi/` purls; sha256 hashes from the
cell's hash lock where it has one), the Debian or Ubuntu packages of the image's dpkg status
(`pkg:deb/<os>/` purls with arch and distro), the base image by digest (`pkg:oci/`), and the cell's
torch, CUDA, cuDNN and NCCL facts as properties. The document holds no time and no random number (its
serial number derives from its content), so the same image gives the same bytes, and the layer that
stores it at `SBOM_PATH` is the same layer.

Pure logic here; `collect` (runs the image's own python once) and `store` (adds the layer) go through the
engine.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from builder.errors import BuilderError, BuildFailedError, ConfigError
from builder.model.naming import (
    LABEL_PREFIX,
    TAG_RE,
    immutable_tag,
    local_references,
    parse_reference,
)
from builder.resources import install_lock

if TYPE_CHECKING:
    from builder.build.engine import Engine
    from builder.model.cell import Cell

SBOM_PATH = "/opt/pytorch-cuda-images/sbom.cdx.json"  # in every image, in its own top layer
SBOM_LABEL = f"{LABEL_PREFIX}.sbom"  # names SBOM_PATH: the image carries its bill of materials
MEDIA_TYPE = "application/vnd.cyclonedx+json"  # the referrer's artifactType and the blob's media type
SCHEMA = SchemaVersion.V1_6
PROPERTY_PREFIX = "pytorch-cuda-images"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # the document's timestamp: an image's content has no time
SERIAL_NAMESPACE = uuid.UUID("5d3c1a0e-7f4b-4d8e-9a51-2b6f0c9e8a17")  # uuid5 namespace of serial numbers

# Runs inside the image (its own python, stdlib only): installed distributions, dpkg status, os-release.
PROBE = """
import importlib.metadata, json
def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""
dists = sorted({(d.metadata["Name"], d.version) for d in importlib.metadata.distributions()
                if d.metadata["Name"]})
print(json.dumps({"python": dists, "dpkg_status": read("/var/lib/dpkg/status"),
                  "os_release": read("/etc/os-release")}))
"""
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ImageFacts:
    """What the SBOM reads from inside the image."""

    python: tuple[tuple[str, str], ...]  # (name, version) of every installed distribution
    dpkg_status: str  # /var/lib/dpkg/status
    os_release: str  # /etc/os-release
    architecture: str  # the image config's, e.g. amd64


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    arch: str
    source: str


def normalize(name: str) -> str:
    """PEP 503 name, as purls and locks spell it: `Nvidia_CUBLAS` -> `nvidia-cublas`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dpkg_packages(status: str) -> list[DebPackage]:
    """The installed packages of a dpkg status file (stanzas whose Status ends in `installed`), by name."""
    packages = []
    for stanza in status.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1].isspace() or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if not fields.get("Package") or not fields.get("Status", "").endswith(" installed"):
            continue
        source = fields.get("Source", "").split(" ")[0] or fields["Package"]
        packages.append(
            DebPackage(fields["Package"], fields["Version"], fields.get("Architecture", ""), source)
        )
    return sorted(packages, key=lambda p: (p.name, p.arch))


def os_release(text: str) -> dict[str, str]:
    """`/etc/os-release` as a dict (quotes removed)."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def lock_hashes(text: str) -> dict[str, list[str]]:
    """sha256 hex digests per normalized name from a cell's hash lock (parsed by the installer's own
    parser, `resources/install_lock.py`: one home for the lock format)."""
    return {
        name: [h.removeprefix("sha256:") for h in pin.hashes]
        for name, pin in install_lock.parse(text).items()
    }


def _property(name: str, value: str) -> Property:
    return Property(name=f"{PROPERTY_PREFIX}:{name}", value=value)


def cell_properties(cell: Cell, content_hash: str) -> list[Property]:
    """The cell's facts: tag, torch, Python, CUDA, cuDNN, NCCL, the arch list, the content hash."""
    facts = {
        "tag": cell.tag,
        "immutable_tag": immutable_tag(cell),
        "torch": cell.torch_version + (cell.local_label if cell.wheel_source == "pytorch" else ""),
        "python": cell.python_version,
        "cuda": cell.cuda_version or "none",
        "cudnn": cell.cudnn_version or "none",
        "nccl": cell.nccl_version or "none",
        "cuda_arch_list": cell.arch_list or "none",
        "min_driver": cell.min_driver or "none",
        "content_hash": content_hash,
    }
    return [_property(key, value) for key, value in facts.items()]


def base_component(base_ref: str, base_digest: str, arch: str) -> Component:
    """The base image by digest: `pkg:oci/debian@sha256:...?repository_url=...&tag=12&arch=amd64`."""
    ref = parse_reference(base_ref)
    repository = f"{ref.registry or 'docker.io'}/{ref.repository}"
    qualifiers = {"repository_url": repository, "arch": arch, **({"tag": ref.tag} if ref.tag else {})}
    purl = PackageURL("oci", None, ref.repository.rsplit("/", 1)[-1], base_digest, qualifiers)
    algorithm, _, hexdigest = base_digest.partition(":")
    hashes = [HashType(alg=HashAlgorithm.SHA_256, content=hexdigest)] if algorithm == "sha256" else []
    return Component(
        name=repository,
        version=base_digest,
        type=ComponentType.CONTAINER,
        purl=purl,
        bom_ref=str(purl),
        hashes=hashes,
        properties=[_property("role", "base image")],
    )


def python_components(
    installed: Iterable[tuple[str, str]], hashes: Mapping[str, list[str]]
) -> list[Component]:
    """One library per installed distribution, with the lock's sha256 hashes of that pin (every file the
    install would accept) where the lock has it."""
    components = []
    for name, version in sorted(installed, key=lambda item: normalize(item[0])):
        purl = PackageURL("pypi", None, normalize(name), version)
        components.append(
            Component(
                name=name,
                version=version,
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=str(purl),
                hashes=[
                    HashType(alg=HashAlgorithm.SHA_256, content=h) for h in hashes.get(normalize(name), [])
                ],
            )
        )
    return components


def deb_components(packages: Iterable[DebPackage], os_id: str, os_version: str) -> list[Component]:
    """One library per installed package: `pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12`."""
    components = []
    for package in packages:
        qualifiers = {"arch": package.arch, "distro": f"{os_id}-{os_version}"}
        purl = PackageURL("deb", os_id, package.name, package.version, qualifiers)
        properties = [_property("deb:source", package.source)] if package.source != package.name else []
        components.append(
            Component(
                name=package.name,
                version=package.version,
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=str(purl),
                properties=properties,
            )
        )
    return components


def document(
    cell: Cell,
    facts: ImageFacts,
    *,
    lock_text: str | None,
    base_ref: str,
    base_digest: str,
    content_hash: str,
) -> bytes:
    """The CycloneDX JSON of one image: the same inputs give the same bytes."""
    release = os_release(facts.os_release)
    os_id = release.get("ID", cell.os_family)
    root = Component(
        name="pytorch-cuda-images",
        version=immutable_tag(cell),
        type=ComponentType.CONTAINER,
        bom_ref=f"image:{cell.tag}",
        properties=cell_properties(cell, content_hash),
    )
    components = [
        base_component(base_ref, base_digest, facts.architecture),
        *python_components(facts.python, lock_hashes(lock_text or "")),
        *deb_components(dpkg_packages(facts.dpkg_status), os_id, release.get("VERSION_ID", cell.os_version)),
    ]
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, f"{content_hash}\n{facts!r}\n{lock_text}"),
        metadata=BomMetaData(component=root, timestamp=EPOCH),
    )
    bom.components.update(components)
    bom.register_dependency(root, components)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the library warns about components without dependencies
        text = JsonV1Dot6(bom).output_as_string(indent=1)
    return text.encode() + b"\n"


def validation_error(text: str | bytes) -> str | None:
    """CycloneDX's own JSON schema check (cyclonedx-python-lib, strict); None when valid."""
    error = JsonStrictValidator(SCHEMA).validate_str(text.decode() if isinstance(text, bytes) else text)
    return None if error is None else str(error)


def rows(doc: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, name, version) per component, for people: kind is the purl type (pypi, deb, oci)."""
    out = []
    for component in doc.get("components", []):
        kind = str(component.get("purl", "")).removeprefix("pkg:").split("/", 1)[0]
        out.append((kind, str(component.get("name", "")), str(component.get("version", ""))))
    return out


def properties(doc: Mapping[str, Any]) -> dict[str, str]:
    """The image's own properties (the cell's facts), without the prefix."""
    found = (doc.get("metadata", {}).get("component", {}) or {}).get("properties", [])
    return {p["name"].removeprefix(f"{PROPERTY_PREFIX}:"): p["value"] for p in found}


# --- I/O: through the engine ---------------------------------------------------------------------


def collect(engine: Engine, image: str) -> ImageFacts:
    """Read the distributions, dpkg status and os-release inside the image (its own python, once)."""
    result = engine.run(image, ["-c", PROBE], entrypoint=["python"], timeout=PROBE_TIMEOUT_S)
    if result.exit_code != 0:
        raise BuildFailedError(f"SBOM: reading {image}'s packages failed: {result.stderr.strip()[-500:]}")
    found = json.loads(result.stdout)
    return ImageFacts(
        python=tuple((str(name), str(version)) for name, version in found["python"]),
        dpkg_status=found["dpkg_status"],
        os_release=found["os_release"],
        architecture=str(engine.image_attrs(image).get("Architecture", "amd64")),
    )


def store(engine: Engine, image: str, sbom: bytes, *, log_path: Path) -> str:
    """The image with its SBOM at SBOM_PATH in a top layer of its own, labelled; its image ID."""
    return engine.add_files(image, {SBOM_PATH: sbom}, labels={SBOM_LABEL: SBOM_PATH}, log_path=log_path)


def read(engine: Engine, image: str) -> bytes | None:
    """The SBOM an image carries (None: built before SBOMs, or not by this tool)."""
    labels = (engine.image_attrs(image).get("Config") or {}).get("Labels") or {}
    path = labels.get(SBOM_LABEL)
    return engine.read_file(image, path) if path else None


def of_image(target: str, matrix_path: Path) -> tuple[str, bytes]:
    """`sbom`: the SBOM of a cell's local image (TARGET a tag of the matrix) or of any image reference."""
    from builder.build.engine import Engine
    from builder.model import matrix

    image = local_references(matrix.load(matrix_path).cell(target))[0] if TAG_RE.match(target) else target
    engine = Engine.connect()
    if not engine.image_exists(image):
        raise ConfigError(f"no image {image} on this engine: build it first (make build TAG=...)")
    document = read(engine, image)
    if document is None:
        raise BuilderError(f"{image} carries no SBOM (no label {SBOM_LABEL}): rebuild it with this tool")
    return image, document
