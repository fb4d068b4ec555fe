"""The matrix as a CI job matrix, one job per (cell, platform), computed from matrix.yaml at run time.

GitHub Actions gets `{"include": [...]}` for `strategy.matrix: ${{ fromJSON(...) }}`; GitLab gets a
child-pipeline YAML with one job per (cell, platform) and, per multi-platform cell, a merge job that puts
the image index together once every platform's job passed. CUDA cells go to GPU runners (their smoke suite
runs on a GPU); each platform to native runners (arm64 ones for linux/arm64), so production never emulates.
With `--changed` the cells are first narrowed to those whose content hash the registry lacks
(`builder.operate.nightly.changed_cells`); nothing changed gives an empty GitHub include list (the workflow
skips its build job) and a GitLab child pipeline whose one job says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from builder.errors import ConfigError
from builder.model import naming
from builder.model.cell import Cell
from builder.model.platforms import tag_suffix

GITHUB_MAX_JOBS = 256  # GitHub's limit on jobs per matrix
GITHUB_CPU_RUNNER = ("ubuntu-24.04",)
GITHUB_GPU_RUNNER = ("self-hosted", "linux", "x64", "gpu")
GITLAB_CPU_TAGS = ("docker",)
GITLAB_GPU_TAGS = ("docker", "gpu")
GITHUB_ARM64_CPU_RUNNER = ("ubuntu-24.04-arm",)  # GitHub-hosted arm64
GITHUB_ARM64_GPU_RUNNER = ("self-hosted", "linux", "arm64", "gpu")  # GH200 / GB200 hosts
GITLAB_ARM64_CPU_TAGS = ("docker", "arm64")
GITLAB_ARM64_GPU_TAGS = ("docker", "gpu", "arm64")
REPORT_DIR = "reports"
RESULTS_DIR = f"{REPORT_DIR}/cells"


@dataclass(frozen=True)
class Runners:
    """Runner labels (GitHub `runs-on`) or tags (GitLab `tags`) for CPU and for CUDA cells, on linux/amd64
    and on linux/arm64."""

    cpu: tuple[str, ...]
    gpu: tuple[str, ...]
    arm64_cpu: tuple[str, ...] = GITHUB_ARM64_CPU_RUNNER
    arm64_gpu: tuple[str, ...] = GITHUB_ARM64_GPU_RUNNER

    def for_cell(self, cell: Cell, platform: str = "linux/amd64") -> list[str]:
        if platform == "linux/arm64":
            return list(self.arm64_gpu if cell.is_cuda else self.arm64_cpu)
        return list(self.gpu if cell.is_cuda else self.cpu)


GITHUB_RUNNERS = Runners(GITHUB_CPU_RUNNER, GITHUB_GPU_RUNNER)
GITLAB_RUNNERS = Runners(GITLAB_CPU_TAGS, GITLAB_GPU_TAGS, GITLAB_ARM64_CPU_TAGS, GITLAB_ARM64_GPU_TAGS)


def jobs(cells: Sequence[Cell]) -> list[tuple[Cell, str]]:
    """One (cell, platform) pair per build job, in matrix order."""
    return [(cell, platform) for cell in cells for platform in cell.platforms]


def job_name(cell: Cell, platform: str) -> str:
    """A single-platform cell's job is named by its tag; a multi-platform cell's by tag and platform."""
    return cell.tag if len(cell.platforms) == 1 else f"{cell.tag} {platform}"


def local_image(cell: Cell, platform: str) -> str:
    """The local tag `build` gives that platform's image (`pytorch-cuda-images:<this>`)."""
    return cell.tag if platform == cell.platforms[0] else f"{cell.tag}-{tag_suffix(platform)}"


def results_dir(cell: Cell, platform: str) -> str:
    """Where the job's `report cell` result goes (per platform, so that jobs of one cell do not collide)."""
    return RESULTS_DIR if platform == cell.platforms[0] else f"{RESULTS_DIR}/{tag_suffix(platform)}"


def run_dir(cell: Cell, platform: str) -> str:
    """Where `build` leaves a platform's build.log and smoke-result.json in the job's checkout."""
    return naming.run_dir(naming.RUNS_DIR, cell, platform)


def github(cells: Sequence[Cell], runners: Runners = GITHUB_RUNNERS) -> dict[str, list[dict[str, Any]]]:
    """`{"include": [{"tag", "platform", "suffix", "runner", "gpu", "image", "logs", "results"}, ...]}`, one
    entry per (cell, platform), for `fromJSON`; the workflow's merge job then puts each multi-platform
    cell's index together (empty when nothing is to be built: the workflow skips the job on an empty list)."""
    pairs = jobs(cells)
    if len(pairs) > GITHUB_MAX_JOBS:
        raise ConfigError(
            f"ci-matrix: {len(pairs)} jobs ({len(cells)} cells), but a GitHub matrix holds at most "
            f"{GITHUB_MAX_JOBS} jobs; split the run with --only"
        )
    include = [
        {
            "tag": c.tag,
            "platform": p,
            "suffix": tag_suffix(p),
            "runner": runners.for_cell(c, p),
            "gpu": c.is_cuda,
            "image": local_image(c, p),
            "logs": run_dir(c, p),
            "results": results_dir(c, p),
        }
        for c, p in pairs
    ]
    return {"include": include}


def github_json(cells: Sequence[Cell], runners: Runners = GITHUB_RUNNERS) -> str:
    """The GitHub matrix on one line (a `$GITHUB_OUTPUT` value must be one line)."""
    return json.dumps(github(cells, runners), separators=(",", ":"))


CELL_SCRIPT = """\
if [ -z "${REGISTRY_USERNAME:-}" ] || [ -z "${REGISTRY_PASSWORD:-}" ]; then
  echo "set the masked CI/CD variables REGISTRY_USERNAME and REGISTRY_PASSWORD" >&2; exit 2
fi
start=$(date +%s)
status=success
make build TAG="$CELL_TAG" PLATFORM="$CELL_PLATFORM" PUSH=1 || status=failure
size=$(docker image inspect --format '{{.Size}}' "pytorch-cuda-images:$CELL_IMAGE" 2>/dev/null || true)
.venv/bin/python -m builder report cell "$CELL_TAG" --platform "$CELL_PLATFORM" --status "$status" \\
  --build-seconds "$(( $(date +%s) - start ))" ${size:+--size-bytes "$size"} --out "$CELL_RESULTS"
test "$status" = success
"""


def gitlab(cells: Sequence[Cell], runners: Runners = GITLAB_RUNNERS, *, source: str = "matrix.yaml") -> str:
    """A child pipeline: one job per cell running `make build TAG=... PUSH=1`, logs kept as artifacts.

    Registry credentials come from the CI/CD variables REGISTRY_USERNAME and REGISTRY_PASSWORD
    (masked, protected), which GitLab hands every job as environment variables.
    """
    header = (
        f"# Generated from {source} by `python -m builder ci-matrix --format gitlab` "
        f"({len(cells)} cell{'' if len(cells) == 1 else 's'}); do not edit.\n"
    )
    if not cells:
        return header + _dump({"nothing-to-build": {"tags": list(runners.cpu), "script": [NOTHING_TO_BUILD]}})
    pipeline: dict[str, Any] = {
        "stages": ["build", "merge", "report"],
        "default": {"interruptible": True},
        "variables": {"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        ".cell": {
            "stage": "build",
            "timeout": "4h",
            "retry": {"max": 1, "when": ["runner_system_failure", "stuck_or_timeout_failure"]},
            "before_script": ["make venv"],
            "script": [CELL_SCRIPT],
        },
    }
    for cell, platform in jobs(cells):
        results = results_dir(cell, platform)
        pipeline[job_name(cell, platform)] = {
            "extends": ".cell",
            "tags": runners.for_cell(cell, platform),
            "variables": {
                "CELL_TAG": cell.tag,
                "CELL_PLATFORM": platform,
                "CELL_IMAGE": local_image(cell, platform),
                "CELL_RESULTS": results,
                "CELL_GPU": "true" if cell.is_cuda else "false",
            },
            "artifacts": {
                "when": "always",
                "expire_in": "30 days",
                "paths": [
                    f"{run_dir(cell, platform)}/build.log",
                    f"{run_dir(cell, platform)}/smoke-result.json",
                    f"{run_dir(cell, platform)}/sbom.cdx.json",
                    f"{results}/{cell.tag}.json",
                ],
            },
        }
    for cell in cells:
        if len(cell.platforms) > 1:  # runs only when every platform's job passed (needs, on_success)
            pipeline[f"merge {cell.tag}"] = {
                "stage": "merge",
                "tags": list(runners.cpu),
                "needs": [{"job": job_name(cell, p), "artifacts": False} for p in cell.platforms],
                "script": ["make venv", f".venv/bin/python -m builder merge {cell.tag}"],
            }
    pipeline["report"] = {
        "stage": "report",
        "tags": list(runners.cpu),
        "when": "always",  # after every build job, with their artifacts (GitLab caps `needs` at 50)
        "script": [
            "make venv",
            ".venv/bin/python -m tools.update_compat --json > compat.json || true",
            f".venv/bin/python -m builder report render {RESULTS_DIR} --out {REPORT_DIR} "
            "--compat compat.json",
        ],
        "artifacts": {
            "when": "always",
            "expire_in": "90 days",
            "expose_as": "nightly report",
            "paths": [f"{REPORT_DIR}/"],
        },
    }
    return header + _dump(pipeline)


# A child pipeline needs at least one job: when every cell is current, one that says so and builds nothing.
NOTHING_TO_BUILD = "echo 'every selected cell is in the registry with its content hash: nothing to build'"


def _dump(pipeline: dict[str, Any]) -> str:
    return yaml.dump(pipeline, Dumper=_BlockDumper, sort_keys=False, width=110, allow_unicode=True)


class _BlockDumper(yaml.SafeDumper):
    """Safe YAML with multi-line strings as `|` blocks (readable scripts)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def for_ci(
    fmt: str,
    cells: Sequence[Cell],
    *,
    cpu_runners: Sequence[str] | None = None,
    gpu_runners: Sequence[str] | None = None,
    source: str = "matrix.yaml",
) -> str:
    """`ci-matrix`: the GitHub include list (one JSON line) or the GitLab child pipeline."""
    if fmt not in ("github", "gitlab"):
        raise ConfigError(f"--format {fmt!r}: allowed: github, gitlab")
    default = GITHUB_RUNNERS if fmt == "github" else GITLAB_RUNNERS
    runners = Runners(
        cpu=tuple(cpu_runners) if cpu_runners else default.cpu,
        gpu=tuple(gpu_runners) if gpu_runners else default.gpu,
        arm64_cpu=default.arm64_cpu,
        arm64_gpu=default.arm64_gpu,
    )
    return github_json(cells, runners) + "\n" if fmt == "github" else gitlab(cells, runners, source=source)
