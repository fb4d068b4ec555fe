"""Multi-platform publishing against a real loopback registry: each platform's image pushed by digest
under its platform tag, then one OCI image index under the immutable and floating tags, every digest
verified by an independent client (skopeo); a missing platform leaves no index and moves no tag.

The two images are tiny `FROM scratch` builds (docker-py's `platform=`; no RUN step, so no QEMU), which
keeps this in `make test`; the full arm64 torch build under QEMU is `nox -s arm64`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest

from builder.errors import RegistryError
from builder.model import matrix
from builder.model.naming import (
    CONTENT_HASH_LABEL,
    floating_tag,
    immutable_tag,
    local_references,
    platform_tag,
)
from builder.output import Output
from builder.publish import index
from builder.publish.push import Publisher, RetryPolicy
from builder.publish.target import parse_target
from tests.integration.loopback_registry import LoopbackRegistry, serving_registry

pytestmark = pytest.mark.integration

TAG = "2.14-cuda13.0-debian13"  # linux/amd64 + linux/arm64 in the shipped matrix


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, engine) -> Iterator[LoopbackRegistry]:  # type: ignore[no-untyped-def]
    with serving_registry(
        tmp_path_factory.mktemp("multiplatform"), engine, also_needs=("skopeo",)
    ) as registry:
        yield registry


@pytest.fixture(scope="module")
def cell():  # type: ignore[no-untyped-def]
    found = matrix.load().cell(TAG)
    assert found.platforms == ("linux/amd64", "linux/arm64")
    return found


@pytest.fixture(scope="module")
def local_images(engine, cell, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """One scratch image per platform under the names `build` gives a multi-platform cell's images."""
    images = {}
    for platform in cell.platforms:
        files = {"Dockerfile": b"FROM scratch AS slim\nCOPY hello /hello\n", "hello": platform.encode()}
        result = engine.build(
            files,
            dockerfile="Dockerfile",
            target="slim",
            build_args={},
            labels={CONTENT_HASH_LABEL: f"hash-of-{platform}"},
            log_path=tmp_path_factory.mktemp("logs") / "build.log",
            platform=platform,
        )
        reference = local_references(cell, platform)[1]
        engine.tag(
            result.image_id, reference
        )  # at once: an untagged image is what `docker image prune` takes
        assert engine.image_attrs(reference)["Architecture"] == platform.split("/")[1]
        images[platform] = reference
    yield images
    for reference in images.values():
        engine.remove_image(reference)


def publisher(registry: LoopbackRegistry) -> Publisher:
    return Publisher(parse_target(f"{registry.host}/ml"), None, RetryPolicy(attempts=2, max_seconds=10))


def skopeo_raw(registry: LoopbackRegistry, tag: str) -> bytes:
    return registry.skopeo_inspect("ml/pytorch-cuda-images", tag, raw=True)


def test_a_missing_platform_leaves_no_index(engine, cell, local_images, registry) -> None:  # type: ignore[no-untyped-def]
    pub = publisher(registry)
    lines = pub.push_platforms(engine, cell, ["linux/amd64"], Output())
    assert lines[-1].startswith("no index yet: linux/arm64 not built here")
    assert skopeo_raw(registry, platform_tag(immutable_tag(cell), "linux/amd64"))
    with pytest.raises(RegistryError, match="no index: linux/arm64 not in"):
        pub.merge(cell, Output())
    assert skopeo_raw(registry, immutable_tag(cell)) == b""
    assert skopeo_raw(registry, floating_tag(cell)) == b""


def test_every_platform_pushed_makes_one_verified_index(engine, cell, local_images, registry) -> None:  # type: ignore[no-untyped-def]
    lines = publisher(registry).push_platforms(engine, cell, list(cell.platforms), Output())
    assert [line.split()[0] for line in lines] == ["pushed", "pushed", "index", "index"]
    raw = skopeo_raw(registry, immutable_tag(cell))
    index = json.loads(raw)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    by_platform = {f"{m['platform']['os']}/{m['platform']['architecture']}": m for m in index["manifests"]}
    assert set(by_platform) == {"linux/amd64", "linux/arm64"}
    for platform, entry in by_platform.items():
        child = skopeo_raw(registry, platform_tag(immutable_tag(cell), platform))
        assert entry["digest"] == "sha256:" + hashlib.sha256(child).hexdigest()
        assert entry["size"] == len(child)
    assert skopeo_raw(registry, floating_tag(cell)) == raw  # the floating tag names the same index
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    assert f"index {registry.host}/ml/pytorch-cuda-images:{immutable_tag(cell)}@{digest}" in lines[2]


def test_nightly_reads_every_platforms_content_hash_under_the_index(cell, local_images, registry) -> None:  # type: ignore[no-untyped-def]
    """After the index test above: the skip check sees each platform's image, not one."""
    http = publisher(registry).http()
    found = index.content_hashes(http, "ml/pytorch-cuda-images", immutable_tag(cell), cell.platforms[0])
    assert found == {"linux/amd64": "hash-of-linux/amd64", "linux/arm64": "hash-of-linux/arm64"}
    child = platform_tag(immutable_tag(cell), "linux/arm64")  # one image: taken as the platform named
    assert index.content_hashes(http, "ml/pytorch-cuda-images", child, "linux/arm64") == {
        "linux/arm64": "hash-of-linux/arm64"
    }
    assert index.content_hashes(http, "ml/pytorch-cuda-images", "absent", "linux/amd64") == {}
