"""Registry credentials: `REGISTRY_USERNAME`/`REGISTRY_PASSWORD`, else what `docker login` stored.

The Docker config file is read here (so a broken file is one clear error, where docker-py would silently
read it as empty) and interpreted by docker-py's `docker.auth` through `builder.build.engine.stored_auth`:
`auths` entries, `identitytoken`, `credHelpers` and `credsStore` with the credential-helper protocol.
Credentials are passed per call, never printed or stored; `repr` never shows them.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.build.engine import stored_auth
from builder.errors import ConfigError
from builder.model.secrets import auth_secrets

ENV_SOURCE = "REGISTRY_USERNAME/REGISTRY_PASSWORD"


@dataclass(frozen=True)
class Credentials:
    """Credentials for one registry host. `repr` never shows the secret."""

    host: str
    username: str
    password: str = field(repr=False)
    source: str = ""  # where they came from, for messages (ENV_SOURCE, a config file)
    identity_token: str = field(default="", repr=False)

    def auth_config(self) -> dict[str, str]:
        """The docker-py `auth_config` dict."""
        if self.identity_token:
            return {"identitytoken": self.identity_token, "serveraddress": self.host}
        return {"username": self.username, "password": self.password, "serveraddress": self.host}

    def secrets(self) -> list[str]:
        """Every form in which the secret could show up in text."""
        return auth_secrets(self.auth_config())

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def auth_config(creds: Credentials | None) -> dict[str, str] | None:
    """docker-py's `auth_config` for optional credentials (None: the engine asks anonymously)."""
    return creds.auth_config() if creds is not None else None


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    env = os.environ if env is None else env
    folder = env.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def lookup_credentials(
    host: str, *, env: Mapping[str, str] | None = None, config_path: Path | None = None, use_env: bool = True
) -> Credentials | None:
    """Credentials for `host`: the environment first, then the Docker config file; None: none found."""
    env = os.environ if env is None else env
    if use_env:
        user, password = env.get("REGISTRY_USERNAME", ""), env.get("REGISTRY_PASSWORD", "")
        if user and password:
            return Credentials(host, user, password, source=ENV_SOURCE)
        if user or password:
            missing = "REGISTRY_PASSWORD" if user else "REGISTRY_USERNAME"
            raise ConfigError(f"{missing} is not set (REGISTRY_USERNAME and REGISTRY_PASSWORD go together)")
    path = config_path or docker_config_path(env)
    found = stored_auth(_read_config(path), host, where=str(path))
    if found is None:
        return None
    if "identitytoken" in found:
        return Credentials(host, "", "", source=str(path), identity_token=found["identitytoken"])
    return Credentials(host, found["username"], found["password"], source=str(path))


def _read_config(path: Path) -> dict[str, Any]:
    """The config file as a dict ({} when absent). An `auths` entry with `username`/`password` (which the
    Docker CLI reads and docker-py skips) is given the `auth` form docker-py reads."""
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable Docker config file ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a Docker config file (expected a JSON object)")
    for entry in (config.get("auths") or {}).values():
        plain = isinstance(entry, dict) and entry.get("username") and entry.get("password")
        if plain and not entry.get("auth"):
            entry["auth"] = base64.b64encode(f"{entry['username']}:{entry['password']}".encode()).decode()
    return config
