"""The full variant as a development environment, in real containers: Jupyter Lab, SSH, stop, uid, compilers.

Every port is published on 127.0.0.1 only. The CUDA 13.0 image is built through the CLI like any cell. The
CPU image needs torchvision 0.28.0+cpu, which only download.pytorch.org serves; the sandbox reaches PyPI
alone, whose 0.28.0 is a CUDA build that does not import next to CPU torch. So the CPU image is built from
the same templates with the sandbox as its wheel index (public pins) and without the tag gate, and its smoke
suite must pass except for torchvision.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests
import yaml

from builder.build import cell_lock, gate, lock, pipeline
from builder.build.engine import Engine
from builder.build.render import SHIPPED_TEMPLATES, Renderer
from builder.model import matrix, profiles
from builder.output import Output
from tests.conftest import REPO
from tests.integration.conftest import Cli
from tools.sandbox import SandboxInfo

pytestmark = pytest.mark.integration

CPU_TAG = "2.13-cpu-debian12-full"
CUDA_TAG = "2.14-cuda13.0-debian12-full"
TOKEN_LINE = re.compile(r"Jupyter Lab: http://127\.0\.0\.1:8888/lab\?token=([0-9a-f]{48})\b")
HOST_UID = 4321
STARTUP_LIMIT_S = 30.0  # "within seconds"; measured values are printed

CPP_EXTENSION = r"""
import time, torch
from torch.utils.cpp_extension import load_inline
started = time.monotonic()
ext = load_inline(
    name="add_one_cpu",
    cpp_sources="torch::Tensor add_one(torch::Tensor x) { return x + 1; }",
    functions=["add_one"],
)
assert torch.equal(ext.add_one(torch.zeros(3)), torch.ones(3))
print(f"built in {time.monotonic() - started:.1f} s")
"""

CUDA_EXTENSION = r"""
import glob, os, time
from torch.utils.cpp_extension import load_inline
started = time.monotonic()
cuda_src = '''
__global__ void add_one_kernel(float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}
torch::Tensor add_one(torch::Tensor x) {
  add_one_kernel<<<(x.numel() + 255) / 256, 256>>>(x.data_ptr<float>(), x.numel());
  return x;
}
'''
build_dir = "/tmp/ext-sm90"
os.makedirs(build_dir, exist_ok=True)
load_inline(
    name="add_one_cuda",
    cpp_sources="torch::Tensor add_one(torch::Tensor x);",
    cuda_sources=cuda_src,
    functions=["add_one"],
    build_directory=build_dir,
)
ninja = open(os.path.join(build_dir, "build.ninja")).read()
assert "code=sm_90" in ninja, ninja
assert glob.glob(os.path.join(build_dir, "*.so"))
print(f"compiled in {time.monotonic() - started:.1f} s")
"""


@dataclass
class FullImage:
    tag: str
    reference: str
    is_cuda: bool


@contextmanager
def sandbox_environment(sandbox_info: SandboxInfo) -> Iterator[None]:
    with mock.patch.dict(os.environ, {**sandbox_info.profile_env(), "MIRROR": "local"}):
        yield


def build_cpu_full(engine: Engine, sandbox_info: SandboxInfo, workdir: Path) -> FullImage:
    """The CPU full image from the repository's templates, with the sandbox as the cell's wheel index."""
    shutil.copytree(SHIPPED_TEMPLATES, workdir / "templates")
    spec = yaml.safe_load((REPO / "matrix.yaml").read_text())
    override = {"select": CPU_TAG, "wheel_index": sandbox_info.pypi_url}
    spec["overrides"] = [*spec.get("overrides", []), override]
    (workdir / "matrix.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with sandbox_environment(sandbox_info):
        m = matrix.load(workdir / "matrix.yaml")
        cell = m.cell(CPU_TAG)
        profile = profiles.resolve(m, "local")
        # its own wheel index changes its hash lock's input: lock it (and its slim sibling) here
        unlocked: dict[str, dict[str, str]] = {}
        locked = cell_lock.update([m.cell(cell_lock.slim_tag(cell)), cell], profile, workdir, unlocked)
        assert not locked.refused, [r.refused for r in locked.refused]
        built = pipeline.build_cell(
            engine,
            Renderer(workdir / "templates"),
            cell,
            profile,
            out=workdir / "images",
            output=Output(),
            run_smoke=False,
            lock_data=lock.read(workdir / "matrix.lock"),
        )
    report = gate.run(engine, built.image_id)
    failed = {c["name"] for c in report.failures()}
    assert failed <= {"torchvision"}, report.table()
    print(f"{CPU_TAG}: {built.size_bytes / 1e9:.2f} GB, built in {built.build_seconds:.0f} s")
    return FullImage(tag=CPU_TAG, reference=built.tags[0], is_cuda=False)


@pytest.fixture(scope="module", params=[CPU_TAG, pytest.param(CUDA_TAG, marks=pytest.mark.slow)])
def image(
    request: pytest.FixtureRequest,
    engine: Engine,
    sandbox_info: SandboxInfo,
    cli: Cli,
    tmp_path_factory: pytest.TempPathFactory,
) -> FullImage:
    if request.param == CPU_TAG:
        return build_cpu_full(engine, sandbox_info, tmp_path_factory.mktemp("cpu-full"))
    free_gb = shutil.disk_usage("/").free / 1e9
    if free_gb < 25:
        pytest.skip(f"{free_gb:.0f} GB free; the CUDA full image needs about 25 GB to build")
    result = cli("build", CUDA_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    size = engine.image_attrs(f"pytorch-cuda-images:{CUDA_TAG}")["Size"]
    print(f"{CUDA_TAG}: {size / 1e9:.2f} GB")
    return FullImage(tag=CUDA_TAG, reference=f"pytorch-cuda-images:{CUDA_TAG}", is_cuda=True)


# --- helpers ------------------------------------------------------------------------------------------


def host_port(container: Any, port: str) -> int:
    container.reload()
    return int(container.ports[port][0]["HostPort"])


def loopback_ports(*ports: str) -> dict[str, tuple[str, None]]:
    return {port: ("127.0.0.1", None) for port in ports}


def logs(container: Any) -> str:
    return str(container.logs().decode("utf-8", "replace"))


def http() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback: no proxy
    return session


def get(url: str, token: str | None = None) -> requests.Response:
    """A GET in a fresh session: no login cookie from an earlier answer."""
    headers = {"Authorization": f"token {token}"} if token else {}
    with http() as session:
        return session.get(url, headers=headers, timeout=5)


def wait_for_jupyter(container: Any, token: str, timeout: float = 60) -> float:
    """Seconds until /api/status answers 200 with the token, counted from this call."""
    port = host_port(container, "8888/tcp")
    started = time.monotonic()
    with http() as session:
        while time.monotonic() - started < timeout:
            try:
                reply = session.get(
                    f"http://127.0.0.1:{port}/api/status",
                    headers={"Authorization": f"token {token}"},
                    timeout=2,
                )
                if reply.status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            container.reload()
            assert container.status == "running", logs(container)
            time.sleep(0.2)
    raise AssertionError(f"Jupyter did not answer within {timeout} s:\n{logs(container)}")


def generated_token(container: Any, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = TOKEN_LINE.search(logs(container))
        if found:
            return found[1]
        time.sleep(0.2)
    raise AssertionError(f"no token line in the logs:\n{logs(container)}")


def make_key(directory: Path, name: str) -> tuple[Path, str]:
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key, (directory / f"{name}.pub").read_text().strip()


def ssh(
    port: int,
    key: Path,
    *command: str,
    user: str = "dev",
    options: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh",
            "-p",
            str(port),
            "-i",
            str(key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            *options,
            f"{user}@127.0.0.1",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def wait_for_ssh(port: int, key: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        result = ssh(port, key, "true")
        if result.returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"ssh never succeeded: {result.stderr if result else ''}")


def docker_run(
    image: FullImage,
    *command: str,
    entrypoint: str | None = None,
    env: dict[str, str] | None = None,
    volume: str | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    args = ["docker", "run", "--rm", "--pull", "never"]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    for name, value in (env or {}).items():
        args += ["-e", f"{name}={value}"]
    if volume:
        args += ["-v", volume]
    return subprocess.run(
        [*args, image.reference, *command], capture_output=True, text=True, timeout=timeout, check=False
    )


# --- Jupyter ------------------------------------------------------------------------------------------


def test_jupyter_generates_a_token_prints_it_once_and_requires_it(image: FullImage, engine: Engine) -> None:
    started = time.monotonic()
    with engine.container(image.reference, ["lab"], ports=loopback_ports("8888/tcp", "22/tcp")) as container:
        token = generated_token(container)
        wait_for_jupyter(container, token)
        seconds = time.monotonic() - started
        print(f"{image.tag}: Jupyter answered 200 {seconds:.1f} s after the container was created")
        assert seconds < STARTUP_LIMIT_S
        port = host_port(container, "8888/tcp")
        url = f"http://127.0.0.1:{port}/api/status"
        assert get(url, token).status_code == 200
        assert get(url).status_code == 403
        assert get(url, "wrong").status_code == 403
        assert get(f"{url}?token={token}").status_code == 200
        assert get(f"http://127.0.0.1:{port}/api/contents/made-by-jupyter", token).status_code == 404
        with http() as session:  # a file saved through Jupyter lands in /workspace, owned by dev
            saved = session.put(
                f"http://127.0.0.1:{port}/api/contents/made-by-jupyter.txt",
                timeout=5,
                headers={"Authorization": f"token {token}"},
                json={"type": "file", "format": "text", "content": "hi"},
            )
            assert saved.status_code == 201, saved.text
        owner = container.exec_run(["stat", "-c", "%U", "/workspace/made-by-jupyter.txt"])
        assert owner.output.decode().strip() == "dev"
        output = logs(container)
        assert output.count(token) == 1, output
        assert "/workspace" in output


def test_jupyter_takes_the_token_from_the_environment(image: FullImage, engine: Engine) -> None:
    token = "tok-" + os.urandom(12).hex()
    with engine.container(
        image.reference, ["lab"], env={"JUPYTER_TOKEN": token}, ports=loopback_ports("8888/tcp")
    ) as container:
        wait_for_jupyter(container, token)
        port = host_port(container, "8888/tcp")
        assert get(f"http://127.0.0.1:{port}/api/status").status_code == 403
        assert get(f"http://127.0.0.1:{port}/api/status", token).status_code == 200
        assert token not in logs(container)


def test_an_empty_token_is_never_used(image: FullImage, engine: Engine) -> None:
    with engine.container(
        image.reference, ["lab"], env={"JUPYTER_TOKEN": ""}, ports=loopback_ports("8888/tcp")
    ) as container:
        token = generated_token(container)
        wait_for_jupyter(container, token)
        port = host_port(container, "8888/tcp")
        assert get(f"http://127.0.0.1:{port}/api/status").status_code == 403
    env = engine.image_attrs(image.reference)["Config"]["Env"]
    assert not [item for item in env if item.startswith(("JUPYTER_TOKEN", "PASSWORD"))]


# --- SSH ----------------------------------------------------------------------------------------------


def test_ssh_is_key_only(image: FullImage, engine: Engine, tmp_path: Path) -> None:
    key, public = make_key(tmp_path, "right")
    wrong, _ = make_key(tmp_path, "wrong")
    with engine.container(
        image.reference,
        ["lab"],
        env={"SSH_AUTHORIZED_KEYS": public},
        ports=loopback_ports("22/tcp", "8888/tcp"),
    ) as container:
        port = host_port(container, "22/tcp")
        wait_for_ssh(port, key)
        # A session has the container's Python (venv, torch) and lands as the non-root user.
        script = "id -un; python -c 'import torch; print(torch.__version__)'; echo $VIRTUAL_ENV"
        result = ssh(port, key, script)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["dev", result.stdout.split()[1], "/opt/venv"]
        assert result.stdout.split()[1].startswith(("2.13.", "2.14."))
        login = ssh(port, key, "bash", "-lc", "'command -v python'")
        assert login.stdout.strip() == "/opt/venv/bin/python", login.stderr
        if image.is_cuda:
            nvcc = ssh(port, key, "nvcc --version")
            assert nvcc.returncode == 0 and "release 13.0" in nvcc.stdout, nvcc.stderr

        refused = ssh(port, wrong, "true")
        assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr
        # The server offers publickey alone: a password is not even asked for.
        no_key = (
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
        )
        password = ssh(port, wrong, "true", options=no_key)
        assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr
        # root is refused even with a valid key in its authorized_keys.
        setup = container.exec_run(
            [
                "sh",
                "-c",
                "mkdir -p /root/.ssh && cp /etc/ssh/authorized_keys/dev "
                "/root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys",
            ]
        )
        assert setup.exit_code == 0
        root = ssh(port, key, "true", user="root")
        assert root.returncode == 255 and "Permission denied" in root.stderr


def test_ssh_takes_a_mounted_authorized_keys(image: FullImage, engine: Engine, tmp_path: Path) -> None:
    key, public = make_key(tmp_path, "mounted")
    keys = tmp_path / "authorized_keys"
    keys.write_text(public + "\n")
    keys.chmod(0o644)
    with engine.container(
        image.reference,
        ["ssh"],
        ports=loopback_ports("22/tcp"),
        volumes={str(keys): {"bind": "/home/dev/.ssh/authorized_keys", "mode": "ro"}},
    ) as container:
        port = host_port(container, "22/tcp")
        wait_for_ssh(port, key)
        assert ssh(port, key, "id -un").stdout.strip() == "dev"


def test_host_keys_are_made_per_container_never_baked(image: FullImage, engine: Engine) -> None:
    baked = docker_run(image, "-c", "ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l", entrypoint="sh")
    assert baked.stdout.strip() == "0", baked.stdout
    fingerprints = []
    for _ in range(2):
        with engine.container(image.reference, ["ssh"], env={"SSH_AUTHORIZED_KEYS": ""}) as container:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                result = container.exec_run(["ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"])
                if result.exit_code == 0:
                    fingerprints.append(result.output.decode().split()[1])
                    break
                time.sleep(0.2)
    assert len(fingerprints) == 2 and fingerprints[0] != fingerprints[1]


# --- stop, user, workspace ----------------------------------------------------------------------------


def test_docker_stop_is_clean_and_quick(image: FullImage, engine: Engine, tmp_path: Path) -> None:
    key, public = make_key(tmp_path, "stop")
    token = "stop-" + os.urandom(8).hex()
    env = {"JUPYTER_TOKEN": token, "SSH_AUTHORIZED_KEYS": public}
    with engine.container(
        image.reference, ["lab"], env=env, ports=loopback_ports("8888/tcp", "22/tcp")
    ) as container:
        wait_for_jupyter(container, token)
        wait_for_ssh(host_port(container, "22/tcp"), key)
        port = host_port(container, "8888/tcp")
        with http() as session:  # a running kernel, as in real use
            kernel = session.post(
                f"http://127.0.0.1:{port}/api/kernels",
                timeout=30,
                headers={"Authorization": f"token {token}"},
            )
            assert kernel.status_code == 201, kernel.text
        started = time.monotonic()
        container.stop(timeout=10)
        seconds = time.monotonic() - started
        status = container.wait(timeout=30)
        print(f"{image.tag}: docker stop took {seconds:.2f} s, exit code {status['StatusCode']}")
        assert status["StatusCode"] == 0, logs(container)
        assert seconds < 10


def test_files_in_the_workspace_belong_to_the_host_user(image: FullImage, tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    os.chown(workspace, HOST_UID, HOST_UID)
    result = docker_run(
        image,
        "bash",
        "-c",
        "id -un; id -u; id -g; echo hi > /workspace/made-here",
        env={"HOST_UID": str(HOST_UID), "HOST_GID": str(HOST_UID)},
        volume=f"{workspace}:/workspace",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["dev", str(HOST_UID), str(HOST_UID)]
    made = (workspace / "made-here").stat()
    assert (made.st_uid, made.st_gid) == (HOST_UID, HOST_UID)
    # Without HOST_UID the mounted folder keeps its owner (the entrypoint never chowns a mount).
    other = tmp_path / "other"
    other.mkdir()
    os.chown(other, HOST_UID, HOST_UID)
    assert docker_run(image, "true", volume=f"{other}:/workspace").returncode == 0
    assert other.stat().st_uid == HOST_UID


def test_bad_host_uid_is_refused(image: FullImage) -> None:
    for value in ("0", "abc"):
        result = docker_run(image, "true", env={"HOST_UID": value})
        assert result.returncode == 2 and "HOST_UID" in result.stderr


# --- compilers ----------------------------------------------------------------------------------------


def test_cpp_extension_builds(image: FullImage) -> None:
    started = time.monotonic()
    result = docker_run(image, "python", "-c", CPP_EXTENSION)
    assert result.returncode == 0, result.stdout + result.stderr
    total = time.monotonic() - started
    print(f"{image.tag}: C++ extension {result.stdout.strip()} ({total:.1f} s with the container)")


@pytest.mark.parametrize("image", [pytest.param(CUDA_TAG, marks=pytest.mark.slow)], indirect=True)
def test_cuda_extension_compiles_for_sm90(image: FullImage) -> None:
    assert image.is_cuda
    result = docker_run(image, "python", "-c", CUDA_EXTENSION, env={"TORCH_CUDA_ARCH_LIST": "9.0"})
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    print(f"{image.tag}: CUDA extension for sm_90 {result.stdout.strip()}")
