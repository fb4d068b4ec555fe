"""Benchmark: the smoke suite's own runtime, per check, in each built image given (default: the e2e images).

    python bench/smoke.py [IMAGE ...]

Prints each check's duration and the suite's total against the goal (under 60 s, so it can gate every
nightly cell). On a GPU machine without Docker run the suite directly instead:
    python builder/resources/smoke_suite.py --cell images/<tag>/cell.json --require-gpu --json
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = ["pytorch-cuda-images:2.13-cpu-debian12", "pytorch-cuda-images:2.14-cuda13.0-debian12"]
GOAL_S = 60.0


def main(images: list[str]) -> int:
    for image in images:
        proc = subprocess.run(
            [sys.executable, "-m", "builder", "smoke", image, "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            print(f"{image}: no report (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
            continue
        print(f"\n{image}  (GPU: {report['gpu']}, passed: {report['passed']})")
        for check in report["checks"]:
            print(f"  {check['name']:<18} {check['status']:<8} {check['duration_s']:7.2f} s")
        total = float(report["total_s"])
        verdict = "PASS" if total < GOAL_S else "FAIL"
        print(f"  {'total':<18} {'':<8} {total:7.2f} s   goal < {GOAL_S:.0f} s: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or DEFAULT_IMAGES))
