"""Real builds through the loopback mirrors: the CLI as users run it, a real engine, real containers."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from builder.build.sbom import SBOM_LABEL, SBOM_PATH
from builder.model.naming import RUNS_DIR, requirements_name, requirements_path
from tests.conftest import REPO
from tests.integration.conftest import Cli, checkout_copy, plain_docker_build

pytestmark = pytest.mark.integration

CPU_TAG = "2.13-cpu-debian12"
CPU_IMAGE = f"pytorch-cuda-images:{CPU_TAG}"
CUDA_TAG = "2.14-cuda13.0-debian12"
CUDA_IMAGE = f"pytorch-cuda-images:{CUDA_TAG}"
NAIVE_CUDA_IMAGE_BYTES = 6.01e9  # measured: naive single-stage build of the same content


def image_id(engine, reference: str) -> str | None:  # type: ignore[no-untyped-def]
    return engine.image_attrs(reference)["Id"] if engine.image_exists(reference) else None


def add_override(project: Path, override: dict[str, object]) -> None:
    spec = yaml.safe_load((project / "matrix.yaml").read_text())
    spec["overrides"] = [*spec.get("overrides", []), override]
    (project / "matrix.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def docker_exec(image: str, *command: str) -> str:
    return subprocess.run(
        ["docker", "run", "--rm", "--pull", "never", "--entrypoint", "", image, *command],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout


@pytest.fixture(scope="module")
def cpu_build(cli: Cli) -> subprocess.CompletedProcess[str]:
    result = cli("build", CPU_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_cpu_build_smoke_tests_and_tags(cpu_build: subprocess.CompletedProcess[str], engine) -> None:  # type: ignore[no-untyped-def]
    assert "smoke tests passed" in cpu_build.stderr
    assert f"tagged {CPU_IMAGE}, pytorch-cuda-images:2.13.0-cpu-debian12" in cpu_build.stdout
    assert f"run it: docker run --rm -it {CPU_IMAGE}" in cpu_build.stdout
    assert image_id(engine, CPU_IMAGE) == image_id(engine, "pytorch-cuda-images:2.13.0-cpu-debian12")


def test_cpu_image_carries_labels(cpu_build: subprocess.CompletedProcess[str], engine) -> None:  # type: ignore[no-untyped-def]
    labels = engine.image_attrs(CPU_IMAGE)["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "2.13.0-cpu-debian12"
    assert labels["org.opencontainers.image.base.name"].endswith("/library/debian:12")
    assert labels["org.opencontainers.image.base.digest"].startswith("sha256:")
    assert (
        len(labels["org.opencontainers.image.revision"]) in (40, 7)
        or labels["org.opencontainers.image.revision"] == "unknown"
    )
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert labels["dev.pytorch-cuda-images.torch"] == "2.13.0"
    assert labels["dev.pytorch-cuda-images.cuda"] == "none"
    assert labels["dev.pytorch-cuda-images.variant"] == "slim"
    assert len(labels["dev.pytorch-cuda-images.content-hash"]) == 64


def test_cpu_image_uses_the_profile_mirrors(
    cpu_build: subprocess.CompletedProcess[str], local_env: dict[str, str]
) -> None:
    pip_conf = docker_exec(CPU_IMAGE, "cat", "/etc/pip.conf")
    assert f"index-url = {local_env['SANDBOX_PYPI_URL']}" in pip_conf
    freeze = docker_exec(CPU_IMAGE, "pip", "freeze")
    assert "torch==2.13.0+cpu" in freeze


def test_build_log_is_written(cpu_build: subprocess.CompletedProcess[str], repo: Path) -> None:
    log = (repo / RUNS_DIR / CPU_TAG / "build.log").read_text()
    assert "Step 1/" in log
    assert "Successfully built" in log


def test_rebuild_is_cached_and_fast(cpu_build: subprocess.CompletedProcess[str], cli: Cli) -> None:
    started = time.monotonic()
    result = cli("build", CPU_TAG, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.monotonic() - started < 60
    doc = json.loads(result.stdout)  # --json: the one document, the human lines on stderr
    assert doc["tags"] == [CPU_IMAGE, "pytorch-cuda-images:2.13.0-cpu-debian12"]
    assert doc["smoke"]["passed"] is True and len(doc["content_hash"]) == 64
    assert f"run it: docker run --rm -it {CPU_IMAGE}" in result.stderr


def test_smoke_json_is_one_document_on_stdout(cpu_build: subprocess.CompletedProcess[str], cli: Cli) -> None:
    """`python -m builder smoke TAG --json | python -m json.tool` works."""
    result = cli("smoke", CPU_TAG, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=result.stdout, capture_output=True, text=True, check=False
    )
    assert tool.returncode == 0, result.stdout[-2000:]
    doc = json.loads(tool.stdout)
    assert doc["passed"] is True and doc["tag"] == CPU_TAG
    assert {c["name"] for c in doc["checks"]} >= {"python", "torch", "numpy"}
    assert f"{CPU_IMAGE}: smoke tests passed" in result.stderr


def test_a_matrix_outside_the_checkout_builds_from_any_directory(
    cpu_build: subprocess.CompletedProcess[str], local_env: dict[str, str], engine, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """`build --matrix` of a team's own matrix.yaml: images/ goes next to it, the shipped templates and
    smoke suite are used, and the build (the same context) comes from the cache of the checkout's build."""
    project, elsewhere = tmp_path / "team-repo", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    shutil.copy(REPO / "matrix.yaml", project / "matrix.yaml")
    # the team's repository holds its locks next to its matrix (what `lock --update` writes there)
    shutil.copy(REPO / "matrix.lock", project / "matrix.lock")
    (project / requirements_path(CPU_TAG)).parent.mkdir(parents=True)
    shutil.copy(REPO / requirements_path(CPU_TAG), project / requirements_path(CPU_TAG))
    layers = engine.image_attrs(CPU_IMAGE)["RootFS"]["Layers"]
    result = Cli(env=local_env, cwd=elsewhere)("build", CPU_TAG, "--matrix", str(project / "matrix.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "smoke tests passed" in result.stderr
    cell_dir = project / "images" / CPU_TAG
    assert (cell_dir / "Dockerfile").read_bytes() == (REPO / "images" / CPU_TAG / "Dockerfile").read_bytes()
    assert "Successfully built" in (elsewhere / RUNS_DIR / CPU_TAG / "build.log").read_text()
    assert sorted(p.name for p in cell_dir.iterdir()) == ["Dockerfile", "cell.json", requirements_name()]
    assert not (elsewhere / "images").exists()
    assert engine.image_attrs(CPU_IMAGE)["RootFS"]["Layers"] == layers


def test_docker_build_without_the_tool_builds_the_same_layers(
    cpu_build: subprocess.CompletedProcess[str], local_env: dict[str, str], engine, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The documented command, from a checkout (the profile's CA in certs/, as a team behind a TLS proxy
    would put it): the root .dockerignore keeps the context small, and every layer comes from the cache of
    the tool's build, so both build the same image."""
    checkout = checkout_copy(tmp_path / "checkout")
    result, image = plain_docker_build(checkout, CPU_TAG, local_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    try:
        sent = re.search(r"Sending build context to Docker daemon\s+([\d.]+)kB", result.stdout)
        assert sent, result.stdout[:2000]
        checkout_kb = sum(p.stat().st_size for p in checkout.rglob("*") if p.is_file()) / 1000
        assert float(sent[1]) < checkout_kb / 2, (sent[0], checkout_kb)
        assert "Using cache" in result.stdout and " ---> Running in " not in result.stdout
        # The tool's image is the same layers plus one it adds after the gate passed: the SBOM.
        tool = engine.image_attrs(CPU_IMAGE)
        assert tool["RootFS"]["Layers"][:-1] == engine.image_attrs(image)["RootFS"]["Layers"]
        assert tool["Config"]["Labels"][SBOM_LABEL] == SBOM_PATH
    finally:
        engine.remove_image(image, keep_parents=True)


def test_no_engine_is_exit_3_with_one_line(cli: Cli) -> None:
    result = cli("build", CPU_TAG, extra_env={"DOCKER_HOST": "tcp://127.0.0.1:9"})
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Docker engine answers at tcp://127.0.0.1:9" in lines[0]
    assert "Traceback" not in result.stderr


def test_failed_build_names_the_step_and_tags_nothing(
    cpu_build, project_copy: Path, local_env, engine
) -> None:  # type: ignore[no-untyped-def]
    before = image_id(engine, CPU_IMAGE)
    add_override(project_copy, {"select": CPU_TAG, "snippet": "RUN echo about-to-fail && exit 7"})
    result = Cli(env=local_env, cwd=project_copy)("build", CPU_TAG, "--out", str(project_copy / "images"))
    assert result.returncode == 1
    assert "build failed at Step" in result.stderr and "exit 7" in result.stderr
    assert "about-to-fail" in result.stderr  # the log tail
    assert "Traceback" not in result.stderr
    assert image_id(engine, CPU_IMAGE) == before


def test_failed_pip_step_quotes_pips_error(cpu_build, project_copy: Path, local_env, engine) -> None:  # type: ignore[no-untyped-def]
    before = image_id(engine, CPU_IMAGE)
    missing = "pci-no-such-package==0.0.1"
    add_override(project_copy, {"select": CPU_TAG, "snippet": f"RUN pip install --no-cache-dir {missing}"})
    result = Cli(env=local_env, cwd=project_copy)("build", CPU_TAG, "--out", str(project_copy / "images"))
    assert result.returncode == 1
    first = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert first.startswith("error: build failed at Step")
    assert f"No matching distribution found for {missing} (exit 1)" in first, first
    assert "Traceback" not in result.stderr
    assert image_id(engine, CPU_IMAGE) == before


def test_failed_smoke_test_tags_nothing(cpu_build, project_copy: Path, local_env, engine) -> None:  # type: ignore[no-untyped-def]
    before = image_id(engine, CPU_IMAGE)
    add_override(project_copy, {"select": CPU_TAG, "snippet": "RUN pip uninstall --yes numpy"})
    result = Cli(env=local_env, cwd=project_copy)("build", CPU_TAG, "--out", str(project_copy / "images"))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "smoke tests failed: numpy" in result.stderr
    assert image_id(engine, CPU_IMAGE) == before


def test_missing_base_image_names_the_reference(cli: Cli, local_env: dict[str, str]) -> None:
    result = cli("build", "2.14-cuda13.0-ubuntu24.04")  # hash-locked (torch from PyPI), base not mirrored
    assert result.returncode == 1
    assert f"{local_env['SANDBOX_REGISTRY']}/library/ubuntu:24.04" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_cell_without_a_hash_lock_is_refused_never_built_unlocked(cli: Cli, engine) -> None:  # type: ignore[no-untyped-def]
    tag = "2.13-cpu-ubuntu24.04"  # its torch is only on download.pytorch.org, which cannot be reached here
    result = cli("build", tag)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no hash lock" in errors[0] and "never built unlocked" in errors[0], errors
    assert "download.pytorch.org" in errors[0]
    assert image_id(engine, f"pytorch-cuda-images:{tag}") is None


def test_unreachable_mirror_names_url_and_profile(cli: Cli) -> None:
    result = cli("build", CPU_TAG, extra_env={"SANDBOX_PYPI_URL": "http://127.0.0.1:9/simple"})
    assert result.returncode == 1
    assert "mirror profile 'local': http://127.0.0.1:9/simple/ is unreachable" in result.stderr


def test_interrupt_leaves_no_tag_and_no_container(cpu_build, project_copy: Path, local_env, engine) -> None:  # type: ignore[no-untyped-def]
    before = image_id(engine, CPU_IMAGE)
    containers_before = {c.id for c in engine.client.containers.list(all=True)}
    marker = f"long-step-{uuid.uuid4().hex[:8]}"  # a layer cache never holds this step finished
    add_override(project_copy, {"select": CPU_TAG, "snippet": f"RUN echo {marker} && sleep 120"})
    log = project_copy / RUNS_DIR / CPU_TAG / "build.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "build", CPU_TAG, "--out", str(project_copy / "images")],
        cwd=project_copy,
        env=local_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (log.exists() and marker in log.read_text()):
        time.sleep(0.5)
    assert log.exists() and marker in log.read_text(), "the build never reached the long step"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    time.sleep(5)  # the engine cancels the build when the client goes away
    left = {c.id for c in engine.client.containers.list(all=True)} - containers_before
    assert not left, f"dangling containers after Ctrl-C: {left}"
    assert image_id(engine, CPU_IMAGE) == before


@pytest.mark.slow
def test_cuda_slim_image_from_local_wheels(cli: Cli, engine) -> None:  # type: ignore[no-untyped-def]
    result = cli("build", CUDA_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(
        (Path(__file__).resolve().parents[2] / RUNS_DIR / CUDA_TAG / "smoke-result.json").read_text()
    )
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["cuda_version"]["status"] == "pass" and "13.0" in checks["cuda_version"]["detail"]
    assert checks["cudnn"]["status"] == "pass" and "9" in checks["cudnn"]["detail"]
    assert checks["nccl_version"]["status"] == "pass"
    assert checks["arch_list"]["status"] == "pass" and "sm_90" in checks["arch_list"]["detail"]
    for name in ("gpu_matmul_fp32", "gpu_conv2d", "gpu_nccl"):
        assert checks[name]["status"] == "skipped" and "no GPU" in checks[name]["detail"]
    size = engine.image_attrs(CUDA_IMAGE)["Size"]
    assert size <= NAIVE_CUDA_IMAGE_BYTES, f"{size / 1e9:.2f} GB > naive 6.01 GB"


@pytest.mark.slow
def test_require_gpu_without_gpu_fails_with_one_clear_line(cli: Cli) -> None:
    result = cli("smoke", CUDA_TAG, "--require-gpu")
    assert result.returncode == 1
    assert "no GPU visible" in result.stdout + result.stderr


def test_locked_base_digest_pins_the_build(cpu_build, project_copy: Path, local_env, engine) -> None:  # type: ignore[no-untyped-def]
    spec = yaml.safe_load((project_copy / "matrix.yaml").read_text())
    spec["mirrors"]["profiles"]["local"]["lock_bases"] = True
    (project_copy / "matrix.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = Cli(env=local_env, cwd=project_copy)
    updated = run("lock", "--update", "--only", CPU_TAG)
    assert updated.returncode == 0, updated.stderr[-2000:]
    digest = engine.pull(f"{local_env['SANDBOX_REGISTRY']}/library/debian:12")
    assert f"{local_env['SANDBOX_REGISTRY']}/library/debian:12: {digest}" in updated.stdout
    result = run("build", CPU_TAG, "--out", str(project_copy / "images"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"library/debian:12@{digest}" in result.stderr
    labels = engine.image_attrs(CPU_IMAGE)["Config"]["Labels"]
    assert labels["org.opencontainers.image.base.digest"] == digest
