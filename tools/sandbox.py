"""Local loopback sandbox (dev and CI): Docker engine, base-image registry and PyPI mirror.

    python -m tools.sandbox up [--cuda] [--cuda12] [--os debian13] [--arch arm64] | down [--purge] | status

Nothing can be pulled from Docker Hub on dev machines and CI, so ``up()`` builds
the pieces a build needs and serves them on 127.0.0.1 only:

* ``dockerd`` (started in the background when no engine answers),
* a plain-HTTP ``docker-registry`` holding debootstrapped Debian base images (Debian 12 always;
  ``--os debian13`` adds Debian 13; ``--arch arm64`` registers Debian 13's QEMU (10.0, which runs torch)
  as the binfmt handler and makes each base for linux/arm64 too, under one image index per tag),
* ``pypiserver`` over a folder of wheels fetched once with ``pip download`` (``--os``/``--arch`` add
  the wheels of a test cell for that Python and CPU, resolved with ``uv pip compile``),
* with ``up(with_proxy=True)``, the wheel cache (``builder.build.wheel_cache``: devpi-server on
  127.0.0.1:3141 caching PyPI), so builds with ``--wheel-cache $SANDBOX_WHEEL_CACHE`` fetch any
  wheel on demand, once; ``proxy_offline=True`` serves only what it holds.

State (logs, pid files, caches, registry storage, wheels) lives in a state
directory outside the repository, so clean checkouts reuse it.  ``up()`` is
idempotent: a second call only checks that everything answers.

Pure stdlib + subprocess; this module never imports docker-py.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import lzma
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Annotated, Any, BinaryIO

import typer

from builder.build import wheel_cache
from builder.cli import run_cli
from builder.errors import BuilderError
from builder.flock import held
from builder.model import compat, platforms
from builder.publish import index
from builder.publish.http import RegistryHttp


class SandboxError(BuilderError):
    """The sandbox (engine, registry, PyPI mirror) could not be set up (exit 1)."""


DEFAULT_STATE_DIR = Path(os.environ.get("SANDBOX_DIR", "/var/tmp/pytorch-cuda-images-sandbox"))

HOST = "127.0.0.1"
DEFAULT_REGISTRY_PORT = 5000
DEFAULT_PYPI_PORT = 8080
DEFAULT_PROXY_PORT = 3141

BASE_REPOSITORY = "library/debian"
BASE_TAG = "12"
DEFAULT_OS = "debian12"
NATIVE_ARCH = "amd64"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Wheels every sandbox serves (CPU builds, the ``full`` variant's extras, build tools).
CPU_REQUIREMENTS: tuple[str, ...] = (
    "torch==2.13.0+cpu",
    # torchvision 0.28.0+cpu lives only on download.pytorch.org, which this network cannot reach: PyPI's
    # 0.28.0 (a CUDA build; with CPU torch its C++ ops do not load) lets the full variant build here.
    "torchvision==0.28.0",
    "numpy",
    "pip",
    "setuptools",
    "wheel",
    "jupyterlab",
    "ninja",
    "pandas",
    "matplotlib",
)

#: Extra wheels for ``up(with_cuda=True)``: torch for CUDA 13.0 (nvidia-* and triton come
#: with it) and NVIDIA's toolkit wheels, pinned through ``cuda-toolkit`` so parts agree.
CUDA_REQUIREMENTS: tuple[str, ...] = (
    "torch==2.14.1",
    "torchvision==0.29.1",
    "cuda-toolkit[nvcc,cudart,cccl,crt,nvvm]==13.0.3",
)

#: CUDA 12.8's component wheels (cuda-toolkit extras as compat.yaml records them), fetched with ``--cuda``:
#: small (45 MB), and what shows that PyPI's CUDA 12 nvcc wheel holds ptxas but no nvcc.
CUDA12_COMPONENT_REQUIREMENTS: tuple[str, ...] = (str(compat.load().cuda["12.8"].toolkit_requirement),)

#: Extra wheels for ``up(with_cuda12=True)``: torch 2.9.1, PyPI's CUDA 12.8 build, with its nvidia-*-cu12
#: wheels (about 4 GB), the CUDA 12.8 cells' wheels.
CUDA12_REQUIREMENTS: tuple[str, ...] = ("torch==2.9.1", "torchvision==0.24.1", *CUDA12_COMPONENT_REQUIREMENTS)

#: Where ``pip download`` looks. Local folders are used only where they exist.
PIP_INDEX_URL = "https://pypi.org/simple"
PIP_FIND_LINKS: tuple[str, ...] = ("/opt/wheels",)
PIP_EXTRA_INDEX_URLS: tuple[str, ...] = ("file:///opt/pypi/simple", "file:///opt/pypi-more/simple")
PIP_CERT = "/etc/ssl/certs/ca-certificates.crt"

#: Target interpreter of the wheels: Debian 12's python3 (glibc 2.36) on x86_64.
WHEEL_PYTHON = "3.11"
DEBIAN_GLIBC = {"12": 36, "13": 41}  # glibc 2.x of each Debian release (packages.debian.org/<suite>/libc6)


def wheel_platforms(machine: str = "x86_64", glibc: int = DEBIAN_GLIBC["12"]) -> tuple[str, ...]:
    """pip's `--platform` values for a glibc and CPU, newest first."""
    return (
        *(f"manylinux_2_{minor}_{machine}" for minor in range(glibc, 16, -1)),
        f"manylinux2014_{machine}",
        f"linux_{machine}",
    )


WHEEL_PLATFORMS = wheel_platforms()

#: The test cell every extra (OS, platform) of ``up --os/--arch`` gets wheels for: 2.14-cuda13.0-<os>.
#: PyPI's torch 2.14.1 is a CUDA 13.0 build for x86_64 and aarch64 alike (nvidia-*-cu13 for both).
PLATFORM_REQUIREMENTS: tuple[str, ...] = ("torch==2.14.1", "numpy", "pip", "setuptools", "wheel")

ENGINE_TIMEOUT_S = 60.0
SERVICE_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0

Log = Callable[[str], None]
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # injected into local builds: TLS is intercepted here


@dataclass(frozen=True)
class SandboxInfo:
    """Where the sandbox's services answer."""

    registry: str  # "127.0.0.1:5000" (plain HTTP registry, the base-image mirror)
    pypi_url: str  # "http://127.0.0.1:8080/simple" (pypiserver over the wheel folder)
    base_image: str  # "127.0.0.1:5000/library/debian:12" (debootstrapped Debian 12, pushed)
    state_dir: Path

    @property
    def wheel_cache(self) -> Path:
        """The wheel cache's folder (its server runs after ``up --proxy``; a build starts it otherwise)."""
        return self.state_dir / "wheel-cache"

    def profile_env(self) -> dict[str, str]:
        """The variables the ``local`` and ``local-pypi`` mirror profiles (and --wheel-cache) read."""
        return {
            "SANDBOX_REGISTRY": self.registry,
            "SANDBOX_PYPI_URL": self.pypi_url,
            "SANDBOX_BASE_IMAGE": self.base_image,
            "SANDBOX_CA_BUNDLE": HOST_CA_BUNDLE if Path(HOST_CA_BUNDLE).is_file() else "",
            "SANDBOX_WHEEL_CACHE": str(self.wheel_cache),
        }


# --------------------------------------------------------------------------- helpers


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SandboxError(f"{name}={raw!r} is not a port number") from None


def sandbox_info(state_dir: Path = DEFAULT_STATE_DIR) -> SandboxInfo:
    """The addresses the sandbox uses (ports from SANDBOX_REGISTRY_PORT / SANDBOX_PYPI_PORT)."""
    registry = f"{HOST}:{_port('SANDBOX_REGISTRY_PORT', DEFAULT_REGISTRY_PORT)}"
    pypi_port = _port("SANDBOX_PYPI_PORT", DEFAULT_PYPI_PORT)
    return SandboxInfo(
        registry=registry,
        pypi_url=f"http://{HOST}:{pypi_port}/simple",
        base_image=f"{registry}/{BASE_REPOSITORY}:{BASE_TAG}",
        state_dir=Path(state_dir),
    )


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str, timeout: float = 3.0) -> int | None:
    """HTTP status of GET url (loopback, no proxy), or None when nothing answers."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except (OSError, ValueError):
        return None


def _http_json(url: str, timeout: float = 5.0) -> Any:
    """GET url and decode JSON; None when it does not answer 200."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as resp:
            return json.loads(resp.read().decode())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int = 1) -> str:
    """Last non-empty lines of a log file, joined with ' | '."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def _logs(state_dir: Path) -> Path:
    path = state_dir / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _command_log(log_file: Path, cmd: Sequence[str]) -> Iterator[BinaryIO]:
    """The log a command appends to, headed by the command line; a missing program is one SandboxError."""
    with log_file.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            yield out
        except FileNotFoundError:
            raise SandboxError(f"{cmd[0]}: command not found") from None


def _run(
    cmd: Sequence[str],
    log_file: Path,
    *,
    env: Mapping[str, str] | None = None,
    stdin: IO[bytes] | None = None,
    timeout: float | None = None,
) -> None:
    """Run cmd, appending its output to log_file; raise SandboxError with one line on failure."""
    with _command_log(log_file, cmd) as out:
        try:
            proc = subprocess.run(
                list(cmd),
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SandboxError(f"{cmd[0]} timed out after {timeout:.0f} s (log: {log_file})") from None
    if proc.returncode != 0:
        raise SandboxError(
            f"{' '.join(cmd[:3])} failed (exit {proc.returncode}): {_tail(log_file)} (log: {log_file})"
        )


@contextlib.contextmanager
def _step(log: Log, name: str) -> Iterator[list[str]]:
    """Log how long a step took; the body may append a short note to the yielded list."""
    notes: list[str] = []
    start = time.monotonic()
    yield notes
    note = f" ({'; '.join(notes)})" if notes else ""
    log(f"sandbox: {name}: {time.monotonic() - start:.1f} s{note}")


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise up()/down() on one state directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with held(state_dir / ".lock"):
        yield


# --------------------------------------------------------------------------- processes

_CHILDREN: list[subprocess.Popen[bytes]] = []  # keeps started servers referenced


def _pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.pid"


def _alive(pid: int, marker: str) -> bool:
    """Whether pid runs and its command line contains marker (guards against pid reuse)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X") and marker in cmdline


def _read_pid(state_dir: Path, name: str) -> int | None:
    try:
        return int(_pid_file(state_dir, name).read_text().strip())
    except (OSError, ValueError):
        return None


def _running(state_dir: Path, name: str, marker: str) -> int | None:
    pid = _read_pid(state_dir, name)
    return pid if pid is not None and _alive(pid, marker) else None


def _spawn(state_dir: Path, name: str, cmd: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Start cmd detached (own session), output to logs/NAME.log, pid in NAME.pid."""
    log_path = _logs(state_dir) / f"{name}.log"
    with _command_log(log_path, cmd) as out:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=state_dir,
        )
    _CHILDREN.append(proc)
    _pid_file(state_dir, name).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_until(
    check: Callable[[], bool], *, what: str, pid: int, marker: str, log_path: Path, timeout: float
) -> None:
    """Poll check() until true; fail early when the process pid has exited."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if not _alive(pid, marker):
            raise SandboxError(f"{what} exited at start: {_tail(log_path)} (log: {log_path})")
        if time.monotonic() > deadline:
            raise SandboxError(f"{what} did not answer within {timeout:.0f} s (log: {log_path})")
        time.sleep(0.25)


def _serve(
    state_dir: Path,
    name: str,
    cmd: Sequence[str],
    answers: Callable[[], bool],
    notes: list[str],
    *,
    marker: str,
    timeout: float,
) -> None:
    """Start the service NAME (unless its recorded pid still runs) and wait until answers() is true."""
    pid = _running(state_dir, name, marker)
    if pid is None:
        pid = _spawn(state_dir, name, cmd)
        notes.append(f"started {name} pid {pid}")
    _wait_until(
        answers, what=name, pid=pid, marker=marker, log_path=_logs(state_dir) / f"{name}.log", timeout=timeout
    )


def _stop(state_dir: Path, name: str, marker: str) -> bool:
    """SIGTERM the process named by NAME.pid (SIGKILL after a grace period); True if one ran."""
    pid_file = _pid_file(state_dir, name)
    pid = _read_pid(state_dir, name)
    stopped = False
    if pid is not None and _alive(pid, marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid, marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid, marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        stopped = True
    pid_file.unlink(missing_ok=True)
    return stopped


# --------------------------------------------------------------------------- apt


class _Apt:
    """Installs Debian packages on demand, running ``apt-get update`` at most once."""

    def __init__(self, state_dir: Path, log: Log) -> None:
        self.state_dir = state_dir
        self._log_file = _logs(state_dir) / "apt.log"
        self._log = log
        self._updated = False

    def ensure(self, package: str, command: str) -> None:
        """Install package unless command is already on PATH."""
        if shutil.which(command):
            return
        if os.geteuid() != 0:
            raise SandboxError(f"{command} is missing and installing {package} needs root")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if not self._updated:
            _run(["apt-get", "update"], self._log_file, env=env, timeout=600)
            self._updated = True
        self._log(f"sandbox: apt-get install {package}")
        _run(["apt-get", "install", "-y", package], self._log_file, env=env, timeout=1200)
        if not shutil.which(command):
            raise SandboxError(f"installed {package} but {command} is still not on PATH")


# --------------------------------------------------------------------------- engine


def engine_answers() -> bool:
    """Whether ``docker info`` reaches an engine."""
    if not shutil.which("docker"):
        return False
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _ensure_engine(state_dir: Path, apt: _Apt, notes: list[str]) -> None:
    if engine_answers():
        notes.append("engine answers")
        return
    apt.ensure("docker.io", "dockerd")
    cmd = ["dockerd", "--storage-driver", "overlay2"]
    _serve(state_dir, "dockerd", cmd, engine_answers, notes, marker="dockerd", timeout=ENGINE_TIMEOUT_S)


# --------------------------------------------------------------------------- registry


def _registry_config(state_dir: Path, registry: str) -> Path:
    storage = state_dir / "registry"
    storage.mkdir(parents=True, exist_ok=True)
    config = state_dir / "registry.yml"
    text = (
        "version: 0.1\n"
        "log:\n"
        "  level: info\n"
        "storage:\n"
        "  filesystem:\n"
        f"    rootdirectory: {storage}\n"
        "  delete:\n"
        "    enabled: true\n"
        "http:\n"
        f"  addr: {registry}\n"
        "  headers:\n"
        "    X-Content-Type-Options: [nosniff]\n"
    )
    if not config.exists() or config.read_text() != text:
        config.write_text(text)
    return config


def _registry_answers(registry: str) -> bool:
    return _http_status(f"http://{registry}/v2/") == 200


def _ensure_registry(state_dir: Path, info: SandboxInfo, apt: _Apt, notes: list[str]) -> None:
    if _registry_answers(info.registry):
        notes.append("answers")
        return
    apt.ensure("docker-registry", "docker-registry")
    config = _registry_config(state_dir, info.registry)
    _serve(
        state_dir,
        "registry",
        ["docker-registry", "serve", str(config)],
        functools.partial(_registry_answers, info.registry),
        notes,
        marker="docker-registry",
        timeout=SERVICE_TIMEOUT_S,
    )


def _registry_tags(registry: str, repository: str) -> list[str]:
    tags = _http_json(f"http://{registry}/v2/{repository}/tags/list")
    return list(tags.get("tags") or []) if isinstance(tags, dict) else []


def _registry_has_base(info: SandboxInfo) -> bool:
    return BASE_TAG in _registry_tags(info.registry, BASE_REPOSITORY)


# --------------------------------------------------------------------------- QEMU (binfmt)

#: Where `--arch` gets its QEMU: Debian 13's `qemu-user` (static binaries since QEMU 9.1; they run on Debian
#: 12 too), found through the suite's signed InRelease -> Packages.xz -> .deb sha256 chain. Debian 12's own
#: qemu-user-static is 7.2, under which `import torch` (2.14.1 aarch64) segfaults.
QEMU_SUITE = "trixie"
QEMU_PACKAGE = "qemu-user"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DOWNLOAD_TIMEOUT_S = 120.0


def release_sha256(release: str, path: str) -> str:
    """The SHA256 an (already verified) InRelease lists for `path` (`main/binary-amd64/Packages.xz`)."""
    in_sha256 = False
    for line in release.splitlines():
        if not line.startswith(" "):
            in_sha256 = line.strip() == "SHA256:"
            continue
        fields = line.split()
        if in_sha256 and len(fields) == 3 and fields[2] == path:
            return fields[0]
    raise SandboxError(f"the signed release file lists no SHA256 for {path}")


def package_stanza(packages: str, name: str) -> dict[str, str]:
    """The single-line fields of package `name`'s stanza in a Packages index."""
    for stanza in packages.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" ")
        )
        if fields.get("Package") == name:
            return fields
    raise SandboxError(f"the Packages index lists no {name}")


def binfmt_line(conf: str, root: Path) -> str:
    """Debian's binfmt.d line for a QEMU handler (`:qemu-aarch64:M::magic:mask:/usr/libexec/...:OPF`), its
    interpreter moved under `root`, where the package was extracted."""
    fields = conf.strip().split(":")
    if len(fields) != 8 or not fields[6].startswith("/"):
        raise SandboxError(f"unexpected binfmt.d line: {conf.strip()!r}")
    fields[6] = str(root) + fields[6]
    return ":".join(fields)


def _download(url: str, dest: Path, sha256: str | None = None) -> Path:
    """Fetch url into dest (kept when it already has the expected sha256); check the sha256 when given."""
    if sha256 and dest.is_file() and hashlib.sha256(dest.read_bytes()).hexdigest() == sha256:
        return dest
    partial = dest.with_name(dest.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, partial.open("wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
    except OSError as err:
        raise SandboxError(f"download {url}: {err}") from None
    found = hashlib.sha256(partial.read_bytes()).hexdigest()
    if sha256 and found != sha256:
        partial.unlink()
        raise SandboxError(f"download {url}: sha256 {found}, the signed index says {sha256}")
    partial.rename(dest)
    return dest


def _debian_package(cache: Path, suite: str, package: str, log_file: Path) -> Path:
    """A .deb of `suite` for this host's CPU, verified from Debian's archive key down: gpgv checks the
    InRelease, which gives Packages.xz's sha256, which gives the .deb's."""
    if not Path(DEBIAN_KEYRING).is_file():
        raise SandboxError(f"{DEBIAN_KEYRING} is missing: apt-get install debian-archive-keyring")
    cache.mkdir(parents=True, exist_ok=True)
    dists = f"{DEBIAN_MIRROR}/dists/{suite}"
    signed = _download(f"{dists}/InRelease", cache / f"{suite}-InRelease")
    release = cache / f"{suite}-Release"
    release.unlink(missing_ok=True)  # gpgv writes what it verified, and never over a file
    _run(["gpgv", "--keyring", DEBIAN_KEYRING, "--output", str(release), str(signed)], log_file)
    host_arch = platforms.arch(platforms.native_platform())
    index_path = f"main/binary-{host_arch}/Packages.xz"
    packages_xz = _download(
        f"{dists}/{index_path}",
        cache / f"{suite}-{host_arch}-Packages.xz",
        release_sha256(release.read_text(), index_path),
    )
    stanza = package_stanza(lzma.decompress(packages_xz.read_bytes()).decode(), package)
    filename = stanza["Filename"]
    return _download(f"{DEBIAN_MIRROR}/{filename}", cache / Path(filename).name, stanza["SHA256"])


def _qemu_tree(state_dir: Path, arch: str, log_file: Path, notes: list[str]) -> Path:
    """Debian 13's QEMU for `arch`, extracted under the state directory (its binfmt.d line, the emulator
    and Debian's `*-binfmt-P` link to it); fetched and verified once."""
    handler = platforms.BINFMT_HANDLER[arch]
    conf = f"usr/share/qemu/binfmt.d/{handler}.conf"
    for tree in sorted((state_dir / "qemu").glob(f"{QEMU_PACKAGE}_*")):
        if (tree / conf).is_file():
            return tree
    deb = _debian_package(state_dir / "cache" / "debian-packages", QEMU_SUITE, QEMU_PACKAGE, log_file)
    tree = state_dir / "qemu" / deb.name.removesuffix(".deb")
    partial = tree.with_name(tree.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                wanted = name in (conf, f"usr/bin/{handler}") or (
                    name.startswith("usr/libexec/qemu-binfmt/") and member.linkname.endswith(f"/{handler}")
                )
                if wanted:
                    tar.extract(member, partial, filter="tar")
    if proc.returncode != 0 or not (partial / conf).is_file():
        raise SandboxError(f"{deb.name} holds no {conf} (dpkg-deb exit {proc.returncode})")
    partial.rename(tree)
    notes.append(f"fetched {deb.name}")
    return tree


def _ensure_binfmt(state_dir: Path, arch: str, notes: list[str]) -> None:
    """Register a QEMU that runs torch as the kernel's binfmt_misc handler for `arch`, so that the engine
    runs that CPU's binaries: Debian 13's static qemu-user with Debian's own registration line (flags
    `OPF`: `F` makes the kernel open the emulator once, so containers use it without having it). An
    older, disabled or container-blind registration (Debian 12's QEMU 7.2) is replaced."""
    current = platforms.registered_qemu(arch)
    if current is not None and current.usable:
        notes.append(f"binfmt {arch}: {current.describe()}")
        return
    if os.geteuid() != 0:
        raise SandboxError(f"registering QEMU for {arch} with the kernel (binfmt_misc) needs root")
    log_file = _logs(state_dir) / "binfmt.log"
    tree = _qemu_tree(state_dir, arch, log_file, notes)
    handler = platforms.BINFMT_HANDLER[arch]
    line = binfmt_line((tree / f"usr/share/qemu/binfmt.d/{handler}.conf").read_text(), tree)
    if not Path(platforms.BINFMT_DIR, "register").exists():
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", platforms.BINFMT_DIR], log_file)
    entry = platforms.binfmt_path(arch)
    if entry.exists():
        entry.write_text("-1")  # unregister the one in the way
        notes.append(f"replaced {current.describe() if current else handler}")
    Path(platforms.BINFMT_DIR, "register").write_text(line)
    registered = platforms.registered_qemu(arch)
    if registered is None or not registered.usable:
        problem = registered.problem() if registered else "nothing is registered"
        raise SandboxError(f"registered {line.split(':')[-2]} for {arch} but {problem} (log: {log_file})")
    notes.append(f"binfmt {arch}: {registered.describe()}")


# --------------------------------------------------------------------------- base images


@dataclass(frozen=True)
class DebianBase:
    """One debootstrapped Debian base: an OS value of the compat data, for one CPU architecture."""

    os: str  # "debian13"
    version: str  # "13", the image tag
    suite: str  # "trixie"
    arch: str  # Debian's name of the CPU: "amd64", "arm64"

    @property
    def tarball(self) -> str:
        suffix = "" if self.arch == NATIVE_ARCH else f"-{self.arch}"
        return f"debian-{self.version}{suffix}-minbase.tar"

    @property
    def platform(self) -> str:
        return f"linux/{self.arch}"


def debian_base(os_name: str, arch: str = NATIVE_ARCH) -> DebianBase:
    """The base for an OS value of builder/resources/compat.yaml (Debian only: debootstrap makes it)."""
    data = compat.load()
    release = data.os.get(os_name)
    debian = [name for name in data.oses() if data.os[name].family == "debian"]
    if release is None or release.family != "debian":
        raise SandboxError(
            f"--os {os_name}: the sandbox debootstraps Debian only; allowed: {', '.join(debian)}"
        )
    if arch not in platforms.ARCHES:
        raise SandboxError(f"--arch {arch}: unknown; allowed: {', '.join(platforms.ARCHES)}")
    return DebianBase(os=os_name, version=release.version, suite=release.codename, arch=arch)


def _rootfs_tarball(state_dir: Path, base: DebianBase, apt: _Apt, notes: list[str]) -> Path:
    """A Debian minbase rootfs as a tar, debootstrapped once and cached. A foreign CPU is made in two
    stages: `--foreign` unpacks the packages here, then the second stage runs inside the rootfs under
    QEMU (binfmt registered)."""
    cache = state_dir / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / base.tarball
    if tarball.exists():
        notes.append(f"cached rootfs {base.tarball}")
        return tarball
    apt.ensure("debootstrap", "debootstrap")
    rootfs = cache / f"rootfs-{base.version}-{base.arch}"
    _remove_rootfs(rootfs)
    log_file = _logs(state_dir) / f"debootstrap-{base.version}-{base.arch}.log"
    start = time.monotonic()
    foreign = base.arch != NATIVE_ARCH
    try:
        first = ["debootstrap", "--variant=minbase", f"--arch={base.arch}"]
        first += ["--foreign"] if foreign else []
        _run([*first, base.suite, str(rootfs), DEBIAN_MIRROR], log_file, timeout=1800)
        if foreign:
            _run(
                ["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"], log_file, timeout=3600
            )
        for leftovers in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for entry in (rootfs / leftovers).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".tar.partial")
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], log_file)
        partial.rename(tarball)
    finally:
        _remove_rootfs(rootfs)
    notes.append(f"debootstrap {base.suite} {base.arch} {time.monotonic() - start:.1f} s")
    return tarball


def _remove_rootfs(rootfs: Path) -> None:
    """Delete a (possibly half-built) rootfs, unmounting what debootstrap left mounted."""
    if not rootfs.exists():
        return
    for mount in ("proc", "sys", "dev/pts", "dev"):
        target = rootfs / mount
        if target.is_mount():
            subprocess.run(["umount", "-l", str(target)], check=False, capture_output=True)
    shutil.rmtree(rootfs, ignore_errors=True)


def _image_exists(image: str) -> bool:
    proc = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False, timeout=60)
    return proc.returncode == 0


def _push_base(state_dir: Path, base: DebianBase, reference: str, apt: _Apt, notes: list[str]) -> None:
    """Make the rootfs an image `reference` for the base's platform and push it. A foreign CPU's image is
    built `FROM scratch` with `--platform` (`docker import --platform` leaves the engine's own CPU in the
    image config on Docker 20.10, and a build for that platform then refuses it)."""
    log_file = _logs(state_dir) / "docker.log"
    tarball = _rootfs_tarball(state_dir, base, apt, notes)
    changes = ['CMD ["bash"]', f"ENV PATH={BASE_PATH}"]
    if base.arch == NATIVE_ARCH:
        with tarball.open("rb") as tar:
            cmd = ["docker", "import", *(a for c in changes for a in ("--change", c)), "-", reference]
            _run(cmd, log_file, stdin=tar, timeout=600)
    else:
        context = state_dir / "cache" / f"context-{base.version}-{base.arch}"
        shutil.rmtree(context, ignore_errors=True)
        context.mkdir(parents=True)
        try:
            os.link(tarball, context / "rootfs.tar")
            (context / "Dockerfile").write_text(
                "FROM scratch\nADD rootfs.tar /\n" + "".join(f"{c}\n" for c in changes)
            )
            cmd = ["docker", "build", "--platform", base.platform, "--tag", reference, str(context)]
            _run(cmd, log_file, env={**os.environ, "DOCKER_BUILDKIT": "0"}, timeout=600)
        finally:
            shutil.rmtree(context, ignore_errors=True)
    _run(["docker", "push", reference], log_file, timeout=600)
    notes.append(f"pushed {reference}")


def _ensure_base(
    state_dir: Path, info: SandboxInfo, os_name: str, arches: Sequence[str], apt: _Apt, notes: list[str]
) -> None:
    """`<registry>/library/debian:<version>`: one platform's image, or with several arches one image
    index over per-platform tags (`<version>-linux-<arch>`), as Docker Hub's official images are."""
    bases = [debian_base(os_name, arch) for arch in arches]
    tag = bases[0].version
    have = _registry_tags(info.registry, BASE_REPOSITORY)
    reference = f"{info.registry}/{BASE_REPOSITORY}:{tag}"
    if len(bases) == 1:
        if tag in have:
            notes.append(f"registry has {tag}")
            return
        _push_base(state_dir, bases[0], reference, apt, notes)
    else:
        children = []
        for base in bases:
            child_tag = f"{tag}-{platforms.tag_suffix(base.platform)}"
            if child_tag not in have:
                _push_base(state_dir, base, f"{reference}-{platforms.tag_suffix(base.platform)}", apt, notes)
            children.append((base.platform, child_tag))
        http = RegistryHttp(info.registry, None, insecure=True)
        current = {platform: http.manifest(BASE_REPOSITORY, child) for platform, child in children}
        listed = index.platforms_of(http, BASE_REPOSITORY, tag)
        if all(found is not None and listed.get(p) == found[0] for p, found in current.items()):
            notes.append(f"registry has {tag} for {', '.join(b.platform for b in bases)}")
            return
        try:
            digest = index.put_index(http, BASE_REPOSITORY, children, [tag])
        except BuilderError as err:
            raise SandboxError(f"image index {reference}: {err}") from None
        notes.append(f"index {tag} {digest[:19]}")
    if tag not in _registry_tags(info.registry, BASE_REPOSITORY):
        raise SandboxError(f"pushed {reference} but the registry does not list it")


# --------------------------------------------------------------------------- wheels


def _pip_download_command(
    requirements: Sequence[str],
    dest: Path,
    *,
    python: str = WHEEL_PYTHON,
    platforms_: Sequence[str] = WHEEL_PLATFORMS,
    no_deps: bool = False,
) -> list[str]:
    """``pip download`` of requirements (with dependencies unless no_deps) for one CPython and platform."""
    cmd = [sys.executable, "-m", "pip", "download", "--dest", str(dest), "--progress-bar", "off"]
    cmd += ["--disable-pip-version-check", "--timeout", "120", "--index-url", PIP_INDEX_URL]
    if Path(PIP_CERT).exists():
        cmd += ["--cert", PIP_CERT]
    for folder in PIP_FIND_LINKS:
        if Path(folder).is_dir():
            cmd += ["--find-links", folder]
    for url in PIP_EXTRA_INDEX_URLS:
        if Path(url.removeprefix("file://")).is_dir() or not url.startswith("file://"):
            cmd += ["--extra-index-url", url]
    cmd += ["--python-version", python, "--implementation", "cp", "--only-binary=:all:"]
    cmd += ["--no-deps"] if no_deps else []
    for platform in platforms_:
        cmd += ["--platform", platform]
    return cmd + list(requirements)


def _uv_compile_command(requirements_in: Path, *, python: str, platform: str) -> list[str]:
    """``uv pip compile`` for another Python and CPU: markers are evaluated for the target (pip's
    ``--platform`` evaluates them for this host, e.g. torch 2.9.1's ``platform_machine == "x86_64"``)."""
    uv = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    cmd = [uv, "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--only-binary", ":all:"]
    cmd += ["--python-version", python, "--python-platform", platforms.UV_PLATFORM[platform]]
    return [*cmd, "--index-url", PIP_INDEX_URL, str(requirements_in)]


def _ensure_platform_wheels(state_dir: Path, base: DebianBase, notes: list[str]) -> None:
    """The test cell's wheels for an OS's Python on a platform: resolved by uv for that target, then each
    pinned wheel fetched by pip for that CPU (a resolved wheel that does not exist fails here)."""
    python = compat.load().os[base.os].python
    group = f"py{python.replace('.', '')}-{base.arch}"
    stamps = state_dir / "stamps"
    stamps.mkdir(parents=True, exist_ok=True)
    pins_file = stamps / f"requirements-{group}.txt"
    requirements_in = stamps / f"requirements-{group}.in"
    requirements_in.write_text("".join(f"{r}\n" for r in PLATFORM_REQUIREMENTS))
    env = {**_pip_env(), "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"}
    if Path(PIP_CERT).exists():
        env["SSL_CERT_FILE"] = PIP_CERT
    if not pins_file.exists():
        partial = pins_file.with_suffix(".partial")
        with partial.open("wb") as out:
            cmd = _uv_compile_command(requirements_in, python=python, platform=base.platform)
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, env=env, check=False, timeout=600)
        if proc.returncode != 0:
            last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise SandboxError(f"uv pip compile for {base.platform} Python {python} failed: {last[0]}")
        partial.rename(pins_file)
    pins = [
        line.strip()
        for line in pins_file.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    glibc = DEBIAN_GLIBC.get(base.version, DEBIAN_GLIBC["12"])
    machine = platforms.WHEEL_MACHINE[base.platform]
    cmd = _pip_download_command(
        pins, state_dir / "wheels", python=python, platforms_=wheel_platforms(machine, glibc), no_deps=True
    )
    _ensure_wheels(state_dir, group, cmd, notes)
    notes.append(f"{len(pins)} pins for {base.platform} cp{python.replace('.', '')}")


def _pip_env() -> dict[str, str]:
    """Environment without the host's pip settings (PIP_* variables and config files)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def _ensure_wheels(state_dir: Path, group: str, cmd: Sequence[str], notes: list[str]) -> None:
    """Fill state_dir/wheels by running a ``pip download`` command once; a stamp remembers what was done."""
    wheels = state_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    stamps = state_dir / "stamps"
    stamps.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(json.dumps(cmd[1:]).encode()).hexdigest()
    stamp = stamps / f"wheels-{group}"
    has_files = any(p.is_file() for p in wheels.iterdir())
    if has_files and stamp.exists() and stamp.read_text().strip() == digest:
        notes.append("stamp matches")
        return
    before = {p.name for p in wheels.iterdir()}
    _run(cmd, _logs(state_dir) / f"pip-{group}.log", env=_pip_env(), timeout=3600)
    after = list(wheels.iterdir())
    size = sum(p.stat().st_size for p in after)
    added = len([p for p in after if p.name not in before])
    notes.append(f"{added} new files, folder {len(after)} files {size / 1e9:.2f} GB")
    stamp.write_text(digest + "\n")


# --------------------------------------------------------------------------- pypiserver


def _pypi_answers(pypi_url: str) -> bool:
    return _http_status(pypi_url.rstrip("/") + "/") == 200


def _ensure_pypiserver(state_dir: Path, info: SandboxInfo, log: Log, notes: list[str]) -> None:
    if _pypi_answers(info.pypi_url):
        notes.append("answers")
        return
    probe = subprocess.run([sys.executable, "-c", "import pypiserver"], capture_output=True, check=False)
    if probe.returncode != 0:
        log("sandbox: pip install pypiserver")
        _run(
            [sys.executable, "-m", "pip", "install", "pypiserver"],
            _logs(state_dir) / "pip-pypiserver.log",
            timeout=600,
        )
    port = info.pypi_url.split(":")[-1].split("/")[0]
    cmd = [sys.executable, "-m", "pypiserver", "run", "-i", HOST, "-p", port]
    cmd += ["-a", ".", "-P", ".", "--disable-fallback", str(state_dir / "wheels")]
    answers = functools.partial(_pypi_answers, info.pypi_url)
    _serve(state_dir, "pypiserver", cmd, answers, notes, marker="pypiserver", timeout=SERVICE_TIMEOUT_S)


# --------------------------------------------------------------------------- public API


def _ensure_proxy(info: SandboxInfo, offline: bool, notes: list[str]) -> None:
    """The wheel cache's server on its fixed port, caching PyPI (restarted when the mode differs)."""
    try:
        server, started = wheel_cache.start(
            info.wheel_cache,
            [PIP_INDEX_URL],
            offline=offline,
            port=_port("SANDBOX_PROXY_PORT", DEFAULT_PROXY_PORT),
            ca_bundle=Path(PIP_CERT) if Path(PIP_CERT).is_file() else None,
        )
    except BuilderError as err:
        raise SandboxError(str(err)) from None
    mode = "offline" if server.offline else "online"
    notes.append(f"{'started' if started else 'answers'} {mode} at {server.index_url(PIP_INDEX_URL)}")


def _write_profile(info: SandboxInfo) -> None:
    text = "".join(f"{key}={value}\n" for key, value in info.profile_env().items())
    path = info.state_dir / "profile.env"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def up(
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    with_cuda: bool = False,
    with_cuda12: bool = False,
    with_proxy: bool = False,
    proxy_offline: bool = False,
    oses: Sequence[str] = (),
    arches: Sequence[str] = (),
    log: Log = print,
) -> SandboxInfo:
    """Bring the sandbox up (idempotent; seconds when everything is already there).

    `oses` (Debian OS values) get a base each, for every arch of `arches` plus the native one, and the
    wheels of the test cell 2.14-cuda13.0-<os> for each such platform; Debian 12 for amd64 is always
    there. A foreign arch registers QEMU's binfmt handler first (a QEMU new enough to run torch).
    """
    state_dir = Path(state_dir).resolve()
    info = sandbox_info(state_dir)
    wheels = state_dir / "wheels"
    chosen_arches = [NATIVE_ARCH, *(a for a in dict.fromkeys(arches) if a != NATIVE_ARCH)]
    chosen_oses = list(dict.fromkeys(oses or ((DEFAULT_OS,) if arches else ())))
    extra = [debian_base(o, a) for o in chosen_oses for a in chosen_arches]  # refuses an unknown value first
    timings: dict[str, float] = {}
    start = time.monotonic()
    with _locked(state_dir):
        apt = _Apt(state_dir, log)
        steps: list[tuple[str, Callable[[list[str]], None]]] = [
            ("engine", lambda n: _ensure_engine(state_dir, apt, n)),
            ("registry", lambda n: _ensure_registry(state_dir, info, apt, n)),
        ]
        for arch in chosen_arches[1:]:
            steps.append((f"binfmt {arch}", functools.partial(_ensure_binfmt, state_dir, arch)))
        steps.append(
            ("base image", functools.partial(_ensure_base, state_dir, info, DEFAULT_OS, [NATIVE_ARCH], apt))
        )
        for os_name in chosen_oses:
            if os_name != DEFAULT_OS or len(chosen_arches) > 1:
                steps.append(
                    (
                        f"base {os_name}",
                        functools.partial(_ensure_base, state_dir, info, os_name, chosen_arches, apt),
                    )
                )
        cpu = _pip_download_command(CPU_REQUIREMENTS, wheels)
        steps.append(("wheels cpu", functools.partial(_ensure_wheels, state_dir, "cpu", cpu)))
        if with_cuda:
            cuda = _pip_download_command(CUDA_REQUIREMENTS, wheels)
            steps.append(("wheels cuda", functools.partial(_ensure_wheels, state_dir, "cuda", cuda)))
            components = _pip_download_command(CUDA12_COMPONENT_REQUIREMENTS, wheels)
            steps.append(
                (
                    "wheels cuda12 components",
                    functools.partial(_ensure_wheels, state_dir, "cuda12-components", components),
                )
            )
        if with_cuda12:
            cuda12 = _pip_download_command(CUDA12_REQUIREMENTS, wheels)
            steps.append(("wheels cuda12", functools.partial(_ensure_wheels, state_dir, "cuda12", cuda12)))
        for base in extra:
            steps.append(
                (
                    f"wheels {base.os} {base.platform}",
                    functools.partial(_ensure_platform_wheels, state_dir, base),
                )
            )
        steps.append(("pypiserver", lambda n: _ensure_pypiserver(state_dir, info, log, n)))
        if with_proxy:
            steps.append(("wheel cache", lambda n: _ensure_proxy(info, proxy_offline, n)))
        for name, action in steps:
            step_start = time.monotonic()
            with _step(log, name) as notes:
                action(notes)
            timings[name] = round(time.monotonic() - step_start, 2)
        _write_profile(info)
        timings["total"] = round(time.monotonic() - start, 2)
        (state_dir / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    log(f"sandbox: up in {timings['total']:.1f} s; profile in {state_dir / 'profile.env'}")
    return info


_SERVICES: tuple[tuple[str, str], ...] = (
    ("pypiserver", "pypiserver"),
    ("registry", "docker-registry"),
    ("dockerd", "dockerd"),
)


def down(state_dir: Path = DEFAULT_STATE_DIR, *, purge: bool = False) -> None:
    """Stop the processes up() started; purge=True also deletes state_dir (registry data, wheels)."""
    state_dir = Path(state_dir).resolve()
    if not state_dir.exists():
        return
    with _locked(state_dir):
        if purge and engine_answers():
            image = sandbox_info(state_dir).base_image
            subprocess.run(
                ["docker", "image", "rm", "-f", image], capture_output=True, check=False, timeout=120
            )
        for name, marker in _SERVICES:
            _stop(state_dir, name, marker)
        wheel_cache.stop(sandbox_info(state_dir).wheel_cache)
    if purge:
        shutil.rmtree(state_dir)


def status(state_dir: Path = DEFAULT_STATE_DIR) -> dict[str, Any]:
    """What answers, what runs (pids from the state dir) and which wheel groups are fetched."""
    state_dir = Path(state_dir).resolve()
    info = sandbox_info(state_dir)
    stamps = state_dir / "stamps"
    groups = [p.name.removeprefix("wheels-") for p in sorted(stamps.glob("wheels-*"))]
    registry_up = _registry_answers(info.registry)
    proxy = wheel_cache.running(info.wheel_cache)
    return {
        **{key: str(value) for key, value in asdict(info).items()},
        "engine": engine_answers(),
        "registry_answers": registry_up,
        "base_image_pushed": registry_up and _registry_has_base(info),
        "pypi_answers": _pypi_answers(info.pypi_url),
        "wheel_groups": groups,
        "pids": {name: _running(state_dir, name, marker) for name, marker in _SERVICES},
        "wheel_cache": {
            "url": proxy.index_url(PIP_INDEX_URL) if proxy else None,
            "offline": proxy.offline if proxy else None,
            "stored_bytes": wheel_cache.stored_bytes(info.wheel_cache),
        },
    }


# --------------------------------------------------------------------------- command line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="The loopback sandbox: Docker engine, registry mirror, PyPI mirror (dev and CI).",
)
StateDirOption = Annotated[
    Path | None, typer.Option("--state-dir", help="Default: $SANDBOX_DIR or /var/tmp/...")
]


@app.command("up")
def up_command(
    cuda: Annotated[bool, typer.Option("--cuda", help="Also fetch the CUDA 13.0 wheels.")] = False,
    cuda12: Annotated[
        bool, typer.Option("--cuda12", help="Also fetch torch 2.9.1 with its CUDA 12.8 wheels (4 GB).")
    ] = False,
    proxy: Annotated[bool, typer.Option("--proxy", help="Also run the wheel cache (PyPI proxy).")] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="The wheel cache serves only what it holds.")
    ] = False,
    os_values: Annotated[
        list[str] | None,
        typer.Option(
            "--os", help="Also a base (and test-cell wheels) for this Debian OS value, e.g. debian13."
        ),
    ] = None,
    arch: Annotated[
        list[str] | None,
        typer.Option("--arch", help="Also this CPU (arm64): binfmt, bases and wheels for it under QEMU."),
    ] = None,
    state_dir: StateDirOption = None,
) -> None:
    """Start the sandbox (idempotent, cached); prints the variables of the `local` profile."""
    info = up(
        state_dir or DEFAULT_STATE_DIR,
        with_cuda=cuda,
        with_cuda12=cuda12,
        with_proxy=proxy or offline,
        proxy_offline=offline,
        oses=os_values or (),
        arches=arch or (),
        log=lambda m: typer.echo(m, err=True),
    )
    for key, value in info.profile_env().items():
        typer.echo(f"{key}={value}")


@app.command("down")
def down_command(
    purge: Annotated[bool, typer.Option("--purge", help="Also delete its cache and registry data.")] = False,
    state_dir: StateDirOption = None,
) -> None:
    """Stop the sandbox's processes."""
    down(state_dir or DEFAULT_STATE_DIR, purge=purge)


@app.command("status")
def status_command(state_dir: StateDirOption = None) -> None:
    """What answers, as JSON."""
    typer.echo(json.dumps(status(state_dir or DEFAULT_STATE_DIR), indent=2))


if __name__ == "__main__":
    run_cli(app)
