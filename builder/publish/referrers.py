"""OCI referrers: an artifact pushed next to an image, whose manifest names the image as its `subject`.

The SBOM goes to the registry this way (OCI image spec 1.1 artifact guidance, distribution spec 1.1
referrers): the blob, the empty config, then an image manifest with `artifactType` and `subject`, pushed
by digest. A registry with the referrers API (Harbor, which lists the artifact as an accessory of the
image) answers that push with an `OCI-Subject` header and indexes it itself. Without one (distribution's
`docker-registry`), the referrers tag schema: the tag `sha256-<hex of the subject digest>` holds an OCI
index listing the subject's referrers, which the pusher reads, extends and writes back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from builder.errors import RegistryError
from builder.publish.http import OCI_INDEX, OCI_MANIFEST, RegistryHttp, sha256_digest

EMPTY_CONFIG = {  # the OCI empty descriptor: `{}`, for an artifact without a config of its own
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}
TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Attached:
    """An artifact in the registry, and how its subject finds it."""

    digest: str
    via: str  # "referrers API" or "tag sha256-..."
    new: bool  # False: it was listed already


def fallback_tag(subject_digest: str) -> str:
    """The referrers tag schema's tag for a subject: `sha256:abc...` -> `sha256-abc...`."""
    algorithm, _, hexdigest = subject_digest.partition(":")
    return f"{algorithm}-{hexdigest}"[:128]


def artifact_manifest(
    artifact_type: str, blob_digest: str, blob_size: int, title: str, subject: dict[str, Any]
) -> bytes:
    """The artifact's manifest (no time in it: the same blob and subject give the same digest)."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_CONFIG,
        "layers": [
            {
                "mediaType": artifact_type,
                "digest": blob_digest,
                "size": blob_size,
                "annotations": {TITLE: title},
            }
        ],
        "subject": subject,
    }
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


def with_referrer(index: dict[str, Any] | None, descriptor: dict[str, Any]) -> dict[str, Any] | None:
    """The tag schema's index with `descriptor` added; None when it is listed already."""
    current = index or {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if any(m.get("digest") == descriptor["digest"] for m in current.get("manifests", [])):
        return None
    return {**current, "manifests": [*current.get("manifests", []), descriptor]}


def subject_descriptor(http: RegistryHttp, repository: str, digest: str) -> dict[str, Any]:
    """The image manifest's descriptor (media type, digest, size), as the registry serves it."""
    found = http.manifest(repository, digest)
    if found is None:
        raise RegistryError(f"{http.host}/{repository}@{digest}: no such manifest")
    return {"mediaType": found[1].split(";")[0], "digest": digest, "size": len(found[2])}


def attach(
    http: RegistryHttp, repository: str, subject_digest: str, artifact_type: str, blob: bytes, title: str
) -> Attached:
    """Push `blob` as an artifact referring to `repository@subject_digest` (nothing is written when the
    subject lists it already)."""
    subject = subject_descriptor(http, repository, subject_digest)
    blob_digest = sha256_digest(blob)
    manifest = artifact_manifest(artifact_type, blob_digest, len(blob), title, subject)
    digest = sha256_digest(manifest)
    listed, via = referrers(http, repository, subject_digest)
    if any(m.get("digest") == digest for m in listed):
        return Attached(digest, via, new=False)
    http.upload_blob(repository, blob)
    http.upload_blob(repository, b"{}")
    headers = http.put_manifest_headers(repository, digest, OCI_MANIFEST, manifest)
    if headers.get("oci-subject") == subject_digest:
        return Attached(digest, "referrers API", new=True)
    tag = fallback_tag(subject_digest)
    descriptor = {
        "mediaType": OCI_MANIFEST,
        "digest": digest,
        "size": len(manifest),
        "artifactType": artifact_type,
    }
    found = http.manifest(repository, tag, accept=(OCI_INDEX,))
    updated = with_referrer(json.loads(found[2]) if found is not None else None, descriptor)
    if updated is not None:
        http.put_manifest_headers(
            repository, tag, OCI_INDEX, json.dumps(updated, separators=(",", ":")).encode()
        )
    return Attached(digest, f"tag {tag}", new=True)


def referrers(
    http: RegistryHttp, repository: str, subject_digest: str, artifact_type: str | None = None
) -> tuple[list[dict[str, Any]], str]:
    """The descriptors of a subject's referrers (of one artifact type) and where they were listed: the
    referrers API, else (it answers 404) the tag schema's index (none when the tag is absent)."""
    status, _, body = http.request(
        "GET",
        f"/v2/{repository}/referrers/{subject_digest}",
        scope=f"repository:{repository}:pull",
        headers={"Accept": OCI_INDEX},
    )
    via = "referrers API"
    if status == 404:
        via = f"tag {fallback_tag(subject_digest)}"
        found = http.manifest(repository, fallback_tag(subject_digest), accept=(OCI_INDEX,))
        body = found[2] if found is not None else b"{}"
    listed: list[dict[str, Any]] = json.loads(body).get("manifests", [])
    return [m for m in listed if artifact_type is None or m.get("artifactType") == artifact_type], via
