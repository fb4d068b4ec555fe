"""The target registry: where it is, how to log in, what to push, and proof that it arrived.

- `parse_target` / `resolve_target`: `host[:port]/project[/repo]` from `REGISTRY` or matrix.yaml.
- `lookup_credentials`: `REGISTRY_USERNAME`/`REGISTRY_PASSWORD`, else the Docker config file (base64
  `auth`, `identitytoken`, credential helpers). Credentials are passed per call, never printed or stored.
- `plan_push` / `push_cell`: immutable tag first, its digest verified, then the floating tags; skipped when
  the registry already holds the same content (same digest or same content-hash label).
- `mirror_bases`: copy base images by digest into the team registry (recorded in matrix.lock).
- `ensure_harbor_project`: Harbor's API v2.0, only for `--create-project` (kept apart from the push path).

All docker-py calls go through `builder.build.engine.Engine`; the small HTTP client here reads manifests and
config blobs (for the content-hash label) and copies a manifest to move a floating tag without a push.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import functools
import hashlib
import ipaddress
import json
import os
import re
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from builder.build.render import LABEL_PREFIX, cell_immutable_tag, floating_tags
from builder.errors import ConfigError, RegistryError
from builder.model.secrets import looks_secret, redact
from builder.output import Output

if TYPE_CHECKING:
    from builder.build.engine import Engine
    from builder.model.cell import Cell
    from builder.model.matrix import Matrix
    from builder.model.profiles import ResolvedProfile

IMAGE_NAME = "pytorch-cuda-images"  # the local repository (builder.build.pipeline.LOCAL_REPOSITORY)
CONTENT_HASH_LABEL = f"{LABEL_PREFIX}.content-hash"
CERTS_D = Path("/etc/docker/certs.d")  # where dockerd looks for a registry's CA (`<host:port>/ca.crt`)
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?$")
T = TypeVar("T")
Say = Callable[[str], None]


# --- target -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where images go: `host` (with port) and the repository path in it."""

    host: str
    repository: str
    insecure: bool = False  # plain HTTP (only for loopback)

    @property
    def project(self) -> str:
        """The first path component (a Harbor project, a Nexus repository prefix)."""
        return self.repository.split("/", 1)[0]

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def reference(self, tag: str) -> str:
        return f"{self.host}/{self.repository}:{tag}"


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (with or without a port)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def parse_target(text: str, *, where: str = "REGISTRY") -> Target:
    """`[https://]host[:port]/project[/repo...]`; a single path component gets `/pytorch-cuda-images`.

    `http://` is accepted only for a loopback host. ConfigError (exit 2) names what is wrong.
    """
    value = text.strip()
    usage = f"{where}={value!r}: expected host[:port]/project, e.g. harbor.example.com/ml"
    if looks_secret(value) or "@" in value:
        raise ConfigError(
            f"{where}: credentials never go into the registry target "
            "(use REGISTRY_USERNAME/REGISTRY_PASSWORD or `docker login`)"
        )
    insecure = False
    scheme, sep, rest = value.partition("://")
    if sep:
        if scheme not in ("http", "https"):
            raise ConfigError(f"{usage} (unknown scheme {scheme!r})")
        insecure = scheme == "http"
        value = rest
    host, _, path = value.strip("/").partition("/")
    if not host or not path:
        raise ConfigError(usage)
    if not _HOST.match(host) or not ("." in host or ":" in host or host == "localhost"):
        raise ConfigError(f"{usage} ({host!r} is not a registry host; Docker Hub is not a push target here)")
    if insecure and not is_loopback(host):
        raise ConfigError(
            f"{where}: plain HTTP is allowed only for a loopback registry, not {host} (use TLS)"
        )
    components = path.split("/")
    bad = [c for c in components if not _COMPONENT.match(c)]
    if bad:
        raise ConfigError(f"{usage} (bad path component {bad[0]!r}: lowercase letters, digits, . _ -)")
    repository = path if len(components) > 1 else f"{path}/{IMAGE_NAME}"
    return Target(host=host, repository=repository, insecure=insecure)


def resolve_target(configured: str, override: str | None) -> Target:
    """`--registry`/`REGISTRY` when given, else matrix.yaml's `registry.target`."""
    if override:
        return parse_target(override, where="REGISTRY")
    return parse_target(configured, where="matrix.yaml: registry.target")


# --- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """Credentials for one registry host. `repr` never shows the secret."""

    host: str
    username: str
    password: str = field(repr=False)
    source: str = ""  # where they came from, for messages ("REGISTRY_USERNAME/REGISTRY_PASSWORD", a file)
    identity_token: str = field(default="", repr=False)

    def auth_config(self) -> dict[str, str]:
        """The docker-py `auth_config` dict."""
        if self.identity_token:
            return {"identitytoken": self.identity_token, "serveraddress": self.host}
        return {"username": self.username, "password": self.password, "serveraddress": self.host}

    def secrets(self) -> list[str]:
        """Every form in which the secret could show up in text."""
        values = [self.password, self.identity_token]
        if self.username and self.password:
            values.append(base64.b64encode(f"{self.username}:{self.password}".encode()).decode())
        return [value for value in values if value]

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    env = os.environ if env is None else env
    folder = env.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def _normalise_host(key: str) -> str:
    """A config.json `auths` key (`https://host/v1/`, `host`, ...) as a bare `host[:port]`."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host


def lookup_credentials(
    host: str, *, env: Mapping[str, str] | None = None, config_path: Path | None = None, use_env: bool = True
) -> Credentials | None:
    """Credentials for `host`: the environment first, then the Docker config file; None: none found."""
    env = os.environ if env is None else env
    if use_env:
        user, password = env.get("REGISTRY_USERNAME", ""), env.get("REGISTRY_PASSWORD", "")
        if user and password:
            return Credentials(host, user, password, source="REGISTRY_USERNAME/REGISTRY_PASSWORD")
        if user or password:
            missing = "REGISTRY_PASSWORD" if user else "REGISTRY_USERNAME"
            raise ConfigError(f"{missing} is not set (REGISTRY_USERNAME and REGISTRY_PASSWORD go together)")
    path = config_path or docker_config_path(env)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable Docker config file ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a Docker config file (expected a JSON object)")
    wanted = _normalise_host(host)
    source = str(path)
    for key, entry in (config.get("auths") or {}).items():
        if _normalise_host(key) != wanted or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(host, "", "", source=source, identity_token=str(entry["identitytoken"]))
        if entry.get("auth"):
            try:
                user, _, password = (
                    base64.b64decode(str(entry["auth"]), validate=True).decode().partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                raise ConfigError(f"{path}: auths.{key}.auth is not base64 of user:password") from None
            if user and password:
                return Credentials(host, user, password, source=source)
        if entry.get("username") and entry.get("password"):
            return Credentials(host, str(entry["username"]), str(entry["password"]), source=source)
    helper = (config.get("credHelpers") or {}).get(wanted) or config.get("credsStore")
    return _from_helper(str(helper), host, source) if helper else None


def _from_helper(helper: str, host: str, source: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get` (Docker's credential-helper protocol)."""
    try:
        out = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=host,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    try:
        data = json.loads(out.stdout)
    except ValueError:
        return None
    user, secret = str(data.get("Username", "")), str(data.get("Secret", ""))
    where = f"{source} (credential helper {helper})"
    if user == "<token>":
        return Credentials(host, "", "", source=where, identity_token=secret)
    return Credentials(host, user, secret, source=where) if user and secret else None


def _auth(creds: Credentials | None) -> dict[str, str] | None:
    return creds.auth_config() if creds is not None else None


def _secrets(creds: Credentials | None) -> list[str]:
    return creds.secrets() if creds is not None else []


# --- retries ------------------------------------------------------------------------------------

_TRANSIENT = re.compile(
    r"connection refused|connection reset|broken pipe|\bEOF\b|i/o timeout|timeout exceeded|timed out|"
    r"no route to host|network is unreachable|TLS handshake timeout|server misbehaving|"
    r"(?:HTTP status|status code|status:)\s*5\d\d|\b5\d\d (?:Internal Server Error|Bad Gateway|"
    r"Service Unavailable|Gateway Time-?out)|\b(?:500|502|503|504)\b.*Server Error|"
    r"unexpected end of JSON|engine stopped answering",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"unauthorized|authentication required|denied|no basic auth credentials|\b401\b|\b403\b", re.IGNORECASE
)


def is_transient(message: str) -> bool:
    """A connection error or a 5xx answer (worth retrying); never an auth, TLS or not-found error."""
    return bool(_TRANSIENT.search(message)) and not _AUTH.search(message)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff (tenacity) on connection errors and 5xx: `attempts` tries within `max_seconds`."""

    attempts: int = 6
    max_seconds: float = 300.0
    first_wait: float = 0.5
    max_wait: float = 30.0

    @classmethod
    def from_env(
        cls,
        attempts: int | None = None,
        max_seconds: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RetryPolicy:
        """Options win over `PUSH_RETRIES` / `PUSH_RETRY_MAX_S`, which win over the defaults."""
        env = os.environ if env is None else env
        try:
            tries = attempts if attempts is not None else int(env.get("PUSH_RETRIES", cls.attempts))
            window = (
                max_seconds
                if max_seconds is not None
                else float(env.get("PUSH_RETRY_MAX_S", cls.max_seconds))
            )
        except ValueError:
            raise ConfigError(
                "PUSH_RETRIES must be an integer and PUSH_RETRY_MAX_S a number of seconds"
            ) from None
        if tries < 1 or window < 0:
            raise ConfigError("--retries must be at least 1 and --retry-max-s not negative")
        return cls(attempts=tries, max_seconds=window)


def with_retries(policy: RetryPolicy, what: str, action: Callable[[], T], say: Say) -> T:
    """Run `action`, retrying transient RegistryErrors; after the last try one clear RegistryError."""
    started = time.monotonic()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        say(
            f"{what}: {error} - retrying in {wait:.1f} s "
            f"(attempt {state.attempt_number + 1}/{policy.attempts})"
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_after_delay(policy.max_seconds),
        wait=tenacity.wait_exponential(multiplier=policy.first_wait, max=policy.max_wait),
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, RegistryError) and is_transient(str(exc))
        ),
        before_sleep=before_sleep,
        reraise=False,
    )
    try:
        return retrying(action)
    except tenacity.RetryError as exc:
        last = exc.last_attempt
        error = last.exception()
        raise RegistryError(
            f"{what}: gave up after {last.attempt_number} attempts in {time.monotonic() - started:.1f} s "
            f"(retry window {policy.max_seconds:g} s): {error}"
        ) from None


# --- plain HTTP to the registry (manifests, config labels, manifest copy) -------------------------


class RegistryHttp:
    """A minimal Docker Registry HTTP API v2 client: Basic or Bearer (Harbor) auth, the engine's CA."""

    def __init__(
        self, target_host: str, creds: Credentials | None, *, insecure: bool = False, timeout: float = 30.0
    ) -> None:
        self.host = target_host
        self.creds = creds
        self.timeout = timeout
        self._scheme: str | None = "http" if insecure else None
        self._tokens: dict[str, str] = {}
        handlers: list[urllib.request.BaseHandler] = [
            urllib.request.HTTPSHandler(context=ssl_context(target_host))
        ]
        if is_loopback(target_host):
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    # scheme: HTTPS, except that a loopback registry may answer plain HTTP (as dockerd allows)
    def _base(self) -> str:
        if self._scheme is None:
            self._scheme = "https"
            if is_loopback(self.host):
                try:
                    self._opener.open(f"https://{self.host}/v2/", timeout=self.timeout).close()
                except urllib.error.HTTPError:
                    pass
                except (urllib.error.URLError, OSError) as exc:
                    if isinstance(getattr(exc, "reason", exc), ssl.SSLError | ConnectionResetError):
                        self._scheme = "http"
        return f"{self._scheme}://{self.host}"

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body); 404 is returned, other failures raise RegistryError."""
        url = self._base() + path
        for _ in range(2):
            request = urllib.request.Request(url, method=method, data=data, headers=dict(headers or {}))
            auth = self._authorization(scope)
            if auth:
                request.add_header("Authorization", auth)
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    return (
                        response.status,
                        {k.lower(): v for k, v in response.headers.items()},
                        response.read(),
                    )
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and self._challenge(exc.headers.get("WWW-Authenticate", ""), scope):
                    continue
                if exc.code == 404:
                    return 404, {}, b""
                raise RegistryError(self._redact(f"{method} {url}: HTTP {exc.code} {exc.reason}")) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise RegistryError(self._redact(f"{method} {url}: {reason}")) from None
        raise RegistryError(f"{method} {url}: unauthorized (check the registry credentials)")

    def _authorization(self, scope: str) -> str:
        if scope in self._tokens:
            return f"Bearer {self._tokens[scope]}"
        if "basic" in self._tokens and self.creds is not None and self.creds.password:
            return self.creds.basic_header()
        return ""

    def _challenge(self, header: str, scope: str) -> bool:
        """Answer a 401 challenge; False when nothing new can be tried."""
        kind, _, params = header.partition(" ")
        if kind.lower() == "basic":
            if "basic" in self._tokens or self.creds is None or not self.creds.password:
                return False
            self._tokens["basic"] = "yes"
            return True
        if kind.lower() != "bearer" or scope in self._tokens:
            return False
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        query = {"service": fields.get("service", "")}
        if scope:
            query["scope"] = scope
        url = fields.get("realm", "") + "?" + urllib.parse.urlencode(query)
        request = urllib.request.Request(url)
        if self.creds is not None and self.creds.password:
            request.add_header("Authorization", self.creds.basic_header())
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RegistryError(self._redact(f"token service {fields.get('realm')}: {exc}")) from None
        token = answer.get("token") or answer.get("access_token")
        if not token:
            return False
        self._tokens[scope] = str(token)
        return True

    def _redact(self, text: str) -> str:
        return redact(text, [*_secrets(self.creds), *self._tokens.values()])

    def manifest(self, repository: str, reference: str) -> tuple[str, str, bytes] | None:
        """(digest, media type, raw body) of a manifest, or None when absent."""
        status, headers, body = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
        )
        if status == 404:
            return None
        digest = headers.get("docker-content-digest") or "sha256:" + hashlib.sha256(body).hexdigest()
        return digest, headers.get("content-type", MANIFEST_TYPES[0]), body

    def config_labels(self, repository: str, reference: str) -> dict[str, str] | None:
        """The image config's labels for a tag (one-platform manifests only), or None."""
        found = self.manifest(repository, reference)
        if found is None:
            return None
        manifest = json.loads(found[2])
        config = manifest.get("config", {}).get("digest")
        if not config:
            return None
        status, _, body = self.request(
            "GET", f"/v2/{repository}/blobs/{config}", scope=f"repository:{repository}:pull"
        )
        if status == 404:
            return None
        labels: dict[str, str] = (json.loads(body).get("config") or {}).get("Labels") or {}
        return labels

    def put_manifest(self, repository: str, tag: str, media_type: str, body: bytes) -> str:
        """Store a manifest under a tag (a registry-side retag); returns the digest the registry reports."""
        _, headers, _ = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{tag}",
            scope=f"repository:{repository}:pull,push",
            headers={"Content-Type": media_type},
            data=body,
        )
        return headers.get("docker-content-digest", "")


def ssl_context(host: str, env: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """The system CAs plus the CA dockerd trusts for this registry (`/etc/docker/certs.d/<host>/ca.crt`)
    and `REGISTRY_CA_BUNDLE` when set."""
    env = os.environ if env is None else env
    context = ssl.create_default_context()
    for extra in (
        CERTS_D / host / "ca.crt",
        Path(env["REGISTRY_CA_BUNDLE"]) if env.get("REGISTRY_CA_BUNDLE") else None,
    ):
        if extra is not None and extra.is_file():
            context.load_verify_locations(cafile=str(extra))
    return context


# --- push ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushPlan:
    """The local image and the remote tags of one cell, in push order: immutable, then floating."""

    local: str
    immutable: str
    floating: tuple[str, ...]

    @property
    def repository(self) -> str:
        return self.immutable.rpartition(":")[0]


def plan_push(cell: Cell, target: Target, *, local: str | None = None) -> PushPlan:
    """Push `local` (default: the cell's local immutable tag) as the cell's immutable and floating tags."""
    immutable = cell_immutable_tag(cell)
    return PushPlan(
        local=local or f"{IMAGE_NAME}:{immutable}",
        immutable=target.reference(immutable),
        floating=tuple(target.reference(tag) for tag in floating_tags(cell) if tag != immutable),
    )


@dataclass
class PushResult:
    plan: PushPlan
    digest: str
    skipped: str = ""  # why nothing was pushed ("" when pushed)
    floating: list[tuple[str, str]] = field(default_factory=list)  # (reference, "moved"/"unchanged")
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """What happened, for stdout."""
        if self.skipped:
            out = [f"unchanged {self.plan.immutable}@{self.digest}: {self.skipped}"]
        else:
            out = [f"pushed {self.plan.immutable}@{self.digest} (digest verified)"]
        for reference, action in self.floating:
            out.append(
                f"{action} {reference} -> {self.digest}"
                if action == "moved"
                else f"unchanged {reference} (already {self.digest})"
            )
        out.append(f"done in {self.seconds:.2f} s")
        return out


class LayerProgress:
    """Per-layer push progress: live bars on a terminal, one line per finished layer otherwise."""

    DONE = ("Pushed", "Layer already exists", "Mounted from")

    def __init__(self, output: Output, reference: str) -> None:
        self.output = output
        self.reference = reference
        self._seen: dict[str, str] = {}
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    @contextlib.contextmanager
    def live(self) -> Iterator[LayerProgress]:
        if self.output.live:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                console=self.output.console,
                transient=True,
            ) as progress:
                self._progress = progress
                yield self
            self._progress = None
        else:
            yield self

    def __call__(self, layer: str, status: str, current: int, total: int) -> None:
        if self._progress is not None:
            if layer not in self._tasks:
                self._tasks[layer] = self._progress.add_task(layer, total=total or None)
            self._progress.update(
                self._tasks[layer], description=f"{layer} {status}", completed=current, total=total or None
            )
        state = "Retrying" if status.startswith("Retrying") else status  # one line per countdown
        if status.startswith((*self.DONE, "Retrying")) and self._seen.get(layer) != state:
            self._seen[layer] = state
            self.output.info(f"  layer {layer}: {status}")


def _split(reference: str) -> tuple[str, str, str]:
    """`host/repo:tag` -> (host, repo, tag)."""
    name, _, tag = reference.rpartition(":")
    host, _, repository = name.partition("/")
    return host, repository, tag


def remote_content_hash(http: RegistryHttp, reference: str) -> str | None:
    _, repository, tag = _split(reference)
    labels = http.config_labels(repository, tag) or {}
    return labels.get(CONTENT_HASH_LABEL)


def push_cell(
    engine: Engine,
    plan: PushPlan,
    target: Target,
    creds: Credentials | None,
    *,
    policy: RetryPolicy,
    output: Output,
    force: bool = False,
) -> PushResult:
    """Push a cell's image: skip when the registry has its content, else push and verify the immutable tag,
    then move the floating tags. A failure before the immutable tag is verified leaves floating tags alone."""
    try:
        return _push_cell(engine, plan, target, creds, policy=policy, output=output, force=force)
    except RegistryError as exc:
        if _AUTH.search(str(exc)):
            where = (
                f"credentials from {creds.source}"
                if creds is not None
                else ("no credentials found: set REGISTRY_USERNAME/REGISTRY_PASSWORD or run `docker login`")
            )
            raise RegistryError(f"{exc} ({where})") from None
        raise


def _push_cell(
    engine: Engine,
    plan: PushPlan,
    target: Target,
    creds: Credentials | None,
    *,
    policy: RetryPolicy,
    output: Output,
    force: bool,
) -> PushResult:
    started = time.perf_counter()
    auth = _auth(creds)
    say = output.info
    if not engine.image_exists(plan.local):
        raise RegistryError(f"no local image {plan.local}: build it first (`python -m builder build ...`)")
    attrs = engine.image_attrs(plan.local)
    local_hash = ((attrs.get("Config") or {}).get("Labels") or {}).get(CONTENT_HASH_LABEL, "")
    http = RegistryHttp(target.host, creds, insecure=target.insecure)

    def check() -> tuple[str | None, str]:
        remote = engine.registry_digest(plan.immutable, auth=auth)
        if remote is None or force:
            return remote, ""
        if f"{plan.repository}@{remote}" in (attrs.get("RepoDigests") or []):
            return remote, "the registry already holds this image (same digest)"
        if local_hash and remote_content_hash(http, plan.immutable) == local_hash:
            return remote, f"the registry already holds the same content (content hash {local_hash[:12]})"
        return remote, ""

    remote, skipped = with_retries(policy, f"checking {plan.immutable}", check, say)
    if skipped:
        digest = remote or ""
        say(f"{plan.immutable}: {skipped}; nothing to push")
    else:
        digest = _push_verified(engine, plan.local, plan.immutable, auth, policy, output)
    result = PushResult(plan=plan, digest=digest, skipped=skipped)
    for floating in plan.floating:
        current = with_retries(
            policy,
            f"checking {floating}",
            functools.partial(engine.registry_digest, floating, auth=auth),
            say,
        )
        if current == digest:
            result.floating.append((floating, "unchanged"))
            continue
        if skipped and f"{plan.repository}@{digest}" not in (attrs.get("RepoDigests") or []):
            _copy_manifest(http, plan.immutable, floating, digest, policy, say)
        else:
            moved = _push_verified(engine, plan.local, floating, auth, policy, output)
            if moved != digest:
                raise RegistryError(f"{floating} got {moved}, not the immutable tag's {digest}")
        if engine.registry_digest(floating, auth=auth) != digest:
            raise RegistryError(f"{floating} does not point at {digest} after moving it")
        result.floating.append((floating, "moved"))
    result.seconds = time.perf_counter() - started
    return result


def _push_verified(
    engine: Engine,
    local: str,
    reference: str,
    auth: dict[str, str] | None,
    policy: RetryPolicy,
    output: Output,
) -> str:
    """Tag, push (with retries and per-layer progress) and check the registry's digest for `reference`."""
    say = output.info
    engine.tag(local, reference)
    say(f"pushing {reference}")
    progress = LayerProgress(output, reference)

    def attempt() -> str:
        with progress.live():
            return engine.push(reference, auth=auth, on_layer=progress)

    digest = with_retries(policy, f"push of {reference}", attempt, say)
    remote = with_retries(
        policy, f"verifying {reference}", lambda: engine.registry_digest(reference, auth=auth), say
    )
    repository = reference.rpartition(":")[0]
    local_digests = engine.repo_digests(local)
    if remote != digest or f"{repository}@{digest}" not in local_digests:
        raise RegistryError(
            f"digest mismatch for {reference}: the registry has {remote or 'nothing'}, the push reported "
            f"{digest}, the local image knows {', '.join(local_digests) or 'no repo digest'}"
        )
    return digest


def _copy_manifest(
    http: RegistryHttp, source: str, destination: str, digest: str, policy: RetryPolicy, say: Say
) -> None:
    """Point `destination` at the manifest `source` holds, without pushing (registry-side retag)."""
    _, repository, _ = _split(source)
    _, _, tag = _split(destination)

    def copy() -> None:
        found = http.manifest(repository, digest)
        if found is None:
            raise RegistryError(f"{source}: manifest {digest} vanished from the registry")
        http.put_manifest(repository, tag, found[1], found[2])

    say(f"moving {destination} to {digest} (registry-side, nothing to upload)")
    with_retries(policy, f"moving {destination}", copy, say)


@dataclass(frozen=True)
class Publisher:
    """Where pushes go and how: the target registry, its credentials and the retry policy."""

    target: Target
    creds: Credentials | None
    policy: RetryPolicy

    @classmethod
    def resolve(
        cls,
        configured: str,
        override: str | None,
        *,
        retries: int | None = None,
        retry_max_s: float | None = None,
    ) -> Publisher:
        """From matrix.yaml's `registry.target` (or `--registry`), credentials from the environment."""
        target = resolve_target(configured, override)
        return cls(target, lookup_credentials(target.host), RetryPolicy.from_env(retries, retry_max_s))

    def push(
        self, engine: Engine, cell: Cell, output: Output, *, image: str | None = None, force: bool = False
    ) -> PushResult:
        """Push one built cell (`image`: another local image instead of its local immutable tag)."""
        plan = plan_push(cell, self.target, local=image)
        return push_cell(
            engine, plan, self.target, self.creds, policy=self.policy, output=output, force=force
        )

    def http(self) -> RegistryHttp:
        return RegistryHttp(self.target.host, self.creds, insecure=self.target.insecure)


def push_cells(
    publisher: Publisher,
    cells: list[Cell],
    output: Output,
    *,
    image: str | None = None,
    force: bool = False,
    create_project: bool = False,
) -> list[tuple[Cell, PushResult]]:
    """`push`: optionally create the Harbor project, then push each cell; stops at the first failure."""
    from builder.build.engine import Engine

    if image and len(cells) != 1:
        raise ConfigError(f"--image {image} needs exactly one TAG ({len(cells)} selected)")
    if create_project:
        created = ensure_harbor_project(publisher.target, publisher.creds)
        target = publisher.target
        output.result(
            f"Harbor project {target.project!r} on {target.host}: {'created' if created else 'exists'}"
        )
    engine = Engine.connect()
    return [(cell, publisher.push(engine, cell, output, image=image, force=force)) for cell in cells]


# --- base images replicated into the team registry -----------------------------------------------


@dataclass
class MirroredBase:
    base: str  # `library/debian:12`
    source: str
    digest: str
    mirror: str
    mirror_digest: str
    copied: bool


def mirror_bases(
    engine: Engine,
    bases: Mapping[str, str],
    to: str,
    *,
    policy: RetryPolicy,
    output: Output,
    recorded: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[MirroredBase]:
    """Copy each base (`library/debian:12` -> its source reference) by digest to `<to>/<same path>`.

    Skips a base the target already holds with the source's digest (or with the digest `recorded` for
    its mirror reference, as in matrix.lock); the caller records the results in the lock data.
    """
    say = output.info
    prefix = to.strip().rstrip("/")
    if prefix.startswith(("http://", "https://")) or looks_secret(prefix) or "@" in prefix:
        raise ConfigError(f"--to {to!r}: expected host[:port][/prefix] without scheme or credentials")
    host = prefix.split("/", 1)[0]
    if not _HOST.match(host) or not ("." in host or ":" in host or host == "localhost"):
        raise ConfigError(f"--to {to!r}: {host!r} is not a registry host")
    target_auth = _auth(lookup_credentials(host, env=env))
    done: list[MirroredBase] = []
    for base, source in sorted(bases.items()):
        source_auth = _auth(lookup_credentials(source.split("/", 1)[0], env=env, use_env=False))
        digest = with_retries(
            policy,
            f"checking {source}",
            functools.partial(engine.registry_digest, source, auth=source_auth),
            say,
        )
        if digest is None:
            raise RegistryError(f"base image {source} is not in the source registry")
        mirror = f"{prefix}/{base}"
        present = with_retries(
            policy,
            f"checking {mirror}",
            functools.partial(engine.registry_digest, mirror, auth=target_auth),
            say,
        )
        if present is not None and present in (digest, (recorded or {}).get(mirror)):
            say(f"{mirror}: already holds {present}; skipped")
            done.append(MirroredBase(base, source, digest, mirror, present, copied=False))
            continue
        repository = source.rpartition(":")[0] if ":" in source.rsplit("/", 1)[-1] else source
        say(f"copying {source}@{digest} -> {mirror}")
        image_id = with_retries(
            policy,
            f"pull of {repository}@{digest}",
            functools.partial(engine.pull_by_digest, repository, digest, auth=source_auth),
            say,
        )
        engine.tag(image_id, mirror)
        mirror_digest = _push_verified(engine, mirror, mirror, target_auth, policy, output)
        if mirror_digest != digest:
            say(
                f"note: {mirror} has digest {mirror_digest}, the source {digest} "
                "(the engine re-compressed its layers); the mirror's digest is recorded"
            )
        done.append(MirroredBase(base, source, digest, mirror, mirror_digest, copied=True))
    return done


def select_bases(
    cells: list[Cell], source_for: Callable[[Cell], str], only: list[str] | None = None
) -> dict[str, str]:
    """{base path: source reference} for the cells (optionally filtered by tag globs)."""
    chosen = [c for c in cells if not only or any(fnmatch.fnmatchcase(c.tag, g) for g in only)]
    return {cell.base_image: source_for(cell) for cell in chosen}


@dataclass(frozen=True)
class MirroredSet:
    """What `mirror-bases` did: every base copied or found, where, and the lock it recorded them in."""

    done: list[MirroredBase]
    destination: str
    lock_file: Path
    recorded_profile: str | None


def mirror_matrix_bases(
    matrix: Matrix,
    cells: list[Cell],
    *,
    source: ResolvedProfile,
    to: str | None,
    registry: str | None,
    record_profile: str | None,
    policy: RetryPolicy,
    output: Output,
) -> MirroredSet:
    """`mirror-bases`: copy the cells' bases from the `source` profile's registry to `to` (default: the
    target registry's host); with `record_profile`, record the copies' digests in matrix.lock."""
    from builder.build import lock
    from builder.build.engine import Engine

    if record_profile is not None and record_profile not in matrix.spec.mirrors.profiles:
        raise ConfigError(
            f"--profile {record_profile!r}: unknown mirror profile; "
            f"allowed: {', '.join(matrix.spec.mirrors.profiles)}"
        )
    destination = to or resolve_target(matrix.spec.registry.target, registry).host
    path = lock.lock_path(matrix.path)
    recorded = lock.read(path)["bases"].get(record_profile or "", {}) or {}
    done = mirror_bases(
        Engine.connect(),
        select_bases(cells, source.base_image),
        destination,
        policy=policy,
        output=output,
        recorded=recorded,
    )
    if record_profile is not None:
        digests = {item.mirror: item.mirror_digest for item in done}
        refs = {ref: ref for ref in [*recorded, *digests]}
        text, _ = lock.updated_text(path, list(matrix.cells), record_profile, refs, digests.get)
        path.write_text(text, encoding="utf-8")
    return MirroredSet(done, destination, path, record_profile)


# --- Harbor (only for --create-project; not part of the generic push path) -----------------------


def ensure_harbor_project(
    target: Target, creds: Credentials | None, *, public: bool = False, timeout: float = 30.0
) -> bool:
    """Create the target's project through Harbor's API v2.0 unless it exists; True when it was created.

    HEAD /api/v2.0/projects?project_name=P (200: exists, 404: missing), then POST /api/v2.0/projects.
    Needs an account allowed to create projects (a system robot account or an admin).
    """
    if creds is None or not creds.password:
        raise ConfigError(
            "--create-project needs REGISTRY_USERNAME/REGISTRY_PASSWORD (or a config.json "
            "entry with username and password) for Harbor's API"
        )
    scheme = "http" if target.insecure else "https"
    base = f"{scheme}://{target.host}/api/v2.0/projects"
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ssl_context(target.host)))
    headers = {"Authorization": creds.basic_header(), "Accept": "application/json"}

    def call(method: str, url: str, body: bytes | None = None) -> int:
        request = urllib.request.Request(
            url, method=method, data=body, headers={**headers, "Content-Type": "application/json"}
        )
        try:
            with opener.open(request, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, OSError) as exc:
            raise RegistryError(
                redact(f"Harbor API {url}: {getattr(exc, 'reason', exc)}", creds.secrets())
            ) from None

    query = urllib.parse.urlencode({"project_name": target.project})
    status = call("HEAD", f"{base}?{query}")
    if status == 200:
        return False
    if status != 404:
        raise RegistryError(f"Harbor API: checking project {target.project!r} answered HTTP {status}")
    body = json.dumps({"project_name": target.project, "metadata": {"public": str(public).lower()}}).encode()
    status = call("POST", base, body)
    if status == 201:
        return True
    if status == 409:
        return False
    hint = " (the account may not create projects)" if status in (401, 403) else ""
    raise RegistryError(f"Harbor API: creating project {target.project!r} answered HTTP {status}{hint}")
