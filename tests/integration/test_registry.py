"""Push to real loopback registries: Debian's docker-registry with htpasswd auth behind TLS (a CA the engine
trusts through /etc/docker/certs.d), checked with an independent client (skopeo, plain HTTP to /v2/)."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.conftest import Cli
from tests.integration.loopback_registry import (
    LoopbackRegistry,
    serving_registry,
)

pytestmark = pytest.mark.integration

CPU_TAG = "2.13-cpu-debian12"
CPU_IMMUTABLE = "2.13.0-cpu-debian12"
REPOSITORY = "pytorch/pytorch-cuda-images"
PINNED_A = "pci-registry-test:a"  # the CPU image, pinned so concurrent untagging cannot remove it
PINNED_B = "pci-registry-test:b"
CONTENT_HASH = "dev.pytorch-cuda-images.content-hash"  # A plus a 64 MB random layer and another content hash
OUTPUTS: list[str] = []  # every CLI output of this module, checked for secrets at the end


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, engine) -> Iterator[LoopbackRegistry]:  # type: ignore[no-untyped-def]
    with serving_registry(tmp_path_factory.mktemp("tls-registry"), engine, tls=True, auth=True) as registry:
        yield registry


@pytest.fixture(scope="module")
def image_a(cli: Cli, engine) -> Iterator[str]:  # type: ignore[no-untyped-def]
    result = cli("build", CPU_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    built = re.search(r"built sha256:([0-9a-f]{12})", result.stderr)
    assert built, result.stderr[-2000:]
    engine.tag(built[1], PINNED_A)
    yield engine.image_attrs(PINNED_A)["Id"]
    engine.remove_image(PINNED_A, keep_parents=True)


@pytest.fixture(scope="module")
def image_b(image_a: str, engine) -> Iterator[str]:  # type: ignore[no-untyped-def]
    dockerfile = (
        f"FROM {PINNED_A}\n"
        "RUN head -c 64000000 /dev/urandom > /opt/noise.bin\n"
        f"LABEL {CONTENT_HASH}={'b' * 64}\n"
    )
    engine.client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=PINNED_B, rm=True, forcerm=True)
    yield engine.image_attrs(PINNED_B)["Id"]
    engine.remove_image(PINNED_B)


def push_env(
    local_env: dict[str, str], registry: LoopbackRegistry, tmp: Path, **extra: str
) -> dict[str, str]:
    """The environment of a push: target, credentials, a short retry window, an empty Docker config."""
    docker_config = tmp / "docker-config"
    docker_config.mkdir(exist_ok=True)
    return {
        **local_env,
        "REGISTRY": f"{registry.host}/pytorch",
        "REGISTRY_USERNAME": registry.user,
        "REGISTRY_PASSWORD": registry.password,
        "PUSH_RETRY_MAX_S": "20",
        "DOCKER_CONFIG": str(docker_config),
        **extra,
    }


def run(cli: Cli, env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    result = cli(*args, extra_env=env, timeout=timeout)
    OUTPUTS.append(result.stdout + result.stderr)
    return result


@dataclass(frozen=True)
class PushRunner:
    """Runs the CLI against the TLS registry; keyword arguments override the push environment's variables."""

    cli: Cli
    local_env: dict[str, str]
    registry: LoopbackRegistry
    tmp: Path

    def env(self, **extra: str) -> dict[str, str]:
        return push_env(self.local_env, self.registry, self.tmp, **extra)

    def __call__(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return run(self.cli, self.env(**extra), *args)


@pytest.fixture
def push(cli: Cli, local_env: dict[str, str], tls_registry: LoopbackRegistry, tmp_path: Path) -> PushRunner:
    return PushRunner(cli, local_env, tls_registry, tmp_path)


def assert_no_secret(text: str, registry: LoopbackRegistry) -> None:
    basic = base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
    assert registry.password not in text
    assert basic not in text


def skopeo_digest(registry: LoopbackRegistry, tag: str) -> str:
    digest: str = json.loads(registry.skopeo_inspect(REPOSITORY, tag))["Digest"]
    return digest


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return errors[0]


@pytest.fixture(scope="module")
def pushed_a(
    cli: Cli,
    local_env: dict[str, str],
    tls_registry: LoopbackRegistry,
    image_a: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> subprocess.CompletedProcess[str]:
    env = push_env(local_env, tls_registry, tmp_path_factory.mktemp("push-a"))
    result = run(cli, env, "push", CPU_TAG, "--image", PINNED_A)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    return result


def test_push_is_seen_by_an_independent_client(
    pushed_a: subprocess.CompletedProcess[str], tls_registry: LoopbackRegistry, engine
) -> None:  # type: ignore[no-untyped-def]
    digest = re.search(
        rf"pushed {tls_registry.host}/{REPOSITORY}:{CPU_IMMUTABLE}@(sha256:[0-9a-f]{{64}}) "
        r"\(digest verified\)",
        pushed_a.stdout,
    )
    assert digest, pushed_a.stdout
    assert f"moved {tls_registry.host}/{REPOSITORY}:{CPU_TAG} -> {digest[1]}" in pushed_a.stdout
    assert re.search(r"layer [0-9a-f]{12}: Pushed", pushed_a.stderr)  # per-layer progress
    assert tls_registry.tags(REPOSITORY) == sorted([CPU_TAG, CPU_IMMUTABLE])
    assert tls_registry.digest(REPOSITORY, CPU_IMMUTABLE) == digest[1]
    assert tls_registry.digest(REPOSITORY, CPU_TAG) == digest[1]
    assert skopeo_digest(tls_registry, CPU_IMMUTABLE) == digest[1]
    assert skopeo_digest(tls_registry, CPU_TAG) == digest[1]
    assert f"{tls_registry.host}/{REPOSITORY}@{digest[1]}" in engine.image_attrs(PINNED_A)["RepoDigests"]
    assert_no_secret(pushed_a.stdout + pushed_a.stderr, tls_registry)


@pytest.mark.usefixtures("pushed_a")
def test_noop_push_pushes_nothing_in_under_a_second(
    push: PushRunner,
    tls_registry: LoopbackRegistry,
) -> None:
    before = tls_registry.digest(REPOSITORY, CPU_IMMUTABLE)
    log_size = tls_registry.log_path.stat().st_size
    result = push("push", CPU_TAG, "--image", PINNED_A)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the registry already holds this image (same digest)" in result.stdout
    assert f"unchanged {tls_registry.host}/{REPOSITORY}:{CPU_TAG}" in result.stdout
    seconds = float(re.search(r"done in ([0-9.]+) s", result.stdout)[1])  # type: ignore[index]
    assert seconds < 1.0
    new_log = tls_registry.log_path.read_bytes()[log_size:].decode(errors="replace")
    assert '"PUT ' not in new_log and '"POST ' not in new_log and '"PATCH ' not in new_log
    assert tls_registry.digest(REPOSITORY, CPU_IMMUTABLE) == before


@pytest.mark.usefixtures("pushed_a")
def test_credentials_from_the_docker_config_file(
    push: PushRunner,
    tls_registry: LoopbackRegistry,
) -> None:
    env = push.env(REGISTRY_USERNAME="", REGISTRY_PASSWORD="")
    auth = base64.b64encode(f"{tls_registry.user}:{tls_registry.password}".encode()).decode()
    config = Path(env["DOCKER_CONFIG"]) / "config.json"
    config.write_text(json.dumps({"auths": {f"https://{tls_registry.host}": {"auth": auth}}}))
    before = config.read_bytes()
    result = run(push.cli, env, "push", CPU_TAG, "--image", PINNED_A)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "same digest" in result.stdout
    assert config.read_bytes() == before  # never written (no login)
    assert_no_secret(result.stdout + result.stderr, tls_registry)


@pytest.mark.usefixtures("pushed_a")
def test_rebuilt_image_with_the_same_content_hash_is_not_pushed(
    cli: Cli,
    engine,  # type: ignore[no-untyped-def]
    push: PushRunner,
    tls_registry: LoopbackRegistry,
) -> None:
    rebuilt = cli("build", CPU_TAG)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    image = re.search(r"built sha256:([0-9a-f]{12})", rebuilt.stderr)[1]  # type: ignore[index]
    assert not engine.image_attrs(PINNED_A)["Id"].startswith(
        f"sha256:{image}"
    )  # a new image (new created label)
    before = tls_registry.digest(REPOSITORY, CPU_IMMUTABLE)
    result = push("push", CPU_TAG, "--image", image)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the registry already holds the same content (content hash" in result.stdout
    assert tls_registry.digest(REPOSITORY, CPU_IMMUTABLE) == before
    assert tls_registry.digest(REPOSITORY, CPU_TAG) == before


@pytest.mark.usefixtures("pushed_a")
def test_build_with_push_builds_smoke_tests_and_pushes(
    push: PushRunner,
    tls_registry: LoopbackRegistry,
) -> None:
    result = push("build", CPU_TAG, "--push")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smoke tests passed" in result.stderr
    assert f"{CPU_TAG}: unchanged {tls_registry.host}/{REPOSITORY}:{CPU_IMMUTABLE}@" in result.stdout


@pytest.mark.usefixtures("pushed_a", "image_b")
def test_wrong_password_is_one_line_and_pushes_nothing(
    push: PushRunner,
    tls_registry: LoopbackRegistry,
) -> None:
    before = {tag: tls_registry.digest(REPOSITORY, tag) for tag in (CPU_IMMUTABLE, CPU_TAG)}
    catalog = tls_registry.get("/v2/_catalog")[2]
    tags = tls_registry.tags(REPOSITORY)  # the image's two tags and its SBOM's referrers tag (sha256-...)
    assert tags is not None and {CPU_TAG, CPU_IMMUTABLE} <= set(tags)
    wrong = "wrong-" + tls_registry.password[::-1]
    started = time.monotonic()
    result = push("push", CPU_TAG, "--image", PINNED_B, REGISTRY_PASSWORD=wrong)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "unauthorized" in line and "credentials from REGISTRY_USERNAME/REGISTRY_PASSWORD" in line
    assert time.monotonic() - started < 30  # no retries on an auth error
    assert wrong not in result.stdout + result.stderr
    assert tls_registry.tags(REPOSITORY) == tags
    assert tls_registry.get("/v2/_catalog")[2] == catalog
    assert {tag: tls_registry.digest(REPOSITORY, tag) for tag in before} == before


@pytest.mark.usefixtures("pushed_a", "image_b")
def test_registry_down_for_good_is_a_clear_error_and_floating_tags_stay(
    push: PushRunner,
    tls_registry: LoopbackRegistry,
) -> None:
    before = {tag: tls_registry.digest(REPOSITORY, tag) for tag in (CPU_IMMUTABLE, CPU_TAG)}
    tls_registry.stop(kill=True)
    try:
        started = time.monotonic()
        result = push("push", CPU_TAG, "--image", PINNED_B, PUSH_RETRY_MAX_S="3")
        took = time.monotonic() - started
    finally:
        tls_registry.start()
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "gave up after" in line and "attempts" in line and "connection refused" in line, line
    assert "retrying in" in result.stderr  # the backoff was visible
    assert took < 60
    assert {tag: tls_registry.digest(REPOSITORY, tag) for tag in before} == before


@pytest.mark.usefixtures("pushed_a", "image_b")
def test_registry_restarted_during_a_push_completes_it(
    engine,  # type: ignore[no-untyped-def]
    push: PushRunner,
    tls_registry: LoopbackRegistry,
) -> None:
    env = push.env(PUSH_RETRY_MAX_S="120")
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "push", CPU_TAG, "--image", PINNED_B],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    outage: dict[str, float] = {}

    def interrupt() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if tls_registry.uploads_started(REPOSITORY):
                tls_registry.stop(kill=True)
                outage["stopped"] = time.monotonic()
                time.sleep(2)
                tls_registry.start()
                outage["started"] = time.monotonic()
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=interrupt)
    watcher.start()
    stdout, stderr = proc.communicate(timeout=600)
    watcher.join(timeout=60)
    tls_registry.start()
    OUTPUTS.append(stdout + stderr)
    assert "stopped" in outage, "the registry was never stopped during the upload"
    assert proc.returncode == 0, stderr[-3000:]
    assert "retrying in" in stderr.lower(), stderr[-3000:]  # the engine's layer retry or ours (tenacity)
    digest = re.search(r"pushed \S+@(sha256:[0-9a-f]{64}) \(digest verified\)", stdout)
    assert digest, stdout
    assert tls_registry.digest(REPOSITORY, CPU_IMMUTABLE) == digest[1]
    assert tls_registry.digest(REPOSITORY, CPU_TAG) == digest[1]
    assert skopeo_digest(tls_registry, CPU_TAG) == digest[1]
    assert f"{tls_registry.host}/{REPOSITORY}@{digest[1]}" in engine.image_attrs(PINNED_B)["RepoDigests"]


@pytest.mark.usefixtures("pushed_a", "image_b")
def test_floating_tag_is_moved_registry_side_when_the_content_is_already_there(  # type: ignore[no-untyped-def]
    engine,
    push: PushRunner,
    tls_registry: LoopbackRegistry,
) -> None:
    """An earlier run pushed the immutable tag but died before moving the floating one."""
    from builder.publish.credentials import Credentials
    from builder.publish.http import RegistryHttp

    assert push("push", CPU_TAG, "--image", PINNED_B).returncode == 0
    immutable = tls_registry.digest(REPOSITORY, CPU_IMMUTABLE)
    a_digest = next(
        d.split("@")[1]
        for d in engine.image_attrs(PINNED_A)["RepoDigests"]
        if d.startswith(tls_registry.host)
    )
    http = RegistryHttp(
        tls_registry.host, Credentials(tls_registry.host, tls_registry.user, tls_registry.password)
    )
    found = http.manifest(REPOSITORY, a_digest)
    assert found is not None
    http.put_manifest(REPOSITORY, CPU_TAG, found[1], found[2])  # floating tag back on the old image
    assert tls_registry.digest(REPOSITORY, CPU_TAG) == a_digest != immutable
    # a rebuilt B (same content hash, another image id) finds the content there and only moves the tag
    rebuilt = engine.client.images.build(
        fileobj=io.BytesIO(f"FROM {PINNED_B}\nLABEL rebuilt=yes\nLABEL {CONTENT_HASH}={'b' * 64}\n".encode()),
        rm=True,
    )[0]
    try:
        result = push("push", CPU_TAG, "--image", rebuilt.id)
    finally:
        engine.remove_image(rebuilt.id)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "same content" in result.stdout
        and f"moved {tls_registry.host}/{REPOSITORY}:{CPU_TAG}" in result.stdout
    )
    assert "registry-side, nothing to upload" in result.stderr
    assert tls_registry.digest(REPOSITORY, CPU_TAG) == immutable
    assert tls_registry.digest(REPOSITORY, CPU_IMMUTABLE) == immutable


@pytest.mark.usefixtures("pushed_a", "image_b")
def test_registry_back_within_the_retry_window_before_the_push(  # type: ignore[no-untyped-def]
    engine,
    push: PushRunner,
    tls_registry: LoopbackRegistry,
) -> None:
    """Down when the push starts, up again 2 s later: the backoff (tenacity) carries the push through."""
    assert push("push", CPU_TAG, "--image", PINNED_B).returncode == 0
    tls_registry.stop(kill=True)
    restart = threading.Timer(2.0, tls_registry.start)
    restart.start()
    try:
        result = push("push", CPU_TAG, "--image", PINNED_A, PUSH_RETRY_MAX_S="30")
    finally:
        restart.join()
        tls_registry.start()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "connection refused - retrying in" in result.stderr
    digest = re.search(r"pushed \S+@(sha256:[0-9a-f]{64}) \(digest verified\)", result.stdout)
    assert digest, result.stdout
    assert (
        tls_registry.digest(REPOSITORY, CPU_IMMUTABLE)
        == tls_registry.digest(REPOSITORY, CPU_TAG)
        == digest[1]
    )
    assert f"{tls_registry.host}/{REPOSITORY}@{digest[1]}" in engine.image_attrs(PINNED_A)["RepoDigests"]


def test_no_password_in_any_output(tls_registry: LoopbackRegistry) -> None:
    assert OUTPUTS, "no push ran"
    for text in OUTPUTS:
        assert_no_secret(text, tls_registry)
    home_config = Path.home() / ".docker" / "config.json"
    if home_config.exists():
        assert tls_registry.password not in home_config.read_text()


@pytest.fixture
def plain_registry(tmp_path: Path, engine) -> Iterator[LoopbackRegistry]:  # type: ignore[no-untyped-def]
    with serving_registry(tmp_path / "team-registry", engine) as registry:
        yield registry


def test_mirror_bases_copies_by_digest_and_a_build_uses_the_copy(  # type: ignore[no-untyped-def]
    local_env: dict[str, str], engine, plain_registry: LoopbackRegistry, sandbox_info, project_copy: Path
) -> None:
    """The sandbox's Debian base goes into a second loopback registry (the team's), is recorded in
    matrix.lock under the profile that builds from it, and a build with that profile pulls the copy."""
    spec = yaml.safe_load((project_copy / "matrix.yaml").read_text())
    spec["mirrors"]["profiles"]["local"]["lock_bases"] = True
    (project_copy / "matrix.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    project = Cli(env=local_env, cwd=project_copy)
    source = f"{sandbox_info.registry}/library/debian:12"
    mirror = f"{plain_registry.host}/library/debian:12"
    args = ("mirror-bases", "--only", CPU_TAG, "--to", plain_registry.host, "--profile", "local")
    first = project(*args)
    OUTPUTS.append(first.stdout + first.stderr)
    assert first.returncode == 0, first.stderr[-3000:]
    source_digest = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{source}"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    )["Digest"]
    assert f"copied {mirror}@{source_digest} (from {source}@{source_digest})" in first.stdout
    assert plain_registry.digest("library/debian", "12") == source_digest  # same digest as the source
    locked = yaml.safe_load((project_copy / "matrix.lock").read_text())["bases"]["local"]
    assert locked == {mirror: source_digest}

    again = project(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"present {mirror}@{source_digest}" in again.stdout and "skipped" in again.stderr

    engine.remove_image(mirror)  # the build must pull the copy from the team registry
    built = project(
        "build",
        CPU_TAG,
        "--out",
        str(project_copy / "images"),
        extra_env={"SANDBOX_REGISTRY": plain_registry.host},
    )
    OUTPUTS.append(built.stdout + built.stderr)
    assert built.returncode == 0, built.stderr[-3000:]
    assert f"pulling base {mirror}@{source_digest}" in built.stderr  # pinned by the lock
    image = re.search(r"built sha256:([0-9a-f]{12})", built.stderr)[1]  # type: ignore[index]
    labels = engine.image_attrs(image)["Config"]["Labels"]
    assert labels["org.opencontainers.image.base.name"] == mirror
    assert labels["org.opencontainers.image.base.digest"] == source_digest
    assert '"GET /v2/library/debian/manifests/sha256:' in plain_registry.log_path.read_text()
