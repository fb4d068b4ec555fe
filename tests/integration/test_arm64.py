"""linux/arm64 end to end under QEMU (slow: `nox -s arm64`, never in `make test`): the sandbox registers
binfmt and makes the Debian 13 base for both CPUs, `build` builds 2.14-cuda13.0-debian13 for linux/amd64
and linux/arm64 from the sandbox's wheels, each image's smoke suite passes at library level (arm64: it
runs on aarch64; torch, CUDA, cuDNN and NCCL report the wheel's versions), and `--push` leaves one OCI
index with both platforms under the immutable and floating tags.

About 20 minutes on a 2-core machine with cold caches (the arm64 build under QEMU: 644 s, its smoke
suite: 52 s, the amd64 build: 136 s, both pushes), 6 with their layers cached; 12 GB of images. The
sandbox registers Debian 13's QEMU 10.0 (Debian 12's qemu-user-static 7.2 segfaults in `import torch`
2.14.1 aarch64: xbyak_aarch64 cannot read MIDR_EL1, pytorch/pytorch#188255).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.model import matrix, platforms
from builder.model.naming import RUNS_DIR, floating_tag, immutable_tag
from tests.integration.conftest import Cli
from tests.integration.loopback_registry import LoopbackRegistry, serving_registry
from tools import sandbox

pytestmark = [pytest.mark.integration, pytest.mark.emulated]

TAG = "2.14-cuda13.0-debian13"


@pytest.fixture(scope="module")
def arm64_env(local_env: dict[str, str]) -> dict[str, str]:
    info = sandbox.up(
        sandbox.DEFAULT_STATE_DIR,
        oses=["debian13"],
        arches=["arm64"],
        log=lambda m: print(m, file=sys.stderr),
    )
    qemu = platforms.registered_qemu("arm64")
    assert qemu is not None and qemu.usable, qemu.describe() if qemu else "no qemu-aarch64 registered"
    return {**local_env, **info.profile_env()}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, engine) -> Iterator[LoopbackRegistry]:  # type: ignore[no-untyped-def]
    with serving_registry(tmp_path_factory.mktemp("arm64"), engine, also_needs=("skopeo",)) as registry:
        yield registry


def test_both_platforms_build_smoke_and_push_as_one_index(
    arm64_env: dict[str, str], registry: LoopbackRegistry, tmp_path: Path
) -> None:
    cli = Cli(env=arm64_env)
    result = cli(
        "build",
        TAG,
        "--push",
        "--registry",
        f"{registry.host}/ml",
        "--smoke-timeout",
        "1800",
        "--json",
        timeout=3 * 3600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads(result.stdout)
    assert [p["platform"] for p in doc["platforms"]] == ["linux/amd64", "linux/arm64"]
    arm = json.loads((Path(RUNS_DIR) / TAG / "linux-arm64" / "smoke-result.json").read_text())
    checks = {c["name"]: c for c in arm["checks"]}
    assert checks["python"]["detail"].endswith("(aarch64)")
    assert checks["torch"]["status"] == "pass"
    for name in ("cuda_version", "cudnn", "nccl_version"):
        assert checks[name]["status"] == "pass", checks[name]
    cell = matrix.load().cell(TAG)
    for tag in (immutable_tag(cell), floating_tag(cell)):
        raw = registry.skopeo_inspect("ml/pytorch-cuda-images", tag, raw=True)
        platforms = {m["platform"]["architecture"] for m in json.loads(raw)["manifests"]}
        assert platforms == {"amd64", "arm64"}
