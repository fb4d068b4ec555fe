"""The wheel cache: a caching PyPI proxy (devpi-server) on 127.0.0.1 in front of a profile's package index.

A matrix run asks the upstream index for each wheel once: devpi-server streams a file to the first build
that wants it while storing it in the cache folder, and serves every later request from there. Builds use
host networking, so the proxy's loopback address is what they reach. In offline mode the proxy serves only
what the folder holds (its index pages list only cached files) and never contacts the upstream.

One folder can cache several upstreams (one devpi mirror index each). A server started on a folder records
itself in `server.json` there; later callers (the per-cell builds of a nightly run, another `build`) reuse
it, and only the caller that started it stops it. devpi-server is an optional dependency:
`pip install 'pytorch-cuda-images[wheel-cache]'`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from builder.errors import BuilderError, ConfigError, MirrorError
from builder.flock import held
from builder.model.profiles import ResolvedProfile

HOST = "127.0.0.1"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SERVER_DIR = "devpi"  # devpi-server's own folder inside the cache folder (it must start out empty)
SERVER_FILE = "server.json"
PORT_FILE = "port"
PASSWORD_FILE = ".root-password"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
PORT_WAIT_S = 10.0
INSTALL_HINT = "pip install 'pytorch-cuda-images[wheel-cache]' (devpi-server)"

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class WheelCacheServer:
    """A running devpi-server over `directory`."""

    directory: Path
    port: int
    pid: int
    offline: bool

    @property
    def root_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def index_url(self, upstream: str) -> str:
        """The simple index through which this server serves `upstream`."""
        return f"{self.root_url}/{index_name(upstream)}/+simple/"


def index_name(upstream: str) -> str:
    """The devpi index (`root/<host-path>`) that mirrors one upstream simple index."""
    parsed = urlparse(upstream)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"wheel cache: upstream {upstream!r} is not an http(s) package index URL")
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{parsed.hostname}{parsed.path}").strip("-")
    return f"root/{slug}"


def server_command(executable: Path, directory: Path, port: int, *, offline: bool) -> list[str]:
    """The devpi-server command line: loopback only, this folder, offline when asked."""
    command = [
        str(executable),
        "--serverdir",
        str(directory / SERVER_DIR),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    return [*command, "--offline-mode"] if offline else command


def upstream_env(ca_bundle: Path | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: it trusts `ca_bundle` (else the host bundle) for the upstream's TLS."""
    env = dict(os.environ if base is None else base)
    bundle = ca_bundle or (HOST_CA_BUNDLE if HOST_CA_BUNDLE.is_file() else None)
    if bundle is not None:
        env["SSL_CERT_FILE"] = env["REQUESTS_CA_BUNDLE"] = str(bundle)
    return env


def apply(profile: ResolvedProfile, server: WheelCacheServer) -> ResolvedProfile:
    """The profile with builds fetching its PyPI index through the cache; images keep the profile's index."""
    return replace(profile, build_pypi=server.index_url(profile.pypi))


def build_options(directory: Path | None, *, offline: bool) -> list[str]:
    """The `builder build` options that make a nightly's per-cell builds use the same cache."""
    if directory is None:
        return []
    return ["--wheel-cache", str(directory), *(["--wheel-cache-offline"] if offline else [])]


def stored_bytes(directory: Path) -> int:
    """Bytes of the files the cache holds (each fetched from its upstream once)."""
    files = Path(directory) / SERVER_DIR / "+files"
    if not files.is_dir():
        return 0
    return sum(path.stat().st_size for path in files.rglob("*") if path.is_file())


# --------------------------------------------------------------------------- the server process


def _executable(name: str) -> Path:
    """A devpi console script: next to this interpreter first (a venv), then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"--wheel-cache needs {name}, which is not installed: {INSTALL_HINT}")
    return Path(found)


def _port_for(directory: Path) -> int:
    """The port this folder's server used last time when it is free (a stable index URL keeps the build
    args, and so Docker's layer cache, the same from run to run), else any free one."""
    deadline = time.monotonic() + PORT_WAIT_S  # a server that just stopped may still hold it briefly
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError, ValueError),
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        ):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
            sock.bind((HOST, int((directory / PORT_FILE).read_text())))
            return int(sock.getsockname()[1])
        if not (directory / PORT_FILE).is_file():
            break
        time.sleep(0.5)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _request(
    url: str, *, method: str = "GET", body: Any = None, auth: str | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """(status, decoded JSON or None) of a loopback JSON request; status 0 when nothing answers."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if auth is not None:
        headers["X-Devpi-Auth"] = base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _NO_PROXY.open(request, timeout=timeout) as response:
            payload = response.read()
            return int(response.status), json.loads(payload) if payload else None
    except urllib.error.HTTPError as err:
        return int(err.code), None
    except (OSError, ValueError):
        return 0, None


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap our own exited child
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X") and b"devpi-server" in cmdline


def running(directory: Path) -> WheelCacheServer | None:
    """The server recorded in directory/server.json, when it still runs and answers."""
    try:
        raw = json.loads((Path(directory) / SERVER_FILE).read_text())
        port, pid, offline = int(raw["port"]), int(raw["pid"]), bool(raw["offline"])
        server = WheelCacheServer(directory=Path(directory), port=port, pid=pid, offline=offline)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(server.pid) or _request(f"{server.root_url}/+api")[0] != 200:
        return None
    return server


def init_command(devpi_init: str, server_dir: Path, password: str) -> list[str]:
    """devpi-init's command line. The password is joined to its option with `=`: a token_urlsafe
    password starts with `-` one time in 64, which argparse would take for an option."""
    return [devpi_init, "--serverdir", str(server_dir), "--no-root-pypi", f"--root-passwd={password}"]


def _initialise(directory: Path) -> str:
    """Create the devpi server folder once (no default root/pypi); returns the root password."""
    password_file = directory / PASSWORD_FILE
    if password_file.is_file():
        return password_file.read_text().strip()
    password = secrets.token_urlsafe(24)
    log = directory / "devpi-init.log"
    with log.open("ab") as out:
        proc = subprocess.run(
            init_command(str(_executable("devpi-init")), directory / SERVER_DIR, password),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=300,
        )
    if proc.returncode != 0:
        raise MirrorError(f"wheel cache: devpi-init failed in {directory} (log: {log})")
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return password


def _ensure_index(server: WheelCacheServer, password: str, upstream: str) -> None:
    """Create the mirror index for upstream unless the folder has it."""
    url = f"{server.root_url}/{index_name(upstream)}"
    if _request(f"{url}?no_projects=")[0] == 200:  # without the upstream's (huge) list of project names
        return
    body = {"type": "mirror", "mirror_url": upstream.rstrip("/") + "/", "volatile": False}
    status, _ = _request(url, method="PUT", body=body, auth=f"root:{password}")
    if status not in (200, 201, 409):  # 409: another caller created it meanwhile
        raise MirrorError(f"wheel cache: could not create the mirror index for {upstream} (HTTP {status})")


def start(
    directory: Path,
    upstreams: list[str],
    *,
    offline: bool = False,
    port: int | None = None,
    ca_bundle: Path | None = None,
) -> tuple[WheelCacheServer, bool]:
    """A server over directory serving every upstream: the running one if its mode matches, else a new one.

    Returns (server, started_here). A running server in the other mode is stopped and replaced.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with held(directory / ".lock"):
        server = running(directory)
        started = False
        if server is not None and server.offline != offline:
            stop(directory)
            server = None
        password = _initialise(directory)
        if server is None:
            server = _spawn(directory, port or _port_for(directory), offline=offline, ca_bundle=ca_bundle)
            started = True
        for upstream in dict.fromkeys(upstreams):
            _ensure_index(server, password, upstream)
        return server, started


def _spawn(directory: Path, port: int, *, offline: bool, ca_bundle: Path | None) -> WheelCacheServer:
    log = directory / "devpi-server.log"
    command = server_command(_executable("devpi-server"), directory, port, offline=offline)
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=upstream_env(ca_bundle),
        )
    server = WheelCacheServer(directory=directory, port=port, pid=proc.pid, offline=offline)
    deadline = time.monotonic() + START_TIMEOUT_S
    while _request(f"{server.root_url}/+api", timeout=3)[0] != 200:
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-2:])
            what = f"wheel cache: devpi-server did not start on {server.root_url}"
            raise MirrorError(f"{what}: {tail} (log: {log})")
        time.sleep(0.5)
    record = {**asdict(server), "directory": str(directory)}
    (directory / SERVER_FILE).write_text(json.dumps(record, indent=2) + "\n")
    (directory / PORT_FILE).write_text(f"{port}\n")
    return server


def stop(directory: Path) -> bool:
    """Stop the server recorded in directory (SIGTERM, then SIGKILL); True when one ran."""
    record = Path(directory) / SERVER_FILE
    try:
        pid = int(json.loads(record.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    stopped = False
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid):  # until its listening socket is closed, so the port is free again
                time.sleep(0.1)
        stopped = True
    record.unlink(missing_ok=True)
    return stopped


@contextlib.contextmanager
def serving(
    directory: Path | None, profile: ResolvedProfile, *, offline: bool = False
) -> Iterator[ResolvedProfile]:
    """The profile with builds fetching its PyPI index through the cache in directory (None: unchanged).

    Starts a server unless one runs on directory, and stops it afterwards only if it started it here.
    """
    if directory is None:
        yield profile
        return
    server, started = start(directory, [profile.pypi], offline=offline, ca_bundle=profile.ca_bundle)
    try:
        yield apply(profile, server)
    finally:
        if started:
            with contextlib.suppress(BuilderError, OSError):
                stop(directory)
