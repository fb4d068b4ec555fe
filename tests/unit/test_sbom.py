"""The SBOM document (pure): CycloneDX-valid, purls and hashes, the cell's facts, the same bytes twice;
the referrers tag schema's index."""

from __future__ import annotations

import json
from typing import Any

import pytest

from builder.build import sbom
from builder.publish import referrers

DPKG_STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u10
Description: GNU C Library

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u11

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2025b-0+deb12u1
Description: time zone
 and daylight-saving time data
"""
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
TORCH_HASHES = ("a" * 64, "b" * 64)
LOCK = f"""\
# images/2.14-cuda13.0-debian12/requirements.linux-amd64.txt: generated; do not edit by hand.
nvidia-cudnn-cu13==9.24.0.42 \\
    --hash=sha256:{"c" * 64}
    # via torch
torch==2.14.1+cu130 \\
    --hash=sha256:{TORCH_HASHES[0]} \\
    --hash=sha256:{TORCH_HASHES[1]}
    # via -r requirements.in
"""
FACTS = sbom.ImageFacts(
    python=(("torch", "2.14.1+cu130"), ("nvidia-cudnn-cu13", "9.24.0.42"), ("pip", "23.0.1")),
    dpkg_status=DPKG_STATUS,
    os_release=OS_RELEASE,
    architecture="amd64",
)
BASE_DIGEST = "sha256:" + "d" * 64


@pytest.fixture(scope="module")
def cuda_cell(default_matrix: Any) -> Any:
    return default_matrix.cell("2.14-cuda13.0-debian12")


def make_document(cell: Any, lock_text: str | None = LOCK) -> bytes:
    return sbom.document(
        cell,
        FACTS,
        lock_text=lock_text,
        base_ref="docker.io/library/debian:12",
        base_digest=BASE_DIGEST,
        content_hash="e" * 64,
    )


@pytest.fixture(scope="module")
def document(cuda_cell: Any) -> bytes:
    return make_document(cuda_cell)


def components(document: bytes) -> dict[str, dict[str, Any]]:
    return {c["purl"]: c for c in json.loads(document)["components"]}


def test_the_document_is_valid_cyclonedx(document: bytes) -> None:
    assert sbom.validation_error(document) is None
    assert json.loads(document)["specVersion"] == "1.6"


def test_the_schema_check_is_not_vacuous(document: bytes) -> None:
    broken = json.loads(document)
    broken["components"][0]["type"] = "not-a-type"
    assert sbom.validation_error(json.dumps(broken)) is not None


def test_python_distributions_with_purls_and_the_locks_hashes(document: bytes) -> None:
    found = components(document)
    torch = found["pkg:pypi/torch@2.14.1%2Bcu130"]
    assert [h["content"] for h in torch["hashes"]] == list(TORCH_HASHES)
    assert {h["alg"] for h in torch["hashes"]} == {"SHA-256"}
    assert found["pkg:pypi/nvidia-cudnn-cu13@9.24.0.42"]["hashes"] == [
        {"alg": "SHA-256", "content": "c" * 64}
    ]
    assert "hashes" not in found["pkg:pypi/pip@23.0.1"]  # installed, but not in the lock


def test_installed_debian_packages_only_with_arch_and_distro(document: bytes) -> None:
    debs = {purl: c for purl, c in components(document).items() if purl.startswith("pkg:deb/")}
    assert set(debs) == {
        "pkg:deb/debian/base-files@12.4%2Bdeb12u11?arch=amd64&distro=debian-12",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12",
        "pkg:deb/debian/tzdata@2025b-0%2Bdeb12u1?arch=all&distro=debian-12",
    }
    libc = debs["pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64&distro=debian-12"]
    assert {"name": "pytorch-cuda-images:deb:source", "value": "glibc"} in libc["properties"]


def test_the_base_image_by_digest(document: bytes) -> None:
    (base,) = [c for purl, c in components(document).items() if purl.startswith("pkg:oci/")]
    assert base["purl"] == (
        f"pkg:oci/debian@sha256:{'d' * 64}?arch=amd64&repository_url=docker.io/library/debian&tag=12"
    )
    assert base["type"] == "container"
    assert base["version"] == BASE_DIGEST


def test_the_cells_cuda_facts_are_properties(document: bytes, cuda_cell: Any) -> None:
    facts = sbom.properties(json.loads(document))
    assert facts["cuda"] == cuda_cell.cuda_version
    assert facts["cudnn"] == cuda_cell.cudnn_version
    assert facts["nccl"] == cuda_cell.nccl_version
    assert facts["torch"] == cuda_cell.torch_version  # the default PyPI wheel: no local label
    assert facts["content_hash"] == "e" * 64


def test_the_same_image_gives_the_same_bytes(document: bytes, cuda_cell: Any) -> None:
    assert make_document(cuda_cell) == document
    other = make_document(cuda_cell, lock_text=None)
    assert json.loads(other)["serialNumber"] != json.loads(document)["serialNumber"]


def test_the_rows_people_read(document: bytes) -> None:
    rows = sbom.rows(json.loads(document))
    assert ("pypi", "torch", "2.14.1+cu130") in rows
    assert ("deb", "libc6", "2.36-9+deb12u10") in rows
    assert sum(kind == "oci" for kind, _, _ in rows) == 1


def test_the_referrers_index_gains_a_descriptor_once() -> None:
    descriptor = {"mediaType": referrers.OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 10}
    first = referrers.with_referrer(None, descriptor)
    assert first is not None
    assert first["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert first["manifests"] == [descriptor]
    assert referrers.with_referrer(first, descriptor) is None
    other = {**descriptor, "digest": "sha256:" + "2" * 64}
    second = referrers.with_referrer(first, other)
    assert second is not None and second["manifests"] == [descriptor, other]
    assert referrers.fallback_tag("sha256:" + "f" * 64) == "sha256-" + "f" * 64


def test_the_artifact_manifest_names_its_subject() -> None:
    subject = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": "sha256:x",
        "size": 1,
    }
    body = referrers.artifact_manifest(sbom.MEDIA_TYPE, "sha256:" + "3" * 64, 42, "sbom.cdx.json", subject)
    manifest = json.loads(body)
    assert manifest["artifactType"] == "application/vnd.cyclonedx+json"
    assert manifest["subject"] == subject
    assert manifest["config"] == referrers.EMPTY_CONFIG
    assert manifest["layers"][0]["size"] == 42
    assert body == referrers.artifact_manifest(
        sbom.MEDIA_TYPE, "sha256:" + "3" * 64, 42, "sbom.cdx.json", subject
    )
