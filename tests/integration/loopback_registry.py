"""A real Debian `docker-registry` on 127.0.0.1 for tests and benchmarks: optional TLS and htpasswd auth.

TLS uses a throw-away CA made with openssl (server cert for IP:127.0.0.1), installed where dockerd looks
for it (`/etc/docker/certs.d/127.0.0.1:PORT/ca.crt`, read per push, no restart). The `get`/`digest`/`tags`
helpers are an independent client (plain urllib), not the code under test.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CERTS_D = Path("/etc/docker/certs.d")
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def missing_tools(tls: bool, auth: bool) -> list[str]:
    needed = ["docker-registry", *(["openssl"] if tls else []), *(["htpasswd"] if auth else [])]
    return [tool for tool in needed if shutil.which(tool) is None]


class LoopbackRegistry:
    """`docker-registry serve` on 127.0.0.1:PORT with storage under `root`; start/stop/kill at will."""

    def __init__(self, root: Path, *, tls: bool = True, auth: bool = True, user: str = "ci-robot") -> None:
        self.root = root
        self.port = free_port()
        self.tls = tls
        self.user = user if auth else ""
        self.password = ("pw-" + secrets.token_hex(12)) if auth else ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "registry.log"
        self.storage = root / "storage"
        root.mkdir(parents=True, exist_ok=True)
        self.config = self._write_config()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def certs_dir(self) -> Path:
        return CERTS_D / self.host

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def _run(self, *cmd: str) -> None:
        subprocess.run(cmd, cwd=self.root, check=True, capture_output=True, timeout=60)

    def _write_config(self) -> Path:
        lines = [
            "version: 0.1",
            "log: {level: info}",
            f"storage: {{filesystem: {{rootdirectory: {self.storage}}}, delete: {{enabled: true}}}}",
            "http:",
            f"  addr: {self.host}",
        ]
        if self.tls:
            self._run(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=pytorch-cuda-images test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            )
            self._run(
                "openssl",
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            )
            (self.root / "ext.cnf").write_text(
                "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            )
            self._run(
                "openssl",
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.crt",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            )
            self.certs_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.root / "ca.crt", self.certs_dir / "ca.crt")
            lines.append(
                f"  tls: {{certificate: {self.root / 'server.crt'}, key: {self.root / 'server.key'}}}"
            )
        if self.user:
            out = subprocess.run(
                ["htpasswd", "-Bbn", self.user, self.password],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
            (self.root / "htpasswd").write_text(out)
            lines.append(f"auth: {{htpasswd: {{realm: test-registry, path: {self.root / 'htpasswd'}}}}}")
        config = self.root / "config.yml"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 30) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get("/v2/", auth=False)[0] in (200, 401):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(
            f"docker-registry on {self.host} did not start: {self.log_path.read_text()[-2000:]}"
        )

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) the registry process we started, by its pid."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def close(self) -> None:
        self.stop()
        if self.tls:
            shutil.rmtree(self.certs_dir, ignore_errors=True)

    # --- independent HTTP client ------------------------------------------------------------------
    def _context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.root / "ca.crt")) if self.tls else None

    def get(
        self, path: str, *, method: str = "GET", auth: bool = True, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            f"{self.scheme}://{self.host}{path}", method=method, headers=headers or {}
        )
        if auth and self.user:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._context())
        )
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers.items()), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers.items()), b""
        except (urllib.error.URLError, OSError):
            return 0, {}, b""

    def tags(self, repository: str) -> list[str] | None:
        status, _, body = self.get(f"/v2/{repository}/tags/list")
        return sorted(json.loads(body).get("tags") or []) if status == 200 else None

    def digest(self, repository: str, tag: str) -> str | None:
        status, headers, _ = self.get(
            f"/v2/{repository}/manifests/{tag}", method="HEAD", headers={"Accept": MANIFEST_V2}
        )
        return headers.get("Docker-Content-Digest") if status == 200 else None

    def skopeo_inspect(self, repository: str, tag: str, *, raw: bool = False) -> bytes:
        """`skopeo inspect [--raw]` of REPOSITORY:TAG here, as an independent client; b"" when it fails."""
        access = (
            ["--cert-dir", str(self.certs_dir), "--creds", f"{self.user}:{self.password}"]
            if self.tls
            else ["--tls-verify=false"]
        )
        proc = subprocess.run(
            [
                "skopeo",
                "inspect",
                *(["--raw"] if raw else []),
                *access,
                f"docker://{self.host}/{repository}:{tag}",
            ],
            capture_output=True,
            check=False,
            timeout=120,
        )
        return proc.stdout if proc.returncode == 0 else b""

    def uploads_started(self, repository: str) -> bool:
        """A blob upload is in progress or was made (the registry keeps `_uploads/<id>/` while uploading)."""
        uploads = self.storage / "docker/registry/v2/repositories" / repository / "_uploads"
        return uploads.is_dir() and any(os.scandir(uploads))


def untag_registry_references(engine, registry: LoopbackRegistry) -> None:  # type: ignore[no-untyped-def]
    """Remove the local `127.0.0.1:PORT/...` tags a push left (the layers stay as cache)."""
    for image in engine.client.images.list():
        for reference in [*image.tags, *(image.attrs.get("RepoDigests") or [])]:
            if reference.startswith(f"{registry.host}/"):
                engine.remove_image(reference, keep_parents=True)


@contextmanager
def serving_registry(  # type: ignore[no-untyped-def]
    root: Path, engine, *, tls: bool = False, auth: bool = False, also_needs: tuple[str, ...] = ()
) -> Iterator[LoopbackRegistry]:
    """A started registry under `root`; afterwards it is closed and the engine forgets the references to it.

    A missing tool (docker-registry, openssl, htpasswd, or one of `also_needs`) fails the test under CI=true.
    """
    missing = [*missing_tools(tls, auth), *(tool for tool in also_needs if shutil.which(tool) is None)]
    if missing:
        from tests.conftest import unavailable  # pytest's skip/fail: imported only where a test runs

        unavailable(f"missing {', '.join(missing)} (scripts/sandbox-deps.sh installs them)")
    registry = LoopbackRegistry(root, tls=tls, auth=auth)
    registry.start()
    try:
        yield registry
    finally:
        registry.close()
        untag_registry_references(engine, registry)
