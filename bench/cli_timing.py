"""What the benchmarks share: one timed run of `python -m builder` from the repository root."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def timed_cli(
    *args: str, env: dict[str, str], timeout: float = 3600
) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run the builder CLI with args: the wall seconds and the finished process (exit codes never raise)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "builder", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return time.perf_counter() - started, result
