"""The host side of the smoke gate, pure parts: GPU requests, start refusals, partial reports, timing."""

from __future__ import annotations

import json
from typing import Any

from builder.build import gate
from builder.build.engine import gpu_request_kinds
from builder.resources import smoke_suite

CDI_SPEC = "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: all\n"


def test_cdi_first_where_the_engine_has_cdi_and_a_spec_names_nvidia_gpus() -> None:
    info = {"CDISpecDirs": ["/etc/cdi", "/var/run/cdi"], "Runtimes": {"runc": {}, "nvidia": {}}}
    assert gpu_request_kinds(info, [CDI_SPEC], nvidiactl=True) == ["cdi", "legacy"]
    discovered = {
        "CDISpecDirs": ["/etc/cdi"],
        "DiscoveredDevices": [{"Source": "cdi", "ID": "nvidia.com/gpu=0"}],
    }
    assert gpu_request_kinds(discovered, [], nvidiactl=False) == ["cdi"]


def test_legacy_only_without_cdi() -> None:
    docker_20_10: dict[str, Any] = {"Runtimes": {"runc": {}, "nvidia": {}}}  # API 1.41: no CDISpecDirs
    assert gpu_request_kinds(docker_20_10, [CDI_SPEC], nvidiactl=False) == ["legacy"]
    cdi_off = {"CDISpecDirs": [], "Runtimes": {"runc": {}}}
    assert gpu_request_kinds(cdi_off, [CDI_SPEC], nvidiactl=True) == ["legacy"]
    assert gpu_request_kinds({"Runtimes": {"runc": {}}}, [], nvidiactl=False) == []


def test_start_refusals_read_as_one_line() -> None:
    require = (
        "failed to create task for container: OCI runtime create failed: nvidia-container-cli: requirement "
        "error: unsatisfied condition: cuda>=12.8, please update your driver to a newer version, or use an "
        "earlier cuda container: unknown"
    )
    line = gate.explain_start_refusal(require, "legacy")
    assert "NVIDIA_REQUIRE_CUDA (cuda>=12.8)" in line and "NVIDIA_DISABLE_REQUIRE=1" in line
    assert "CDI needs Docker >= 25" in gate.explain_start_refusal(
        'could not select device driver "cdi" with capabilities: []', "cdi"
    )
    assert "NVIDIA Container Toolkit" in gate.explain_start_refusal(
        'could not select device driver "" with capabilities: [[gpu]]', "legacy"
    )
    unresolvable = (
        "error modifying OCI spec: failed to inject CDI devices: unresolvable CDI devices nvidia.com/gpu=all"
    )
    assert "nvidia-ctk cdi generate" in gate.explain_start_refusal(unresolvable, "cdi")
    for text in (require, unresolvable):
        assert "\n" not in gate.explain_start_refusal(text, "cdi")


def test_host_kills_later_than_the_suites_watchdog_and_backstop() -> None:
    """Before, the backstop and the host kill both came at timeout + 30 s; the host's clock starts first."""
    assert gate.HOST_KILL_MARGIN_S >= smoke_suite.BACKSTOP_S + 30


def _progress(event: dict[str, object]) -> str:
    return smoke_suite.PROGRESS_PREFIX + json.dumps(event)


def test_partial_report_from_progress_lines() -> None:
    stderr = "\n".join(
        [
            _progress({"tag": "2.13-cpu-debian12", "checks": ["python", "torch", "numpy"]}),
            _progress({"start": "python"}),
            _progress(
                {"result": {"name": "python", "status": "pass", "detail": "python 3.11", "duration_s": 0.0}}
            ),
            _progress({"start": "torch"}),
            "Thread 0x00007f (most recent call first):",
            '  File "/opt/pytorch-cuda-images/smoke.py", line 400 in check_torch',
        ]
    )
    doc = gate.partial_report(stderr, "stuck")
    assert doc is not None
    assert [(c["name"], c["status"]) for c in doc["checks"]] == [
        ("python", "pass"),
        ("torch", "fail"),
        ("numpy", "skipped"),
    ]
    assert doc["checks"][1]["detail"] == "stuck"
    assert doc["passed"] is False and doc["tag"] == "2.13-cpu-debian12"
    assert doc["log_tail"][-1].endswith("in check_torch")
    assert gate.partial_report("no progress here", "stuck") is None


def test_suite_command_tells_the_suite_that_gpus_were_requested() -> None:
    command = gate.suite_command(require_gpu=False, timeout=300, gpus_requested=True)
    assert "--gpus-requested" in command and "--progress" in command
    assert "--gpus-requested" not in gate.suite_command(require_gpu=False, timeout=300)
