"""The SBOM of a real image (the CPU cell): made after the gate, stored in its own reproducible top layer,
printed by `sbom`, and pushed as an OCI referrer to Debian's docker-registry (the sandbox's registry
software, which has no referrers API: the tag schema's index lists it), checked with an independent
client (plain HTTP to /v2/)."""

from __future__ import annotations

import http.server
import io
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.build import sbom
from builder.model import matrix
from builder.publish import referrers
from builder.publish.http import RegistryHttp
from tests.conftest import REPO
from tests.integration.conftest import Cli
from tests.integration.loopback_registry import LoopbackRegistry, serving_registry

pytestmark = pytest.mark.integration

CPU_TAG = "2.13-cpu-debian12"
CPU_IMMUTABLE = "2.13.0-cpu-debian12"
REPOSITORY = "sbom/pytorch-cuda-images"
INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def built(cli: Cli, engine, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    result = cli("build", CPU_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{CPU_TAG}: SBOM" in result.stderr
    return str(engine.image_attrs(f"pytorch-cuda-images:{CPU_TAG}")["Id"])


@pytest.fixture(scope="module")
def document(cli: Cli, built: str) -> bytes:
    result = cli("sbom", CPU_TAG, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.encode()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, engine) -> Iterator[LoopbackRegistry]:  # type: ignore[no-untyped-def]
    with serving_registry(tmp_path_factory.mktemp("sbom-registry"), engine) as registry:
        yield registry


def push(cli: Cli, registry: LoopbackRegistry, tmp: Path) -> subprocess.CompletedProcess[str]:
    (tmp / "docker-config").mkdir(exist_ok=True)
    env = {
        "REGISTRY": f"{registry.host}/sbom",
        "DOCKER_CONFIG": str(tmp / "docker-config"),
        "PUSH_RETRY_MAX_S": "20",
    }
    result = cli("push", CPU_TAG, extra_env=env, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result


def test_the_image_carries_a_valid_sbom_naming_torch_and_debian_packages(document: bytes) -> None:
    assert sbom.validation_error(document) is None
    doc = json.loads(document)
    rows = sbom.rows(doc)
    assert ("pypi", "torch", "2.13.0+cpu") in rows
    assert any(kind == "pypi" and name == "numpy" for kind, name, _ in rows)
    debs = {name for kind, name, _ in rows if kind == "deb"}
    assert {"libc6", "python3", "ca-certificates"} <= debs, sorted(debs)[:20]
    assert sum(kind == "oci" for kind, _, _ in rows) == 1
    purls = [c["purl"] for c in doc["components"]]
    assert any(p.startswith("pkg:deb/debian/libc6@") and "arch=amd64" in p for p in purls)
    facts = sbom.properties(doc)
    assert facts["torch"] == "2.13.0+cpu"
    assert facts["cuda"] == "none"


def test_the_sbom_layer_is_the_same_bytes_when_built_again(  # type: ignore[no-untyped-def]
    document: bytes, built: str, engine, tmp_path: Path
) -> None:
    """The SBOM layer holds no build time: added again to the gated image without the cache, it is
    the same layer (the same diff ID)."""
    attrs = engine.image_attrs(built)
    assert attrs["Config"]["Labels"][sbom.SBOM_LABEL] == sbom.SBOM_PATH
    gated = attrs["Parent"]  # the build's intermediate images down to the one without the SBOM layer
    while len(engine.image_attrs(gated)["RootFS"]["Layers"]) == len(attrs["RootFS"]["Layers"]):
        gated = engine.image_attrs(gated)["Parent"]
    time.sleep(1.1)  # another second on the clock than the build's
    again = engine.add_files(
        gated,
        {sbom.SBOM_PATH: document},
        labels={sbom.SBOM_LABEL: sbom.SBOM_PATH},
        log_path=tmp_path / "sbom-build.log",
        nocache=True,
    )
    try:
        assert again != built  # really built again (another image config: its creation time)
        assert engine.image_attrs(again)["RootFS"]["Layers"] == attrs["RootFS"]["Layers"]
    finally:
        engine.remove_image(again, keep_parents=True)


def test_sbom_prints_one_line_per_component(cli: Cli, built: str) -> None:
    result = cli("sbom", CPU_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pypi  torch 2.13.0+cpu" in result.stdout.splitlines()
    assert "cuda none" in result.stdout.splitlines()[-1]


def test_the_push_attaches_it_as_a_referrer_found_through_the_tag_schema(
    cli: Cli, built: str, document: bytes, registry: LoopbackRegistry, tmp_path: Path
) -> None:
    first = push(cli, registry, tmp_path)
    subject = registry.digest(REPOSITORY, CPU_IMMUTABLE)
    assert subject is not None
    assert f"(tag sha256-{subject.removeprefix('sha256:')}, " in first.stdout
    assert "attached SBOM sha256:" in first.stdout
    # an independent client: no referrers API here, the tag schema's index lists the artifact
    assert registry.get(f"/v2/{REPOSITORY}/referrers/{subject}")[0] == 404
    status, _, body = registry.get(
        f"/v2/{REPOSITORY}/manifests/sha256-{subject.removeprefix('sha256:')}", headers={"Accept": INDEX}
    )
    assert status == 200
    (listed,) = json.loads(body)["manifests"]
    assert listed["artifactType"] == sbom.MEDIA_TYPE
    status, _, body = registry.get(
        f"/v2/{REPOSITORY}/manifests/{listed['digest']}", headers={"Accept": OCI_MANIFEST}
    )
    manifest = json.loads(body)
    assert manifest["subject"]["digest"] == subject
    assert manifest["artifactType"] == sbom.MEDIA_TYPE
    status, _, blob = registry.get(f"/v2/{REPOSITORY}/blobs/{manifest['layers'][0]['digest']}")
    assert status == 200 and blob == document
    # the tool's own reader finds it the same way (the API answers 404, then the tag)
    http = RegistryHttp(registry.host, None, insecure=True)
    found, via = referrers.referrers(http, REPOSITORY, subject, sbom.MEDIA_TYPE)
    assert [m["digest"] for m in found] == [listed["digest"]]
    assert via == f"tag sha256-{subject.removeprefix('sha256:')}"
    # a second push: the same artifact, listed once
    again = push(cli, registry, tmp_path)
    assert f"unchanged SBOM {listed['digest']}" in again.stdout
    status, _, body = registry.get(
        f"/v2/{REPOSITORY}/manifests/sha256-{subject.removeprefix('sha256:')}", headers={"Accept": INDEX}
    )
    assert [m["digest"] for m in json.loads(body)["manifests"]] == [listed["digest"]]


class RefusingProxy(http.server.ThreadingHTTPServer):
    """A registry in front of a real one that refuses OCI artifacts (as registries without OCI 1.1
    support answer): a manifest PUT with an `artifactType` gets 400 MANIFEST_INVALID; the rest passes."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), _Forward)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Forward(http.server.BaseHTTPRequestHandler):
    server: RefusingProxy

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "PUT" and "/manifests/" in self.path and b'"artifactType"' in body:
            error = b'{"errors":[{"code":"MANIFEST_INVALID","message":"artifacts are not accepted"}]}'
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        request = urllib.request.Request(
            f"http://{self.server.upstream}{self.path}",
            data=body or None,
            method=self.command,
            headers=headers,
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        try:
            response = opener.open(request, timeout=60)
            status, reply_headers, payload = response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            status, reply_headers, payload = exc.code, exc.headers, exc.read()
        self.send_response(status)
        for key, value in reply_headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "date", "server"):
                self.send_header(key, value.replace(self.server.upstream, self.server.host))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_a_registry_that_refuses_the_artifact_gets_a_warning_and_the_push_stands(
    built: str,
    registry: LoopbackRegistry,
    engine,  # type: ignore[no-untyped-def]
) -> None:
    """The push's SBOM step against a registry that refuses OCI artifacts: one warning line, the image and
    its tags untouched. (The image goes in straight from the engine; only the SBOM step talks to the
    refusing registry.)"""
    from builder.model.naming import LOCAL_REPOSITORY
    from builder.output import Output
    from builder.publish.push import RetryPolicy, attach_sbom, plan_push
    from builder.publish.target import Target

    repository = "refused/pytorch-cuda-images"
    for tag in (CPU_IMMUTABLE, CPU_TAG):
        reference = f"{registry.host}/{repository}:{tag}"
        engine.tag(f"{LOCAL_REPOSITORY}:{CPU_TAG}", reference)
        engine.push(reference, auth=None)
    subject = registry.digest(repository, CPU_IMMUTABLE)
    assert subject is not None
    proxy = RefusingProxy(registry.host)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    stderr = io.StringIO()
    try:
        target = Target(proxy.host, repository, insecure=True)
        cell = matrix.load(REPO / "matrix.yaml").cell(CPU_TAG)
        line = attach_sbom(
            engine,
            plan_push(cell, target),
            target,
            RegistryHttp(proxy.host, None, insecure=True),
            subject,
            policy=RetryPolicy(attempts=2, max_seconds=5),
            output=Output(stderr=stderr),
        )
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert line == ""
    warnings = [w for w in stderr.getvalue().splitlines() if w.startswith("warning: SBOM not attached")]
    assert len(warnings) == 1, stderr.getvalue()
    assert "MANIFEST_INVALID" in warnings[0]
    assert "the image push stands" in warnings[0]
    assert registry.digest(repository, CPU_IMMUTABLE) == subject
    assert registry.digest(repository, CPU_TAG) == subject
    fallback = f"/v2/{repository}/manifests/sha256-{subject.removeprefix('sha256:')}"
    assert registry.get(fallback)[0] == 404
