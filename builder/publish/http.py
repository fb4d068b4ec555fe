"""The registry's own HTTP API (Docker Registry HTTP API v2), for the calls the engine cannot make.

docker-py speaks only to the engine, and the engine API has no call that reads an image config from a
registry (the content-hash label of a remote image, without pulling it), stores a manifest under another
tag (a registry-side retag, without pushing) or pushes anything but an image (the SBOM artifact). Those go
here: GET manifest, GET config blob, PUT manifest, a small blob upload, with Basic or Bearer (Harbor) auth
and the CA the engine trusts for the registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from builder.errors import RegistryError
from builder.model.naming import CONTENT_HASH_LABEL, is_loopback, parse_reference
from builder.model.secrets import redact
from builder.publish.credentials import Credentials

CERTS_D = Path("/etc/docker/certs.d")  # where dockerd looks for a registry's CA (`<host:port>/ca.crt`)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = ("application/vnd.docker.distribution.manifest.v2+json", OCI_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)


def sha256_digest(data: bytes) -> str:
    """The registry digest of a blob or manifest body: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


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
                why = f"HTTP {exc.code} {exc.reason}{registry_error(exc.read())}"
                raise RegistryError(self._redact(f"{method} {url}: {why}")) from None
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
        secrets = self.creds.secrets() if self.creds is not None else []
        return redact(text, [*secrets, *self._tokens.values()])

    def manifest(
        self, repository: str, reference: str, accept: tuple[str, ...] = MANIFEST_TYPES
    ) -> tuple[str, str, bytes] | None:
        """(digest, media type, raw body) of a manifest (`accept`: also image indexes), or None."""
        status, headers, body = self.request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull",
            headers={"Accept": ", ".join(accept)},
        )
        if status == 404:
            return None
        digest = headers.get("docker-content-digest") or sha256_digest(body)
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
        return self.put_manifest_headers(repository, tag, media_type, body).get("docker-content-digest", "")

    def put_manifest_headers(
        self, repository: str, reference: str, media_type: str, body: bytes
    ) -> dict[str, str]:
        """Store a manifest under a tag or its digest; the response headers (`OCI-Subject`: the registry
        keeps referrers itself)."""
        _, headers, _ = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull,push",
            headers={"Content-Type": media_type},
            data=body,
        )
        return headers

    def upload_blob(self, repository: str, data: bytes) -> str:
        """Upload a small blob in one request (monolithic POST then PUT), unless the registry has it; its
        digest."""
        digest = sha256_digest(data)
        scope = f"repository:{repository}:pull,push"
        status, _, _ = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=scope)
        if status == 200:
            return digest
        _, headers, _ = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, data=b"")
        location = headers.get("location", "")
        if not location:
            raise RegistryError(f"{self.host}/{repository}: the registry gave no upload location")
        parsed = urllib.parse.urlsplit(location)
        query = "&".join(filter(None, [parsed.query, urllib.parse.urlencode({"digest": digest})]))
        self.request(
            "PUT",
            f"{parsed.path}?{query}",
            scope=scope,
            headers={"Content-Type": "application/octet-stream"},
            data=data,
        )
        return digest


def registry_error(body: bytes) -> str:
    """`: CODE message` of a registry's JSON error body (the first error), or ""."""
    try:
        first = json.loads(body)["errors"][0]
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""


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


def remote_content_hash(http: RegistryHttp, reference: str) -> str | None:
    """The content-hash label of the image a `host/repo:tag` reference names; None: absent or unlabelled."""
    ref = parse_reference(reference)
    labels = http.config_labels(ref.repository, ref.tag) or {}
    return labels.get(CONTENT_HASH_LABEL)
