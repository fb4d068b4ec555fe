"""The smoke suite's own behaviour, run inside the real CPU image (the host has no torch in CI).

The tests are the unit module's; only `run_suite` differs: it runs the image's copy of the suite in a
container, with the test's cell.json and output folder mounted at the same paths.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cli
from tests.unit.test_smoke_suite import (  # noqa: F401  (collected here, with this module's run_suite)
    test_cpu_cell_passes_with_gpu_checks_skipped,
    test_cuda_cell_on_cpu_torch_fails_cuda_check,
    test_json_flag_prints_json_instead_of_table,
    test_require_gpu_without_gpu_fails_with_one_clear_line,
    test_timeout_reports_running_check,
    test_wrong_torch_version_fails_and_names_the_check,
)

pytestmark = pytest.mark.integration

CPU_TAG = "2.13-cpu-debian12"
IN_IMAGE_SUITE = "/opt/pytorch-cuda-images/smoke.py"


@pytest.fixture(scope="module")
def cpu_image(cli: Cli) -> str:
    result = cli("build", CPU_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    return f"pytorch-cuda-images:{CPU_TAG}"


@pytest.fixture
def run_suite(cpu_image: str) -> Any:
    def run(
        tmp_path: Path, cell: Any, *args: str, raw: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        import json

        path = tmp_path / "cell.json"
        path.write_text(raw if raw is not None else json.dumps(cell))
        return subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--pull",
                "never",
                "-v",
                f"{tmp_path}:{tmp_path}",
                cpu_image,
                "python",
                IN_IMAGE_SUITE,
                "--cell",
                str(path),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run
