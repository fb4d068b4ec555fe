"""Publishing without an engine: targets, credentials, tag plans, retries, mirrors, Harbor's API."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from builder.errors import ConfigError, RegistryError
from builder.model.secrets import auth_secrets, redact
from builder.output import Output
from builder.publish import push as registry
from builder.publish.credentials import Credentials, lookup_credentials
from builder.publish.harbor import ensure_harbor_project
from builder.publish.mirror import mirror_bases, select_bases
from builder.publish.push import RetryPolicy
from builder.publish.target import Target, parse_target, resolve_target


@pytest.mark.parametrize(
    ("text", "host", "repository", "insecure"),
    [
        ("harbor.example.com/ml", "harbor.example.com", "ml/pytorch-cuda-images", False),
        ("harbor.example.com/ml/pytorch", "harbor.example.com", "ml/pytorch", False),
        ("https://harbor.example.com:8443/ml/", "harbor.example.com:8443", "ml/pytorch-cuda-images", False),
        ("127.0.0.1:5000/pytorch", "127.0.0.1:5000", "pytorch/pytorch-cuda-images", False),
        ("http://127.0.0.1:5000/pytorch", "127.0.0.1:5000", "pytorch/pytorch-cuda-images", True),
        ("http://localhost:5000/a/b/c", "localhost:5000", "a/b/c", True),
    ],
)
def test_parse_target(text: str, host: str, repository: str, insecure: bool) -> None:
    target = parse_target(text)
    assert (target.host, target.repository, target.insecure) == (host, repository, insecure)
    assert target.reference("2.13.0-cpu-debian12") == f"{host}/{repository}:2.13.0-cpu-debian12"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://harbor.example.com/ml", "plain HTTP is allowed only for a loopback registry"),
        ("harbor.example.com", "expected host[:port]/project"),
        ("library/debian", "not a registry host"),
        ("https://user:secret@harbor.example.com/ml", "credentials never go into the registry target"),
        ("harbor.example.com/ML", "bad path component 'ML'"),
        ("ftp://harbor.example.com/ml", "unknown scheme"),
    ],
)
def test_parse_target_refuses(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_target(text)
    assert message in str(err.value)
    assert err.value.exit_code == 2


def test_resolve_target_prefers_the_environment_value() -> None:
    assert resolve_target("localhost:5000/pytorch", None).host == "localhost:5000"
    assert resolve_target("localhost:5000/pytorch", "harbor.example.com/ml").project == "ml"


def write_config(tmp_path: Path, config: dict[str, object]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_credentials_from_the_environment_win(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, {"auths": {"harbor.example.com": {"auth": base64.b64encode(b"u:p").decode()}}}
    )
    env = {"REGISTRY_USERNAME": "robot$ml+ci", "REGISTRY_PASSWORD": "tok3n-value"}
    creds = lookup_credentials("harbor.example.com", env=env, config_path=path)
    assert creds is not None
    assert (creds.username, creds.password, creds.source) == (
        "robot$ml+ci",
        "tok3n-value",
        "REGISTRY_USERNAME/REGISTRY_PASSWORD",
    )
    assert creds.auth_config() == {
        "username": "robot$ml+ci",
        "password": "tok3n-value",
        "serveraddress": "harbor.example.com",
    }


def test_half_of_the_environment_credentials_is_an_error() -> None:
    with pytest.raises(ConfigError, match="REGISTRY_PASSWORD is not set"):
        lookup_credentials("h.example.com", env={"REGISTRY_USERNAME": "u"})


@pytest.mark.parametrize("key", ["127.0.0.1:5443", "https://127.0.0.1:5443", "https://127.0.0.1:5443/v2/"])
def test_credentials_from_the_docker_config_base64_auth(tmp_path: Path, key: str) -> None:
    auth = base64.b64encode(b"alice:pa:ss").decode()  # a password may contain ':'
    path = write_config(tmp_path, {"auths": {"other.example.com": {"auth": "eDp5"}, key: {"auth": auth}}})
    creds = lookup_credentials("127.0.0.1:5443", env={}, config_path=path)
    assert creds is not None
    assert (creds.username, creds.password, creds.source) == ("alice", "pa:ss", str(path))


def test_docker_config_found_through_DOCKER_CONFIG(tmp_path: Path) -> None:
    write_config(tmp_path, {"auths": {"h.example.com": {"username": "u", "password": "p"}}})
    creds = lookup_credentials("h.example.com", env={"DOCKER_CONFIG": str(tmp_path)})
    assert creds is not None and creds.password == "p"


def test_identity_token_and_missing_entries(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"auths": {"h.example.com": {"identitytoken": "oauth-refresh"}}})
    creds = lookup_credentials("h.example.com", env={}, config_path=path)
    assert creds is not None and creds.auth_config() == {
        "identitytoken": "oauth-refresh",
        "serveraddress": "h.example.com",
    }
    assert lookup_credentials("other.example.com", env={}, config_path=path) is None
    assert lookup_credentials("h.example.com", env={}, config_path=tmp_path / "absent.json") is None


def test_bad_docker_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable Docker config"):
        lookup_credentials("h.example.com", env={}, config_path=path)
    path = write_config(tmp_path, {"auths": {"h.example.com": {"auth": "%%%not-base64"}}})
    with pytest.raises(ConfigError, match="not base64 of user:password") as err:
        lookup_credentials("h.example.com", env={}, config_path=path)
    assert "%%%not-base64" not in str(err.value)


def test_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper = tmp_path / "bin" / "docker-credential-unit"
    helper.parent.mkdir()
    helper.write_text(
        '#!/bin/sh\nread host\necho "{\\"ServerURL\\":\\"$host\\",\\"Username\\":\\"hu\\",'
        '\\"Secret\\":\\"hs-$host\\"}"\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}:/usr/bin:/bin")
    path = write_config(tmp_path, {"credHelpers": {"h.example.com": "unit"}})
    creds = lookup_credentials("h.example.com", env={}, config_path=path)
    assert creds is not None and (creds.username, creds.password) == ("hu", "hs-h.example.com")


def test_credential_store_tokens_and_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`credsStore` through docker-py: an identity token (`<token>`), nothing stored, and a broken helper."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    store = bin_dir / "docker-credential-store"
    store.write_text(
        '#!/bin/sh\nread host\ncase "$host" in\n'
        '  t.example.com) echo \'{"Username":"<token>","Secret":"refresh-tok"}\' ;;\n'
        "  *) echo 'credentials not found in native keychain'; exit 1 ;;\nesac\n"
    )
    store.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    path = write_config(tmp_path, {"credsStore": "store"})
    creds = lookup_credentials("t.example.com", env={}, config_path=path)
    assert creds is not None and creds.auth_config() == {
        "identitytoken": "refresh-tok",
        "serveraddress": "t.example.com",
    }
    assert lookup_credentials("other.example.com", env={}, config_path=path) is None
    missing = write_config(tmp_path, {"credsStore": "absent"})
    with pytest.raises(ConfigError) as err:
        lookup_credentials("t.example.com", env={}, config_path=missing)
    assert str(err.value).startswith(f"{missing}: credsStore: docker-credential-absent not installed")
    assert err.value.exit_code == 2


def test_credentials_never_show_their_secret() -> None:
    creds = Credentials("h.example.com", "robot$x", "s3cret-value", source="env")
    assert "s3cret-value" not in repr(creds) and "s3cret-value" not in f"{creds}"
    encoded = base64.b64encode(b"robot$x:s3cret-value").decode()
    assert set(creds.secrets()) == {"s3cret-value", encoded}
    message = f"push failed: Authorization: Basic {encoded} password=s3cret-value"
    assert "s3cret" not in redact(message, creds.secrets())
    assert set(auth_secrets(creds.auth_config())) == {"s3cret-value", encoded}
    assert auth_secrets(None) == []


def test_plan_pushes_the_immutable_tag_first(default_matrix) -> None:  # type: ignore[no-untyped-def]
    target = Target("harbor.example.com", "ml/pytorch")
    cpu = registry.plan_push(default_matrix.cell("2.13-cpu-debian12"), target)
    assert cpu.local == "pytorch-cuda-images:2.13.0-cpu-debian12"
    assert cpu.immutable == "harbor.example.com/ml/pytorch:2.13.0-cpu-debian12"
    assert cpu.floating == "harbor.example.com/ml/pytorch:2.13-cpu-debian12"
    assert cpu.repository == "harbor.example.com/ml/pytorch"
    full = registry.plan_push(default_matrix.cell("2.14-cuda13.0-debian12-full"), target, local="sha256:abc")
    assert full.local == "sha256:abc"
    assert full.immutable.endswith(":2.14.1-cuda13.0.3-cudnn9-debian12-full")
    assert full.floating == "harbor.example.com/ml/pytorch:2.14-cuda13.0-debian12-full"


@pytest.mark.parametrize(
    ("message", "transient"),
    [
        ('Get "https://h/v2/": dial tcp 127.0.0.1:5000: connect: connection refused', True),
        ("Put https://h/v2/x/blobs/uploads/1: EOF", True),
        ("received unexpected HTTP status: 503 Service Unavailable", True),
        ("received unexpected HTTP status: 500 Internal Server Error", True),
        ("net/http: TLS handshake timeout", True),
        ("unauthorized: authentication required", False),
        ("denied: requested access to the resource is denied", False),
        ("x509: certificate signed by unknown authority", False),
        ("manifest unknown: manifest unknown", False),
    ],
)
def test_transient_errors(message: str, transient: bool) -> None:
    assert registry.is_transient(message) is transient


def test_retries_with_backoff_until_success() -> None:
    calls: list[int] = []
    said: list[str] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RegistryError("push failed: dial tcp 127.0.0.1:9: connect: connection refused")
        return "sha256:ok"

    policy = RetryPolicy(attempts=5, max_seconds=10, first_wait=0.01, max_wait=0.05)
    assert registry.with_retries(policy, "push", flaky, said.append) == "sha256:ok"
    assert len(calls) == 3 and len(said) == 2 and "retrying in" in said[0] and "attempt 2/5" in said[0]


def test_retries_give_up_with_one_clear_error() -> None:
    def down() -> None:
        raise RegistryError("push failed: connection refused")

    policy = RetryPolicy(attempts=3, max_seconds=10, first_wait=0.01, max_wait=0.01)
    with pytest.raises(RegistryError, match=r"push: gave up after 3 attempts in .* connection refused"):
        registry.with_retries(policy, "push", down, lambda _: None)


def test_auth_errors_are_not_retried() -> None:
    calls: list[int] = []

    def denied() -> None:
        calls.append(1)
        raise RegistryError("unauthorized: authentication required")

    with pytest.raises(RegistryError, match="unauthorized"):
        registry.with_retries(RetryPolicy(first_wait=0.01), "push", denied, lambda _: None)
    assert len(calls) == 1


def test_retry_policy_from_options_and_environment() -> None:
    assert RetryPolicy.from_env(env={}) == RetryPolicy()
    assert RetryPolicy.from_env(env={"PUSH_RETRIES": "2", "PUSH_RETRY_MAX_S": "7.5"}) == RetryPolicy(2, 7.5)
    assert RetryPolicy.from_env(4, 1.0, env={"PUSH_RETRIES": "2"}) == RetryPolicy(4, 1.0)
    with pytest.raises(ConfigError):
        RetryPolicy.from_env(env={"PUSH_RETRIES": "many"})
    with pytest.raises(ConfigError):
        RetryPolicy.from_env(0, None, env={})


def test_base_selection(default_matrix) -> None:  # type: ignore[no-untyped-def]
    bases = select_bases(
        default_matrix.select(["2.13-cpu-debian12"]), lambda c: f"mirror.example.com/{c.base_image}"
    )
    assert bases == {"library/debian:12": "mirror.example.com/library/debian:12"}


def test_mirror_target_is_checked_before_any_engine_call() -> None:
    for bad in ("https://h.example.com/x", "u:p@h.example.com", "library"):
        with pytest.raises(ConfigError):
            mirror_bases(
                None,
                {"library/debian:12": "x.example.com/library/debian:12"},
                bad,  # type: ignore[arg-type]
                policy=RetryPolicy(),
                output=Output(),
            )


class _FakeHarbor(BaseHTTPRequestHandler):
    """Harbor's two project endpoints, enough to check the requests `ensure_harbor_project` makes."""

    projects: ClassVar[set[str]] = set()
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _reply(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self.seen.append(("HEAD", self.path, self.headers.get("Authorization", "")))
        name = self.path.split("project_name=", 1)[-1]
        self._reply(200 if name in self.projects else 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("POST", self.path, json.dumps(body, sort_keys=True)))
        self.projects.add(body["project_name"])
        self._reply(201)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_harbor() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _FakeHarbor)
    _FakeHarbor.projects, _FakeHarbor.seen = set(), []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_harbor_project_is_created_once(fake_harbor: str) -> None:
    target = parse_target(f"http://{fake_harbor}/ml")
    creds = Credentials(fake_harbor, "robot$admin", "harbor-secret")
    assert ensure_harbor_project(target, creds) is True
    assert ensure_harbor_project(target, creds) is False
    methods = [(m, p) for m, p, _ in _FakeHarbor.seen]
    assert methods == [
        ("HEAD", "/api/v2.0/projects?project_name=ml"),
        ("POST", "/api/v2.0/projects"),
        ("HEAD", "/api/v2.0/projects?project_name=ml"),
    ]
    assert _FakeHarbor.seen[0][2] == creds.basic_header()
    assert json.loads(_FakeHarbor.seen[1][2]) == {"project_name": "ml", "metadata": {"public": "false"}}
    with pytest.raises(ConfigError, match="--create-project needs"):
        ensure_harbor_project(target, None)


def test_sha256_digest_is_the_registry_digest_of_the_bytes() -> None:
    from builder.publish.http import sha256_digest

    assert sha256_digest(b"{}") == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
