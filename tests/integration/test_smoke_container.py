"""The smoke container as the real engine runs it: its HostConfig (`docker inspect`), both GPU requests, and a
suite that hangs holding the GIL still delivering a partial report.

The CPU image serves: what is checked here is the container, not CUDA.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from builder.build import gate
from builder.build.engine import Engine
from builder.errors import ContainerStartError, SmokeFailedError
from builder.model.naming import ROLE_LABEL
from tests.integration.conftest import Cli

pytestmark = pytest.mark.integration

CPU_TAG = "2.13-cpu-debian12"
GIB = 1 << 30
UNLIMITED_MEMLOCK = [{"Name": "memlock", "Soft": -1, "Hard": -1}]


@pytest.fixture(scope="module")
def cpu_image(cli: Cli) -> str:
    result = cli("build", CPU_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    return f"pytorch-cuda-images:{CPU_TAG}"


def test_smoke_container_has_a_1g_shm_and_unlimited_memlock(engine: Engine, cpu_image: str) -> None:
    report = gate.run(engine, cpu_image)
    assert report.passed, report.table()
    facts = report.raw["container"]
    print(f"smoke container (no GPU request): {facts}", file=sys.stderr)
    assert report.host_config["ShmSize"] == GIB and facts["ShmSize"] == GIB
    refused = facts["memlock_refused"]
    if refused:
        # An engine that may not raise RLIMIT_MEMLOCK (dockerd without CAP_SYS_RESOURCE, as in the sandbox)
        # refuses the container that asks; the gate runs again at the engine's limit and records why.
        assert [r["Ulimits"] for r in refused] == [UNLIMITED_MEMLOCK]
        assert gate.MEMLOCK_REFUSED in refused[0]["reason"]
        assert not report.host_config["Ulimits"]
    else:
        assert report.host_config["Ulimits"] == UNLIMITED_MEMLOCK
    inside = engine.run(
        cpu_image,
        ["sh", "-c", "ulimit -l; df -k --output=size /dev/shm | tail -1"],
        timeout=60,
        shm_size=gate.SMOKE_SHM_SIZE,
        memlock_unlimited=not refused,
    )
    memlock, shm_kib = inside.stdout.split()
    assert shm_kib == str(GIB // 1024)
    assert (memlock == "unlimited") is not refused


@pytest.mark.parametrize(
    ("gpu", "device_request", "reason"),
    [
        (
            "cdi",
            {"Driver": "cdi", "Count": 0, "DeviceIDs": ["nvidia.com/gpu=all"], "Capabilities": []},
            "this engine has no CDI support enabled",
        ),
        (
            "legacy",
            {"Driver": "", "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]]},
            "no NVIDIA runtime or hook answers GPU requests",
        ),
    ],
)
def test_each_gpu_request_reaches_the_engine(
    engine: Engine, cpu_image: str, gpu: Any, device_request: dict[str, Any], reason: str
) -> None:
    """This engine (Docker 20.10, API 1.41, no NVIDIA toolkit) refuses both at start; the request it refused
    is the one `docker inspect` shows, with the smoke container's shm and memlock."""
    with pytest.raises(ContainerStartError) as refused:
        engine.run(
            cpu_image, ["true"], timeout=60, gpu=gpu, shm_size=gate.SMOKE_SHM_SIZE, memlock_unlimited=True
        )
    host_config = refused.value.host_config
    print(f"{gpu}: {refused.value}; HostConfig {gate.container_facts(host_config, gpu)}", file=sys.stderr)
    assert [{k: v for k, v in r.items() if k != "Options"} for r in host_config["DeviceRequests"]] == [
        device_request
    ]
    assert host_config["ShmSize"] == GIB and host_config["Ulimits"] == UNLIMITED_MEMLOCK
    assert reason in gate.explain_start_refusal(str(refused.value), gpu)


def test_refused_gpu_requests_fail_the_gate_in_one_line(engine: Engine, cpu_image: str) -> None:
    """Before, the engine's APIError from start() came out as a traceback."""
    with pytest.raises(SmokeFailedError) as failed:
        gate.run(engine, cpu_image, gpus=["cdi", "legacy"])
    message = str(failed.value)
    assert failed.value.lines == [message] and "\n" not in message
    assert message.startswith(
        f"the smoke container for {cpu_image} did not start: cdi GPU request: this engine"
    )
    assert "; legacy GPU request: no NVIDIA runtime or hook" in message
    assert (
        engine.client.containers.list(all=True, filters={"label": ROLE_LABEL}) == []
    )  # refused ones removed


HANG_IMAGE = "pci-test-gil-hang:latest"
# numpy's import holds the GIL for 10 minutes (a ctypes.PyDLL call never releases it): the suite's watchdog
# thread cannot run, so only faulthandler's backstop ends the suite.
HANG_DOCKERFILE = f"""FROM pytorch-cuda-images:{CPU_TAG}
RUN python -c "import numpy, pathlib; p = pathlib.Path(numpy.__file__); \\
p.write_text('import ctypes\\\\nctypes.PyDLL(None).sleep(600)\\\\n' + p.read_text())"
"""


@pytest.fixture
def hanging_image(engine: Engine, cpu_image: str) -> Iterator[str]:
    subprocess.run(
        ["docker", "build", "--pull=false", "-t", HANG_IMAGE, "-"],
        input=HANG_DOCKERFILE,
        text=True,
        capture_output=True,
        check=True,
    )
    yield HANG_IMAGE
    engine.remove_image(HANG_IMAGE)


def test_a_suite_stuck_holding_the_gil_still_reports(engine: Engine, hanging_image: str) -> None:
    """Before, the suite's backstop and the host kill both came at timeout + 30 s: the report was lost."""
    timeout = 5.0
    started = time.monotonic()
    report = gate.run(engine, hanging_image, timeout=timeout)
    elapsed = time.monotonic() - started
    checks = {c["name"]: c for c in report.checks}
    print(f"stuck suite reported after {elapsed:.1f} s: {report.failures()}", file=sys.stderr)
    assert not report.passed and report.raw["partial"] is True
    assert checks["python"]["status"] == "pass"
    (stuck,) = report.failures()
    assert "without a report while this ran (stuck holding the GIL" in stuck["detail"]
    assert any("most recent call first" in line for line in report.raw["log_tail"])
    assert checks["gpu_devices"] == {
        "name": "gpu_devices",
        "status": "skipped",
        "detail": "not run: suite stopped",
        "duration_s": 0.0,
    }
    assert elapsed < timeout + gate.HOST_KILL_MARGIN_S
