"""The nightly matrix run through the real CLI: skip by content hash, continue past failures, push, time out a
hanging build, Ctrl-C, and builds N at a time. Registries are loopback `docker-registry` processes.

The run output (build logs, smoke results) lands in the report's run folder `cells/<tag>/`, never in the
rendered images/ tree."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.build.render import SHIPPED_TEMPLATES
from tests.conftest import REPO
from tests.integration.conftest import Cli
from tests.integration.loopback_registry import (
    LoopbackRegistry,
    serving_registry,
)

pytestmark = pytest.mark.integration

CPU_TAG = "2.13-cpu-debian12"
CPU_IMMUTABLE = "2.13.0-cpu-debian12"
CPU_IMAGE = f"pytorch-cuda-images:{CPU_TAG}"
MISSING_BASE_TAG = "2.13-cpu-ubuntu22.04"  # its base (ubuntu:22.04) is not in the sandbox registry
REPOSITORY = "nightly/pytorch-cuda-images"


def image_id(engine, reference: str) -> str | None:  # type: ignore[no-untyped-def]
    return engine.image_attrs(reference)["Id"] if engine.image_exists(reference) else None


def our_containers(engine, marker: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Containers (running or not) whose command holds `marker`: our build's step containers. Other test
    sessions may start containers concurrently, so only ours are counted."""
    found = []
    for container in engine.client.containers.list(all=True):
        config = container.attrs.get("Config") or {}
        command = " ".join([*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])])
        if marker in command:
            found.append(container.short_id)
    return found


def wait_no_containers(engine, marker: str, seconds: float = 15) -> list[str]:  # type: ignore[no-untyped-def]
    """Our containers still there after a few seconds (the engine cancels a build shortly after its client
    goes away)."""
    deadline = time.monotonic() + seconds
    left = our_containers(engine, marker)
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = our_containers(engine, marker)
    return left


def tagged_from(engine, reference: str, marker: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether the local `reference` is an image whose history holds `marker` (our override's step).

    Other test sessions may rebuild and retag the CPU cell concurrently, so "the tag did not move" is checked
    as "the tag does not point at anything our run built"."""
    if not engine.image_exists(reference):
        return False
    return any(marker in (row.get("CreatedBy") or "") for row in engine.history(reference))


def unique_marker(name: str) -> str:
    """A step marker no earlier run left in the layer cache (a finished `sleep` step would be cached)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"


def ignore_sigint() -> None:
    """As a script's background job starts: SIGINT ignored (the nightly must still stop on it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def step_output(log: Path, line: str) -> bool:
    """The build log shows `line` as a step's output (not just the step's instruction)."""
    return log.exists() and line in log.read_text().splitlines()


def add_override(project: Path, override: dict[str, object]) -> None:
    spec = yaml.safe_load((project / "matrix.yaml").read_text())
    spec["overrides"] = [*spec.get("overrides", []), override]
    (project / "matrix.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def nightly_args(tmp: Path, *extra: str) -> list[str]:
    return [
        "nightly",
        "--report",
        str(tmp / "report"),
        "--out",
        str(tmp / "images"),
        *extra,
    ]


def cell_log(tmp: Path, tag: str) -> Path:
    """Where a nightly leaves a cell's build log: the run folder inside the report folder."""
    return tmp / "report" / "cells" / tag / "build.log"


def no_run_output_in_images(tmp: Path, tag: str) -> bool:
    folder = tmp / "images" / tag
    return not (folder / "build.log").exists() and not (folder / "smoke-result.json").exists()


def report_results(tmp: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((tmp / "report" / "report.json").read_text())
    return {r["tag"]: r for r in data["results"]}


@pytest.fixture(scope="module")
def cpu_built(cli: Cli, engine, tmp_path_factory: pytest.TempPathFactory) -> str:  # type: ignore[no-untyped-def]
    """The CPU cell built and tagged (its layers cached), so the nightly's builds of it are quick."""
    out = tmp_path_factory.mktemp("cpu-build")
    result = cli("build", CPU_TAG, "--out", str(out / "images"))
    assert result.returncode == 0, result.stderr[-3000:]
    return str(image_id(engine, CPU_IMAGE))


@pytest.fixture(scope="module")
def push_registry(tmp_path_factory: pytest.TempPathFactory, engine) -> Iterator[LoopbackRegistry]:  # type: ignore[no-untyped-def]
    with serving_registry(tmp_path_factory.mktemp("nightly-registry"), engine) as registry:
        yield registry


@pytest.fixture(scope="module")
def push_env(push_registry: LoopbackRegistry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    docker_config = tmp_path_factory.mktemp("docker-config")
    return {
        "REGISTRY": f"{push_registry.host}/nightly",
        "DOCKER_CONFIG": str(docker_config),
        "PUSH_RETRY_MAX_S": "20",
    }


@pytest.fixture(scope="module")
def first_push(
    cli: Cli, cpu_built: str, push_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> subprocess.CompletedProcess[str]:
    tmp = tmp_path_factory.mktemp("nightly-push-1")
    result = cli(*nightly_args(tmp, "--only", CPU_TAG, "--push"), extra_env=push_env, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert report_results(tmp)[CPU_TAG]["status"] == "passed"
    return result


def test_a_missing_base_fails_its_cell_and_the_rest_goes_on(
    cli: Cli, cpu_built: str, local_env: dict[str, str], tmp_path: Path
) -> None:
    result = cli(*nightly_args(tmp_path, "--only", CPU_TAG, "--only", MISSING_BASE_TAG), timeout=1200)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    missing_ref = f"{local_env['SANDBOX_REGISTRY']}/library/ubuntu:22.04"
    failed = [line for line in result.stdout.splitlines() if line.startswith(f"FAILED {MISSING_BASE_TAG}")]
    assert failed and missing_ref in failed[0], result.stdout
    assert not any(line.startswith(f"FAILED {CPU_TAG}") for line in result.stdout.splitlines())
    results = report_results(tmp_path)
    assert results[CPU_TAG]["status"] in ("passed", "cached")
    assert results[MISSING_BASE_TAG]["status"] == "failed"
    assert missing_ref in results[MISSING_BASE_TAG]["detail"]
    page = (tmp_path / "report" / "index.html").read_text()
    assert CPU_TAG in page and MISSING_BASE_TAG in page


def test_a_second_run_resumes_and_builds_nothing(cli: Cli, cpu_built: str, tmp_path: Path) -> None:
    first = cli(*nightly_args(tmp_path / "1", "--only", CPU_TAG), timeout=1200)
    assert first.returncode == 0, first.stderr[-3000:]
    assert report_results(tmp_path / "1")[CPU_TAG]["status"] in ("passed", "cached")
    started = time.monotonic()
    second = cli(*nightly_args(tmp_path / "2", "--only", CPU_TAG), timeout=120)
    seconds = time.monotonic() - started
    assert second.returncode == 0, second.stderr[-3000:]
    assert report_results(tmp_path / "2")[CPU_TAG]["status"] == "cached"
    assert "0 to build" in second.stderr and f"{CPU_TAG}: building" not in second.stderr
    assert "1 cached" in second.stdout
    assert seconds < 10, f"a no-op nightly of one cell took {seconds:.1f} s"


def test_push_then_a_second_run_is_cached_and_pushes_nothing(
    cli: Cli,
    first_push: subprocess.CompletedProcess[str],
    push_registry: LoopbackRegistry,
    push_env: dict[str, str],
    tmp_path: Path,
) -> None:
    tags = push_registry.tags(REPOSITORY) or []
    assert CPU_IMMUTABLE in tags and CPU_TAG in tags, tags
    immutable = push_registry.digest(REPOSITORY, CPU_IMMUTABLE)
    assert immutable and push_registry.digest(REPOSITORY, CPU_TAG) == immutable
    log_size = push_registry.log_path.stat().st_size
    result = cli(*nightly_args(tmp_path, "--only", CPU_TAG, "--push"), extra_env=push_env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert report_results(tmp_path)[CPU_TAG]["status"] == "cached"
    assert "same content hash in the registry" in report_results(tmp_path)[CPU_TAG]["detail"]
    assert "0 to build" in result.stderr
    new_log = push_registry.log_path.read_bytes()[log_size:].decode(errors="replace")
    assert '"PUT ' not in new_log and '"POST ' not in new_log and '"PATCH ' not in new_log
    assert push_registry.digest(REPOSITORY, CPU_TAG) == immutable


def test_a_floating_tag_left_behind_by_a_crash_is_moved_by_the_next_run(
    cli: Cli,
    first_push: subprocess.CompletedProcess[str],
    push_registry: LoopbackRegistry,
    push_env: dict[str, str],
    local_env: dict[str, str],
    engine,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """A run died between the immutable tag and the floating one: the floating tag names another image."""
    immutable = push_registry.digest(REPOSITORY, CPU_IMMUTABLE)
    stale = f"{push_registry.host}/{REPOSITORY}:{CPU_TAG}"
    engine.tag(engine.image_attrs(local_env["SANDBOX_BASE_IMAGE"])["Id"], stale)
    try:
        engine.push(stale, auth=None)
    finally:
        engine.remove_image(stale, keep_parents=True)
    assert push_registry.digest(REPOSITORY, CPU_TAG) not in (None, immutable)
    result = cli(*nightly_args(tmp_path, "--only", CPU_TAG, "--push"), extra_env=push_env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    cell = report_results(tmp_path)[CPU_TAG]
    assert cell["status"] == "cached" and f"moved {stale}" in cell["detail"], cell
    assert "0 to build" in result.stderr
    assert push_registry.digest(REPOSITORY, CPU_TAG) == immutable


def test_a_hanging_build_is_stopped_at_its_timeout(
    cpu_built: str,
    project_copy: Path,
    local_env: dict[str, str],
    engine,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    marker = unique_marker("hang-step")  # a layer cache never holds this step finished
    add_override(project_copy, {"select": CPU_TAG, "snippet": f"RUN echo {marker} && sleep 600"})
    started = time.monotonic()
    result = Cli(env=local_env, cwd=project_copy)(
        *nightly_args(tmp_path, "--only", CPU_TAG, "--cell-timeout", "20"), timeout=300
    )
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert f"FAILED {CPU_TAG}: timeout" in result.stdout
    cell = report_results(tmp_path)[CPU_TAG]
    assert cell["status"] == "timeout" and "timeout of 20 s" in cell["detail"]
    assert seconds < 20 + 90, f"the nightly took {seconds:.0f} s to give up on a 20 s timeout"
    assert step_output(cell_log(tmp_path, CPU_TAG), marker)
    assert cell["log_path"] == f"cells/{CPU_TAG}/build.log"  # the report links the run folder's log
    assert no_run_output_in_images(tmp_path, CPU_TAG)
    left = wait_no_containers(engine, marker)
    assert not left, f"dangling containers after the timeout: {left}"
    assert not tagged_from(engine, CPU_IMAGE, marker)


def test_ctrl_c_stops_the_builds_writes_a_partial_report_and_moves_no_floating_tag(
    first_push: subprocess.CompletedProcess[str],
    push_registry: LoopbackRegistry,
    push_env: dict[str, str],
    project_copy: Path,
    local_env: dict[str, str],
    engine,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    marker = unique_marker("long-step")
    add_override(project_copy, {"select": CPU_TAG, "snippet": f"RUN echo {marker} && sleep 300"})
    floating_before = push_registry.digest(REPOSITORY, CPU_TAG)
    assert floating_before
    tags_before = push_registry.tags(REPOSITORY)
    log = cell_log(tmp_path, CPU_TAG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", *nightly_args(tmp_path, "--only", CPU_TAG, "--push")],
        cwd=project_copy,
        env={**local_env, **push_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ignore_sigint,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not step_output(log, marker):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        assert step_output(log, marker), "the build never ran the long step"
        assert our_containers(engine, marker), "no build container runs the long step"
        proc.send_signal(signal.SIGINT)  # the nightly only: it must pass the interrupt on to its builds
        started = time.monotonic()
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stdout[-2000:] + stderr[-3000:]
    assert time.monotonic() - started < 60
    assert "Traceback" not in stderr
    assert "partial report" in stderr
    assert report_results(tmp_path)[CPU_TAG]["status"] == "interrupted"
    left = wait_no_containers(engine, marker)
    assert not left, f"dangling containers after Ctrl-C: {left}"
    assert push_registry.digest(REPOSITORY, CPU_TAG) == floating_before
    assert push_registry.tags(REPOSITORY) == tags_before
    assert not tagged_from(engine, CPU_IMAGE, marker)
    assert no_run_output_in_images(tmp_path, CPU_TAG)


def test_a_failing_pip_step_is_named_by_pips_own_error_line(
    cpu_built: str, project_copy: Path, local_env: dict[str, str], tmp_path: Path
) -> None:
    missing = "pci-no-such-package==0.0.1"
    add_override(project_copy, {"select": CPU_TAG, "snippet": f"RUN pip install --no-cache-dir {missing}"})
    result = Cli(env=local_env, cwd=project_copy)(*nightly_args(tmp_path, "--only", CPU_TAG), timeout=600)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    cause = f"No matching distribution found for {missing}"
    cell = report_results(tmp_path)[CPU_TAG]
    assert cell["status"] == "failed"
    assert cause in cell["detail"] and "returned a non-zero code" not in cell["detail"], cell["detail"]
    failed = [line for line in result.stdout.splitlines() if line.startswith(f"FAILED {CPU_TAG}")]
    assert failed and cause in failed[0], result.stdout
    assert f"ERROR: {cause}" in cell_log(tmp_path, CPU_TAG).read_text()
    assert no_run_output_in_images(tmp_path, CPU_TAG)


def test_jobs_2_runs_two_builds_at_once(
    local_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Two plannable cells (Debian 12 base, never built here) whose pipeline is a 3 s stand-in."""
    from builder.build import lock, pipeline
    from builder.build.render import Renderer
    from builder.model import matrix, profiles
    from builder.operate import nightly
    from builder.output import Output

    for name, value in local_env.items():
        if name.startswith(("SANDBOX_", "DOCKER_")):
            monkeypatch.setenv(name, value)

    profiles_used: list[str] = []
    crash: set[str] = set()

    def stand_in(engine, renderer, cell, profile, **options):  # type: ignore[no-untyped-def]
        profiles_used.append(profile.name)  # what the cell would have been built with
        time.sleep(3)
        if cell.tag in crash:
            raise RuntimeError("stand-in crash")
        return pipeline.BuiltCell(cell, "sha256:stand-in", [], "", 3.0, None, 0)

    monkeypatch.setattr(pipeline, "build_cell", stand_in)
    m = matrix.load(REPO / "matrix.yaml")
    # two hash-locked cells (torch from PyPI): the CPU ones need download.pytorch.org, unreachable here
    cells = m.select(["2.12-cuda13.0-debian12", "2.11-cuda13.0-debian12"])
    assert len(cells) == 2

    def timed(jobs: int) -> tuple[float, list[Any]]:
        started = time.monotonic()
        results = nightly.run(
            cells,
            renderer=Renderer(SHIPPED_TEMPLATES),
            profile=profiles.resolve(m, "local"),
            lock_data=lock.read(lock.lock_path(m.path)),
            options=nightly.NightlyOptions(jobs=jobs, out=tmp_path / f"images-{jobs}", report_dir=tmp_path),
            output=Output(),
        )
        return time.monotonic() - started, results

    monkeypatch.setenv("MIRROR", "official")
    seconds, results = timed(2)
    assert [r.status for r in results] == ["passed", "passed"]
    assert profiles_used == ["local", "local"]  # each cell gets the nightly's profile, whatever $MIRROR says
    assert seconds < 5.5, f"-j 2 took {seconds:.1f} s for two 3 s builds"
    serial, _ = timed(1)
    assert serial >= 6.0, f"-j 1 took {serial:.1f} s for two 3 s builds"
    crash.add(cells[0].tag)  # one cell's crash is its result; the other cell still passes
    _, results = timed(2)
    assert [r.status for r in results] == ["failed", "passed"]
    assert results[0].detail == "crashed: RuntimeError: stand-in crash"


def _emitted(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr[-3000:]
    return [job["tag"] for job in json.loads(result.stdout)["include"]]


def test_ci_matrix_changed_emits_only_what_the_registry_lacks_and_moves_nothing(
    cli: Cli,
    first_push: subprocess.CompletedProcess[str],
    push_registry: LoopbackRegistry,
    push_env: dict[str, str],
    local_env: dict[str, str],
    project_copy: Path,
) -> None:
    """The incremental CI fan-out: the plan step asks the registry as `nightly --push` does."""
    floating = push_registry.digest(REPOSITORY, CPU_TAG)
    assert floating is not None
    log_size = push_registry.log_path.stat().st_size
    changed = ("ci-matrix", "--changed", "--only", CPU_TAG)
    other = "2.14-cuda13.0-debian12"
    assert _emitted(cli(*changed, "--only", other, extra_env=push_env, timeout=120)) == [other]
    # a second scheduled run with nothing changed: no job in either format, no tag moved, nothing written
    assert _emitted(cli(*changed, extra_env=push_env, timeout=120)) == []
    child = cli(*changed, "--format", "gitlab", extra_env=push_env, timeout=120)
    assert child.returncode == 0, child.stderr[-3000:]
    assert list(yaml.safe_load(child.stdout)) == ["nothing-to-build"]
    new_log = push_registry.log_path.read_bytes()[log_size:].decode(errors="replace")
    assert '"PUT ' not in new_log and '"POST ' not in new_log and '"PATCH ' not in new_log
    assert push_registry.digest(REPOSITORY, CPU_TAG) == floating
    # the cell's content changes: it is emitted again
    add_override(project_copy, {"select": CPU_TAG, "snippet": "RUN true\n"})
    edited = Cli(env=local_env, cwd=project_copy)(*changed, extra_env=push_env, timeout=120)
    assert _emitted(edited) == [CPU_TAG]
