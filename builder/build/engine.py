"""The Docker engine, through docker-py: the only module that imports `docker`.

Connects from the environment (DOCKER_HOST honoured, API version negotiated), pulls base images, builds
from an in-memory context tar, runs containers with a timeout and always removes them, tags and pushes.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import docker
import docker.auth
import docker.errors
import requests.exceptions
from docker.types import CancellableStream, DeviceRequest, Ulimit

from builder.errors import (
    BuildFailedError,
    ConfigError,
    ContainerStartError,
    EngineUnavailableError,
    MirrorError,
    RegistryError,
    StoppedError,
)
from builder.model import platforms
from builder.model.naming import ROLE_LABEL, parse_reference
from builder.model.secrets import auth_secrets, redact

STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
# A tool's own error line in a build log: pip's `ERROR: ...`, apt's `E: ...` (BuildKit prefixes `#7 1.23 `).
TOOL_ERROR_RE = re.compile(r"^(?:#\d+ [\d.]+ )?(?P<kind>ERROR|E): (?P<message>\S.*)$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the classic builder colours a step's stderr red
LOG_TAIL_LINES = 30

# How a container asks for every GPU: through CDI (Docker >= 25 with CDI enabled, and a spec that the
# NVIDIA Container Toolkit generated), or the legacy request that the NVIDIA runtime or hook answers.
GpuRequest = Literal["cdi", "legacy"]
CDI_ALL_GPUS = "nvidia.com/gpu=all"
CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")  # the engine's defaults where `docker info` names none


def device_requests(gpu: GpuRequest | None) -> list[DeviceRequest] | None:
    if gpu == "cdi":
        return [DeviceRequest(driver="cdi", device_ids=[CDI_ALL_GPUS])]
    if gpu == "legacy":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return None


def gpu_request_kinds(info: Mapping[str, Any], cdi_specs: Iterable[str], nvidiactl: bool) -> list[GpuRequest]:
    """The GPU requests an engine can answer, in the order to try them (pure: `docker info`, the texts of the
    CDI spec files, and whether the host has /dev/nvidiactl are passed in).

    CDI: the engine reports CDI spec directories (empty when CDI is off, and absent before API 1.44) and a
    device or spec names nvidia.com/gpu. Legacy: the nvidia runtime is registered, or (toolkit hook setups
    register none) the host has NVIDIA device nodes.
    """
    kinds: list[GpuRequest] = []
    discovered = [str(d.get("ID", "")) for d in info.get("DiscoveredDevices") or [] if isinstance(d, dict)]
    nvidia_cdi = any(i.startswith("nvidia.com/gpu=") for i in discovered) or any(
        "nvidia.com/gpu" in text for text in cdi_specs
    )
    if info.get("CDISpecDirs") and nvidia_cdi:
        kinds.append("cdi")
    if "nvidia" in (info.get("Runtimes") or {}) or nvidiactl:
        kinds.append("legacy")
    return kinds


def _cdi_spec_texts(dirs: Iterable[str]) -> list[str]:
    texts = []
    for folder in dirs:
        for spec in sorted(Path(folder).glob("*")):
            if spec.suffix in (".yaml", ".yml", ".json"):
                try:
                    texts.append(spec.read_text(encoding="utf-8", errors="replace"))
                except OSError:
                    continue
    return texts


def engine_hint() -> str:
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    return (
        f"no Docker engine answers at {where}: start one with `make sandbox` "
        "(installs docker.io and starts dockerd) or point DOCKER_HOST at a running engine"
    )


@dataclass
class BuildResult:
    image_id: str
    steps: int
    seconds: float
    log_path: Path


@dataclass
class RunResult:
    exit_code: int | None  # None: stopped at the timeout
    stdout: str
    stderr: str
    seconds: float
    host_config: dict[str, Any] = field(default_factory=dict)  # `docker inspect`'s HostConfig


@dataclass
class Engine:
    """A connected engine; create with `Engine.connect()`.

    `cancel()` (from any thread) stops the work of this engine object: the running build or push stream is
    cut, so the engine cancels it and removes its step containers, a running container is killed, and every
    later call raises StoppedError. One object per concurrent piece of work (a nightly cell).
    """

    client: Any
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    _stoppers: dict[int, Callable[[], None]] = field(default_factory=dict, repr=False)
    _stoppers_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _last_response: threading.local = field(default_factory=threading.local, repr=False)

    def __post_init__(self) -> None:
        # docker-py returns a build/push stream without its HTTP response; remember each response (per
        # thread) so the stream can be wrapped in docker-py's CancellableStream and cut from another thread.
        self.client.api.hooks["response"].append(self._remember_response)

    @classmethod
    def connect(cls) -> Engine:
        """Client from the environment; EngineUnavailableError (exit 3) when nothing answers."""
        try:
            client = docker.from_env(version="auto", timeout=600)
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
            raise EngineUnavailableError(engine_hint()) from None
        return cls(client=client)

    def close(self) -> None:
        """Close the connection to the engine (this object is done)."""
        self.client.close()

    # --- cancellation ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop this engine's work now (thread-safe; idempotent)."""
        self._cancelled.set()
        with self._stoppers_lock:
            stoppers = list(self._stoppers.values())
        for stop in stoppers:
            with contextlib.suppress(Exception):
                stop()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _check(self) -> None:
        if self._cancelled.is_set():
            raise StoppedError("cancelled")

    @contextmanager
    def _stoppable(self, stop: Callable[[], None]) -> Iterator[None]:
        """Register `stop` for `cancel()` while the block runs (called at once if already cancelled)."""
        key = id(stop)
        with self._stoppers_lock:
            self._stoppers[key] = stop
        try:
            if self._cancelled.is_set():
                stop()
            yield
        finally:
            with self._stoppers_lock:
                self._stoppers.pop(key, None)

    def _remember_response(self, response: Any, *args: Any, **kwargs: Any) -> None:
        self._last_response.value = response

    def _cancellable(self, stream: Iterable[Any]) -> CancellableStream:
        """A stream docker-py just opened (in this thread), wrapped so that `cancel()` can cut it."""
        return CancellableStream(iter(stream), self._last_response.value)

    def version(self) -> dict[str, Any]:
        info: dict[str, Any] = self.client.version()
        return info

    def gpu_requests(self) -> list[GpuRequest]:
        """How containers can be given GPUs here, in the order to try (empty: they cannot).

        CDI specs and device nodes on this machine count only when the engine is local."""
        info = self.client.info()
        local = os.environ.get("DOCKER_HOST", "unix://").startswith("unix://")
        specs = _cdi_spec_texts(info.get("CDISpecDirs") or CDI_SPEC_DIRS) if local else []
        return gpu_request_kinds(info, specs, local and Path("/dev/nvidiactl").exists())

    # --- images ---------------------------------------------------------------------------------
    def native_platform(self) -> str:
        """The engine's own platform (`linux/amd64` on an x86_64 engine)."""
        return platforms.native_platform(str(self.client.info().get("Architecture", "")))

    def pull(self, reference: str, *, platform: str | None = None) -> str:
        """Pull `reference` (`name:tag` or `name:tag@sha256:...`), for `platform` when given (an image
        index); returns its digest `sha256:...`.

        A miss names the exact reference that was tried.
        """
        self._check()
        ref = parse_reference(reference)
        repository, digest = ref.name, ref.digest
        try:
            image = self.client.images.pull(repository, tag=digest or ref.tag or "latest", platform=platform)
        except docker.errors.NotFound:
            raise MirrorError(f"base image {reference} not found in the registry mirror") from None
        except docker.errors.APIError as exc:
            raise MirrorError(f"cannot pull base image {reference}: {_explain(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise MirrorError(f"cannot pull base image {reference}: {exc}") from None
        if digest:
            return digest
        repo_digests: list[str] = image.attrs.get("RepoDigests") or []
        found = [parse_reference(repo_digest) for repo_digest in repo_digests]
        for repo_digest in found:
            if repo_digest.name == repository:
                return repo_digest.digest
        if found:
            return found[0].digest
        raise MirrorError(f"base image {reference} has no registry digest after the pull")

    def image_exists(self, reference: str) -> bool:
        try:
            self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        return True

    def image_attrs(self, reference: str) -> dict[str, Any]:
        attrs: dict[str, Any] = self.client.images.get(reference).attrs
        return attrs

    def history(self, reference: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client.api.history(reference)
        return rows

    def tag(self, image_id: str, reference: str) -> None:
        self._check()
        ref = parse_reference(reference)
        self.client.api.tag(image_id, ref.name, ref.tag or "latest")

    def remove_image(self, reference: str, *, keep_parents: bool = False) -> None:
        """Remove an image (keep_parents: leave its untagged parent layers as build cache).

        One still referenced by containers is left alone.
        """
        try:
            self.client.images.remove(reference, noprune=keep_parents)
        except docker.errors.APIError:
            pass

    def build(
        self,
        context_files: Mapping[str, bytes],
        *,
        dockerfile: str,
        target: str,
        build_args: Mapping[str, str],
        labels: Mapping[str, str],
        log_path: Path,
        on_step: Callable[[int, int, str], None] | None = None,
        nocache: bool = False,
        platform: str | None = None,
    ) -> BuildResult:
        """Build an untagged image from in-memory files (`dockerfile`: its path among them), for `platform`
        when given (another CPU runs under QEMU); BuildFailedError names the step and the log tail."""
        self._check()
        started = time.perf_counter()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        current_step = ""
        steps = 0
        image_id = ""
        error = ""
        with log_path.open("w", encoding="utf-8") as log:
            try:
                stream = self._cancellable(
                    self.client.api.build(
                        fileobj=context_tar(context_files),
                        custom_context=True,
                        dockerfile=dockerfile,
                        target=target,
                        buildargs=dict(build_args),
                        labels=dict(labels),
                        network_mode="host",
                        rm=True,
                        forcerm=True,
                        pull=False,
                        nocache=nocache,
                        decode=True,
                        platform=platform,
                    )
                )
                with self._stoppable(stream.close):
                    for chunk in stream:
                        text = chunk.get("stream") or chunk.get("status") or ""
                        if "error" in chunk:
                            error = str(chunk.get("error", "")).strip()
                            text = error + "\n"
                        if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                            image_id = chunk["aux"]["ID"]
                        for line in text.splitlines():
                            log.write(line + "\n")
                            lines.append(line)
                            step = STEP_RE.match(line.strip())
                            if step:
                                current_step = line.strip()
                                steps = int(step[2])
                                if on_step:
                                    on_step(int(step[1]), int(step[2]), step[3])
                        log.flush()
            except (requests.exceptions.RequestException, docker.errors.APIError) as exc:
                error = _explain(exc) if isinstance(exc, docker.errors.APIError) else str(exc)
                log.write(f"error: {error}\n")
        self._check()
        if error or not image_id:
            tail = lines[-LOG_TAIL_LINES:]
            raise BuildFailedError(
                failure_summary(current_step, error, step_output(lines)),
                details=[
                    f"last {len(tail)} log lines (full log: {log_path}):",
                    *("  " + line for line in tail),
                ],
            )
        return BuildResult(
            image_id=image_id, steps=steps, seconds=time.perf_counter() - started, log_path=log_path
        )

    # --- containers -----------------------------------------------------------------------------
    @contextmanager
    def container(
        self,
        image: str,
        command: list[str],
        *,
        gpu: GpuRequest | None = None,
        env: Mapping[str, str] | None = None,
        network_host: bool = False,
        memlock_unlimited: bool = False,
        **kwargs: Any,
    ) -> Iterator[Any]:
        """A started container with a unique name, removed afterwards whatever happens.

        ContainerStartError (with the container's HostConfig) when the engine refuses to start it.
        """
        name = f"pci-{uuid.uuid4().hex[:12]}"
        ulimits = [Ulimit(name="memlock", soft=-1, hard=-1)] if memlock_unlimited else None
        try:
            container = self.client.containers.create(
                image,
                command,
                name=name,
                detach=True,
                environment=dict(env or {}),
                labels={ROLE_LABEL: "run"},
                device_requests=device_requests(gpu),
                network_mode="host" if network_host else None,
                ulimits=ulimits,
                **kwargs,
            )
        except docker.errors.ImageNotFound:
            raise ConfigError(
                f"no image {image} on this engine: build it first (make build TAG=...)"
            ) from None
        try:
            try:
                container.start()
            except docker.errors.APIError as exc:
                host_config = dict(container.attrs.get("HostConfig") or {})
                raise ContainerStartError(_explain(exc).strip(), host_config=host_config) from None
            yield container
        finally:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass

    def run(
        self,
        image: str,
        command: list[str],
        *,
        timeout: float,
        gpu: GpuRequest | None = None,
        env: Mapping[str, str] | None = None,
        shm_size: str | None = None,
        memlock_unlimited: bool = False,
        entrypoint: list[str] | None = None,
    ) -> RunResult:
        """Run a command to completion (or the timeout); the container is always removed. `entrypoint`
        replaces the image's (a full image's supervisor) for a plain command."""
        self._check()
        started = time.perf_counter()
        options: dict[str, Any] = {"shm_size": shm_size} if shm_size else {}
        if entrypoint is not None:
            options["entrypoint"] = entrypoint
        with self.container(
            image, command, gpu=gpu, env=env, memlock_unlimited=memlock_unlimited, **options
        ) as container:
            container.reload()
            host_config = dict(container.attrs.get("HostConfig") or {})
            exit_code: int | None
            try:
                with self._stoppable(container.kill):
                    status = container.wait(timeout=timeout)
                exit_code = int(status.get("StatusCode", 1))
            except (requests.exceptions.RequestException, OSError):
                container.kill()
                exit_code = None
            self._check()
            stdout = container.logs(stdout=True, stderr=False).decode("utf-8", "replace")
            stderr = container.logs(stdout=False, stderr=True).decode("utf-8", "replace")
        return RunResult(
            exit_code=exit_code,
            stdout=stdout,
            stderr=stderr,
            seconds=time.perf_counter() - started,
            host_config=host_config,
        )

    def read_file(self, image: str, path: str) -> bytes | None:
        """One file of an image, read from a created (never started) container; None when absent."""
        self._check()
        try:
            container = self.client.containers.create(image, ["true"], labels={ROLE_LABEL: "read"})
        except docker.errors.ImageNotFound:
            raise ConfigError(
                f"no image {image} on this engine: build it first (make build TAG=...)"
            ) from None
        try:
            chunks, _ = container.get_archive(path)
            archive = io.BytesIO(b"".join(chunks))
        except docker.errors.NotFound:
            return None
        finally:
            container.remove(force=True)
        with tarfile.open(fileobj=archive) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member is not None else None
            return extracted.read() if extracted is not None else None

    def add_files(
        self,
        image: str,
        files: Mapping[str, bytes],
        *,
        labels: Mapping[str, str],
        log_path: Path,
        nocache: bool = False,
    ) -> str:
        """A new image: `image` plus one layer holding `files` (absolute paths), byte for byte the same
        layer for the same files. The layer is a tar the builder unpacks (`ADD layer.tar /`), whose
        folders and files carry fixed times and owners; a plain `COPY` would stamp the folders it touches
        with the build's time."""
        layer = {name.lstrip("/"): data for name, data in files.items()}
        dockerfile = f"FROM {image}\nADD layer.tar /\n"
        context = {"Dockerfile": dockerfile.encode(), "layer.tar": context_tar(layer).getvalue()}
        built = self.build(
            context,
            dockerfile="Dockerfile",
            target="",
            build_args={},
            labels=labels,
            log_path=log_path,
            nocache=nocache,
        )
        return built.image_id

    # --- registry -------------------------------------------------------------------------------
    # Pushes and registry queries for builder/publish/. Credentials arrive as a docker-py auth_config
    # dict and are passed per call (never `login`, so nothing is written to a Docker config file); every
    # error text is redacted before it leaves this section. `auth=None`: docker-py's own config lookup.

    def push(
        self,
        reference: str,
        *,
        auth: Mapping[str, str] | None,
        on_layer: Callable[[str, str, int, int], None] | None = None,
    ) -> str:
        """Push one `host/repo:tag`; returns the manifest digest the registry took. RegistryError on failure.

        on_layer(layer_id, status, current_bytes, total_bytes) is called for every progress message.
        """
        self._check()
        ref = parse_reference(reference)
        secrets = auth_secrets(auth)
        digest = ""
        with _registry_errors(f"push of {reference} failed", secrets):
            stream = self._cancellable(
                self.client.api.push(
                    ref.name,
                    tag=ref.tag or "latest",
                    stream=True,
                    decode=True,
                    auth_config=dict(auth) if auth is not None else None,
                )
            )
            with self._stoppable(stream.close):
                for chunk in stream:
                    if "error" in chunk:
                        detail = chunk.get("errorDetail") or {}
                        message = str(detail.get("message") or chunk["error"]).strip()
                        raise RegistryError(redact(f"push of {reference} failed: {message}", secrets))
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("Digest"):
                        digest = str(aux["Digest"])
                    layer, status = chunk.get("id"), chunk.get("status")
                    if layer and status and on_layer is not None:
                        progress = chunk.get("progressDetail") or {}
                        on_layer(
                            str(layer),
                            str(status),
                            int(progress.get("current") or 0),
                            int(progress.get("total") or 0),
                        )
        self._check()
        if not digest:
            raise RegistryError(f"push of {reference} failed: the engine reported no manifest digest")
        return digest

    def registry_digest(self, reference: str, *, auth: Mapping[str, str] | None) -> str | None:
        """The manifest digest the registry holds for `reference` (asked through the engine); None: absent."""
        self._check()
        secrets = auth_secrets(auth)
        with _registry_errors(f"cannot query {reference}", secrets):
            try:
                data = self.client.api.inspect_distribution(
                    reference, auth_config=dict(auth) if auth is not None else None
                )
            except docker.errors.NotFound:
                return None
        digest: str = data["Descriptor"]["digest"]
        return digest

    def repo_digests(self, reference: str) -> list[str]:
        """The local image's `name@sha256:...` references (one per registry repository it was pushed to)."""
        digests: list[str] = self.image_attrs(reference).get("RepoDigests") or []
        return digests

    def pull_by_digest(self, repository: str, digest: str, *, auth: Mapping[str, str] | None) -> str:
        """Pull `repository@digest`; returns the local image id. RegistryError on failure."""
        secrets = auth_secrets(auth)
        where = f"{repository}@{digest}"
        try:
            image = self.client.images.pull(
                repository, tag=digest, auth_config=dict(auth) if auth is not None else None
            )
        except docker.errors.APIError as exc:
            raise RegistryError(redact(f"cannot pull {where}: {_explain(exc)}", secrets)) from None
        except requests.exceptions.RequestException as exc:
            raise RegistryError(redact(f"cannot pull {where}: {exc}", secrets)) from None
        image_id: str = image.id
        return image_id


def step_output(lines: Sequence[str]) -> list[str]:
    """The log lines after the last `Step N/M :` line: what the failing step printed."""
    for index in range(len(lines) - 1, -1, -1):
        if STEP_RE.match(lines[index].strip()):
            return list(lines[index + 1 :])
    return list(lines)


def tool_error(lines: Sequence[str]) -> str | None:
    """The failing tool's own error line in a step's output, without its prefix; None when there is none.

    The last error line decides which tool failed: pip's last `ERROR:` line names the cause ("No matching
    distribution found for ..."); apt prints its cause first ("E: Unable to locate package ..."), then
    consequences, so for apt the first line of that last run of `E:` lines is taken.
    """
    found = [
        (i, m) for i, line in enumerate(lines) if (m := TOOL_ERROR_RE.match(ANSI_RE.sub("", line).strip()))
    ]
    if not found:
        return None
    index, match = found[-1]
    if match["kind"] == "E":
        for earlier, other in reversed(found[:-1]):
            if other["kind"] != "E" or earlier != index - 1:
                break
            index, match = earlier, other
    return match["message"].strip()


def failure_summary(step: str, error: str, output: Sequence[str]) -> str:
    """One line for a failed build: the step and the failing tool's own error line, else the engine's."""
    where = " ".join(step.split())
    where = where if len(where) <= 100 else where[:97] + "..."
    code = re.search(r"returned a non-zero code: (\d+)", error)
    cause = tool_error(output)
    if cause and code:
        reason = f"{cause} (exit {code[1]})"
    elif code:
        reason = f"the command {code[0]}"
    else:
        reason = cause or error or "no image produced"
    return f"build failed at {where or 'the start'}: {reason}"


# --- credentials the Docker CLI stored ---------------------------------------------------------------
# docker-py's `docker.auth` reads what `docker login` writes and asks credential helpers; it is called here
# because this is the one module that imports docker-py and turns its errors into ours.


def stored_auth(config: Mapping[str, Any], host: str, *, where: str) -> dict[str, str] | None:
    """docker-py's `auth_config` for `host` from a parsed Docker config file (`auths`, `credHelpers`,
    `credsStore`); None when it holds nothing for the host. ConfigError names `where` and the key."""
    if not config:
        return None  # docker-py would read the default config file instead of an empty dict
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing helper is reported when it is asked, below
            found = docker.auth.resolve_authconfig(docker.auth.load_config(config_dict=dict(config)), host)
    except docker.errors.InvalidConfigFile as exc:
        raise ConfigError(f"{where}: auths: {exc}") from None
    except docker.errors.DockerException as exc:  # a credential helper failed (not: found nothing)
        key = "credHelpers" if host in (config.get("credHelpers") or {}) else "credsStore"
        raise ConfigError(f"{where}: {key}: {exc.__cause__ or exc}") from None
    except ValueError:  # binascii.Error, UnicodeDecodeError, no ':' in the decoded value
        raise ConfigError(f"{where}: auths: an `auth` value is not base64 of user:password") from None
    found = {key.lower(): str(value) for key, value in (found or {}).items() if value}
    if found.get("identitytoken"):
        return {"identitytoken": found["identitytoken"], "serveraddress": host}
    if found.get("username") and found.get("password"):
        return {"username": found["username"], "password": found["password"], "serveraddress": host}
    return None


def context_tar(files: Mapping[str, bytes]) -> io.BytesIO:
    """A deterministic tar of the build context: sorted names, fixed format, mtimes, owners and modes, so
    equal files give equal bytes. Folders get entries of their own (0755, as a checkout has them): the
    engine's cache key for `COPY folder/` covers the folder's entry, so with them a plain `docker build`
    of the checkout and the tool's builds share layers."""
    buffer = io.BytesIO()
    folders = {str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(folders | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if name in folders:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
                continue
            data = files[name]
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@contextmanager
def _registry_errors(what: str, secrets: Iterable[str]) -> Iterator[None]:
    """Turn the engine's errors on a registry call into one redacted RegistryError line starting with what."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise RegistryError(redact(f"{what}: {_explain(exc)}", secrets)) from None
    except requests.exceptions.RequestException as exc:
        raise RegistryError(redact(f"{what}: the engine stopped answering ({exc})", secrets)) from None


def _explain(exc: docker.errors.APIError) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)
