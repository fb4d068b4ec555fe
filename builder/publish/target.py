"""Where images go: `host[:port]/project[/repo]` from `REGISTRY` or matrix.yaml's `registry.target`."""

from __future__ import annotations

from dataclasses import dataclass

from builder.errors import ConfigError
from builder.model.naming import LOCAL_REPOSITORY, is_loopback, is_path_component, is_registry_host
from builder.model.secrets import looks_secret


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
    if not is_registry_host(host):
        raise ConfigError(f"{usage} ({host!r} is not a registry host; Docker Hub is not a push target here)")
    if insecure and not is_loopback(host):
        raise ConfigError(
            f"{where}: plain HTTP is allowed only for a loopback registry, not {host} (use TLS)"
        )
    components = path.split("/")
    bad = [c for c in components if not is_path_component(c)]
    if bad:
        raise ConfigError(f"{usage} (bad path component {bad[0]!r}: lowercase letters, digits, . _ -)")
    repository = path if len(components) > 1 else f"{path}/{LOCAL_REPOSITORY}"
    return Target(host=host, repository=repository, insecure=insecure)


def resolve_target(configured: str, override: str | None) -> Target:
    """`--registry`/`REGISTRY` when given, else matrix.yaml's `registry.target`."""
    if override:
        return parse_target(override, where="REGISTRY")
    return parse_target(configured, where="matrix.yaml: registry.target")
