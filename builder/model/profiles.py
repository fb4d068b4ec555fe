"""Mirror profiles turned into build arguments for one cell.

A profile never changes the rendered Dockerfile: every mirror is a build `ARG` with the official value as
its default, so `images/<tag>/` stays profile-independent and `docker build images/<tag>` works as is.
"""

from __future__ import annotations

import os
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from builder.errors import ConfigError
from builder.model.cell import Cell
from builder.model.matrix import Matrix, Profile
from builder.model.naming import is_loopback, torch_index_url

OFFICIAL_APT = {
    "debian": "http://deb.debian.org/debian",
    "debian_security": "http://deb.debian.org/debian-security",
    "ubuntu": "http://archive.ubuntu.com/ubuntu",
    "ubuntu_security": "http://security.ubuntu.com/ubuntu",
}
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(:-[^}]*)?\}")  # ${NAME} or ${NAME:-default}


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile with its environment references filled in."""

    name: str
    registry: str
    pypi: str
    pytorch: str
    pytorch_layout: str
    apt: dict[str, str]
    conda: str
    trusted_host: bool
    ca_bundle: Path | None
    lock_bases: bool
    build_pypi: str = ""  # the index pip uses during builds when not `pypi` (a wheel cache); never baked

    def base_image(self, cell: Cell) -> str:
        """The base image reference with the registry prefix rewritten (mirror / proxy cache)."""
        return f"{self.registry.rstrip('/')}/{cell.base_image}"

    def build_args(self, cell: Cell) -> dict[str, str]:
        """The `--build-arg` values for one cell."""
        family = cell.os_family
        torch_url = torch_index_url(cell, self.pytorch)
        return {
            "BASE_REGISTRY": self.registry.rstrip("/"),
            "APT_MIRROR": self.apt[family],
            "APT_SECURITY_MIRROR": self.apt[f"{family}_security"],
            "PIP_INDEX_URL": self.pypi,
            "PIP_TRUSTED_HOST": (urlparse(self.pypi).hostname or "") if self.trusted_host else "",
            "PIP_BUILD_INDEX_URL": self.build_pypi,
            "CONDA_CHANNEL": self.conda,
            "TORCH_INDEX_URL": torch_url if self.pytorch_layout == "index" else "",
            "TORCH_FIND_LINKS": torch_url if self.pytorch_layout == "find-links" else "",
        }


def _expand(profile: str, key: str, value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match[1], match[2]
        if name not in os.environ and default is not None:
            return default[2:]
        if name not in os.environ:
            raise ConfigError(
                f"mirror profile {profile!r}: {key} needs ${{{name}}}, which is not set "
                "(for the local profile, run `make sandbox` and `source` its profile.env)"
            )
        return os.environ[name]

    return _ENV_REF.sub(replace, value)


def resolve(matrix: Matrix, name: str | None = None) -> ResolvedProfile:
    """The named profile (default: matrix.yaml's `mirrors.default`, or $MIRROR)."""
    chosen = name or os.environ.get("MIRROR") or matrix.spec.mirrors.default
    profiles = matrix.spec.mirrors.profiles
    if chosen not in profiles:
        raise ConfigError(
            f"{matrix.path}: mirrors.profiles: unknown profile {chosen!r}; allowed: {', '.join(profiles)}"
        )
    profile: Profile = profiles[chosen]
    apt: dict[str, str] = dict(OFFICIAL_APT)
    apt.update({key: _expand(chosen, f"apt.{key}", value) for key, value in profile.apt.items()})
    ca_text = _expand(chosen, "ca_bundle", profile.ca_bundle) if profile.ca_bundle else ""
    ca_bundle = Path(ca_text) if ca_text else None
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ConfigError(f"mirror profile {chosen!r}: ca_bundle {ca_bundle} is not a readable file")
    return ResolvedProfile(
        name=chosen,
        registry=_expand(chosen, "registry", profile.registry),
        pypi=_expand(chosen, "pypi", profile.pypi),
        pytorch=_expand(chosen, "pytorch", profile.pytorch),
        pytorch_layout=profile.pytorch_layout,
        apt=apt,
        conda=_expand(chosen, "conda", profile.conda),
        trusted_host=profile.trusted_host,
        ca_bundle=ca_bundle,
        lock_bases=profile.lock_bases,
    )


def unreachable(profile: ResolvedProfile, cell: Cell, *, timeout: float = 10.0) -> list[str]:
    """The profile's package indexes this cell needs that do not answer, each with the URL that failed.

    Builds use host networking, so what this host reaches is what the build reaches; TLS is checked
    against the host's CAs plus the profile's `ca_bundle`, as the image will check it.
    """
    args = profile.build_args(cell)
    # A wheel cache (PIP_BUILD_INDEX_URL) answered when it started; its root page lists every project
    # name of its upstream (PyPI: hundreds of thousands), so it is not probed here.
    urls = [args["PIP_INDEX_URL"] if not args["PIP_BUILD_INDEX_URL"] else ""]
    urls += [args["TORCH_INDEX_URL"], args["TORCH_FIND_LINKS"]]
    problems: list[str] = []
    tls = ssl.create_default_context()
    if profile.ca_bundle is not None:
        tls.load_verify_locations(cafile=str(profile.ca_bundle))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({})
        if is_loopback(urlparse(args["PIP_INDEX_URL"]).hostname or "")
        else urllib.request.ProxyHandler(),
        urllib.request.HTTPSHandler(context=tls),
    )
    for url in dict.fromkeys(u for u in urls if u):
        probe = url.rstrip("/") + "/"
        try:
            with opener.open(urllib.request.Request(probe, method="GET"), timeout=timeout) as response:
                response.read(1)
        except urllib.error.HTTPError as exc:
            if exc.code not in (401, 403):  # an index behind auth still answers
                problems.append(f"{probe} answered HTTP {exc.code}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            problems.append(f"{probe} is unreachable ({reason})")
    return [f"mirror profile {profile.name!r}: {problem}" for problem in problems]
