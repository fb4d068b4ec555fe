"""Harbor's project API (v2.0), only for `push --create-project`; the push path itself is registry-generic."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from builder.errors import ConfigError, RegistryError
from builder.model.secrets import redact
from builder.publish.credentials import Credentials
from builder.publish.http import ssl_context
from builder.publish.target import Target


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
