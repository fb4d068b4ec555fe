"""Multi-platform images: one OCI image index over per-platform manifests, put under tags registry-side.

Each platform's image is pushed on its own (by its digest, under a per-platform tag); the index names
those manifests by digest and size, so a registry answers `docker pull TAG` with the image for the
puller's CPU. Through `builder.publish.http` (the engine cannot write an index).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from builder.errors import RegistryError
from builder.model.naming import CONTENT_HASH_LABEL
from builder.model.platforms import arch
from builder.publish.http import INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, RegistryHttp, sha256_digest


def index_body(children: Sequence[tuple[str, str, str, int]]) -> bytes:
    """An OCI image index over (platform, digest, media type, size) entries, in the order given."""
    manifests = [
        {
            "mediaType": media,
            "digest": digest,
            "size": size,
            "platform": {"architecture": arch(p), "os": "linux"},
        }
        for p, digest, media, size in children
    ]
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return json.dumps(document, indent=2).encode()


def put_index(
    http: RegistryHttp, repository: str, children: Sequence[tuple[str, str]], tags: Sequence[str]
) -> str:
    """Put one index over `children` ((platform, tag or digest) already in `repository`) under every tag
    of `tags`, in order; each tag is read back and must name the index's digest. Returns that digest."""
    entries = []
    for platform, reference in children:
        found = http.manifest(repository, reference)
        if found is None:
            raise RegistryError(f"{repository}:{reference} ({platform}) is not in the registry")
        digest, media, body = found
        if media in INDEX_TYPES:
            raise RegistryError(f"{repository}:{reference} ({platform}) is itself an index")
        if digest != sha256_digest(body):
            raise RegistryError(
                f"{repository}:{reference} ({platform}): digest {digest} does not match the manifest's body"
            )
        entries.append((platform, digest, media, len(body)))
    body = index_body(entries)
    digest = sha256_digest(body)
    for tag in tags:
        http.put_manifest(repository, tag, OCI_INDEX, body)
        stored = http.manifest(repository, tag, accept=(*INDEX_TYPES, *MANIFEST_TYPES))
        if stored is None or stored[0] != digest:
            raise RegistryError(f"{repository}:{tag} does not name the index {digest} after putting it")
    return digest


def platforms_of(http: RegistryHttp, repository: str, reference: str) -> dict[str, str]:
    """Platform -> manifest digest under an index tag; {} when the tag is absent or names one image."""
    found = http.manifest(repository, reference, accept=(*INDEX_TYPES, *MANIFEST_TYPES))
    if found is None or found[1] not in INDEX_TYPES:
        return {}
    document = json.loads(found[2])
    return {
        f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"]
        for m in document.get("manifests", [])
        if m.get("platform")
    }


def content_hashes(
    http: RegistryHttp, repository: str, reference: str, single_platform: str
) -> dict[str, str]:
    """Platform -> the content-hash label of each image under a tag: every platform an index lists, or,
    for a tag naming one image, that image as `single_platform`; a platform whose image has no such label
    is left out, and an absent tag gives {}."""
    listed = platforms_of(http, repository, reference)
    children = listed or {single_platform: reference}
    found = {}
    for platform, child in children.items():
        value = (http.config_labels(repository, child) or {}).get(CONTENT_HASH_LABEL)
        if value:
            found[platform] = value
    return found
