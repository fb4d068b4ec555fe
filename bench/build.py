"""Benchmark: our build of the CPU e2e image vs a naive single-stage Dockerfile, in one run.

Measures, through the loopback sandbox (`make sandbox` first, or this script starts it):
  cold   our pipeline, no layer cache          (python -m builder build ... --no-cache)
  warm   our pipeline after one template line late in the Dockerfile changed
  naive  `docker build` CLI of a single-stage Dockerfile with the same content, no cache
and prints times, the cold/warm ratio (goal >= 5x) and our/naive image size ratio (goal <= 1.0).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from builder.build.render import SHIPPED_TEMPLATES, SUITE_PATH
from tools import sandbox

TAG = "2.13-cpu-debian12"
NAIVE_TAG = "pytorch-cuda-images-bench:naive"
NAIVE_DOCKERFILE = """\
FROM {base}
RUN apt-get update && apt-get install -y python3 python3-pip python3-venv
RUN pip3 install --break-system-packages --index-url {pypi} torch==2.13.0+cpu numpy
COPY smoke.py cell.json /opt/pytorch-cuda-images/
"""


def timed(command: list[str], *, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def image_size(reference: str) -> int:
    out = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", reference],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def main() -> int:
    info = sandbox.up(log=lambda _msg: None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(info.profile_env(), MIRROR="local", PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        work = Path(tmp)
        shutil.copy(REPO / "matrix.yaml", work / "matrix.yaml")
        shutil.copy(REPO / "matrix.lock", work / "matrix.lock")  # with the cells' hash locks in images/
        locks = shutil.ignore_patterns("Dockerfile", "cell.json", "build.log", "smoke-result.json")
        shutil.copytree(REPO / "images", work / "images", ignore=locks)
        shutil.copytree(SHIPPED_TEMPLATES, work / "templates")
        build = [sys.executable, "-m", "builder", "build", TAG, "--out", str(work / "images")]

        cold = timed([*build, "--no-cache"], cwd=work, env=env)
        ours = image_size(f"pytorch-cuda-images:{TAG}")

        torch_stage = work / "templates" / "partials" / "torch.j2"
        torch_stage.write_text(torch_stage.read_text().replace('CMD ["python"]', 'CMD ["python3"]'))
        warm = timed(build, cwd=work, env=env)

        context = work / "naive"
        context.mkdir()
        shutil.copy(REPO / SUITE_PATH, context / "smoke.py")
        shutil.copy(work / "images" / TAG / "cell.json", context / "cell.json")
        (context / "Dockerfile").write_text(NAIVE_DOCKERFILE.format(base=info.base_image, pypi=info.pypi_url))
        naive = timed(
            ["docker", "build", "--no-cache", "--network", "host", "-t", NAIVE_TAG, "."],
            cwd=context,
            env={**env, "DOCKER_BUILDKIT": "0"},
        )
        naive_size = image_size(NAIVE_TAG)
        subprocess.run(["docker", "rmi", NAIVE_TAG], check=False, capture_output=True)

    print(f"image                 {TAG} (torch 2.13.0+cpu, Debian 12, loopback mirrors)")
    print(f"ours, cold (no cache) {cold:7.1f} s   (includes smoke tests)")
    print(f"ours, warm (1 line)   {warm:7.1f} s   (includes smoke tests)")
    print(f"naive single-stage    {naive:7.1f} s   (docker build CLI, no smoke tests)")
    print(
        f"cold / warm           {cold / warm:7.1f} x   goal >= 5x: {'PASS' if cold / warm >= 5 else 'FAIL'}"
    )
    print(f"naive / ours (time)   {naive / cold:7.2f} x")
    print(
        f"size ours / naive     {ours / 1e9:.2f} GB / {naive_size / 1e9:.2f} GB = {ours / naive_size:.2f}"
        f"   goal <= 1.0: {'PASS' if ours <= naive_size else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
