"""`ci-matrix` and the shipped CI files: one job per (cell, platform) on native runners, GPU runners for
CUDA, a merge job per multi-platform cell, schema-valid (offline)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.errors import ConfigError
from builder.operate import ci_matrix
from tests.conftest import REPO, unavailable
from tests.unit.conftest import InProcessCli

WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
GITLAB = REPO / ".gitlab-ci.yml"


def check_jsonschema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    """Validate with check-jsonschema's vendored schema (no network: --builtin-schema is offline)."""
    if importlib.util.find_spec("check_jsonschema") is None:
        unavailable("check-jsonschema is not installed (it is in the `test` extra)")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def github_matrix(cli: InProcessCli) -> dict[str, Any]:
    result = cli("ci-matrix", "--format", "github")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1  # one line, as $GITHUB_OUTPUT needs
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


@pytest.fixture(scope="module")
def child_pipeline(cli: InProcessCli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = cli("ci-matrix", "--format", "gitlab")
    assert result.exit_code == 0, result.stderr
    path = tmp_path_factory.mktemp("gitlab") / "child.yml"
    path.write_text(result.stdout)
    return path


def test_github_matrix_has_one_job_per_cell_and_platform(
    github_matrix: dict[str, Any], default_matrix: Any
) -> None:
    include = github_matrix["include"]
    pairs = [(cell.tag, platform) for cell in default_matrix.cells for platform in cell.platforms]
    assert [(job["tag"], job["platform"]) for job in include] == pairs
    assert len(pairs) > len(default_matrix.cells)  # some cells are multi-platform
    assert set(github_matrix) == {"include"}
    for job in include:
        assert set(job) == {"tag", "platform", "suffix", "runner", "gpu", "image", "logs", "results"}
        assert job["suffix"] == job["platform"].replace("/", "-")


def test_arm64_jobs_run_on_native_arm64_runners(github_matrix: dict[str, Any]) -> None:
    arm = [job for job in github_matrix["include"] if job["platform"] == "linux/arm64"]
    assert arm
    for job in arm:
        expected = ci_matrix.GITHUB_ARM64_GPU_RUNNER if job["gpu"] else ci_matrix.GITHUB_ARM64_CPU_RUNNER
        assert job["runner"] == list(expected)
        assert job["image"] == f"{job['tag']}-linux-arm64"  # the per-platform local name `build` gives it
        assert job["logs"] == f"reports/build/{job['tag']}/linux-arm64"
        assert job["results"] == "reports/cells/linux-arm64"  # never the amd64 job's result file


def test_cuda_cells_get_gpu_runner_labels(github_matrix: dict[str, Any]) -> None:
    for job in [j for j in github_matrix["include"] if j["platform"] == "linux/amd64"]:
        cuda = "-cuda" in job["tag"]
        assert job["gpu"] is cuda
        if cuda:
            assert job["runner"] == list(ci_matrix.GITHUB_GPU_RUNNER)
            assert "self-hosted" in job["runner"]
            assert "gpu" in job["runner"]
        else:
            assert job["runner"] == list(ci_matrix.GITHUB_CPU_RUNNER)
    assert any(job["gpu"] for job in github_matrix["include"])
    assert not all(job["gpu"] for job in github_matrix["include"])


def test_only_and_runner_options(cli: InProcessCli) -> None:
    result = cli(
        "ci-matrix",
        "--format",
        "github",
        "--only",
        "2.9-cuda12.8-*",
        "--gpu-runner",
        "a100",
        "--cpu-runner",
        "x",
    )
    assert result.exit_code == 0, result.stderr
    include = json.loads(result.stdout)["include"]
    assert [j["tag"] for j in include] == [
        "2.9-cuda12.8-debian12",
        "2.9-cuda12.8-ubuntu22.04",
        "2.9-cuda12.8-ubuntu22.04-full",
        "2.9-cuda12.8-ubuntu24.04",
        "2.9-cuda12.8-ubuntu24.04-full",
    ]
    assert all(j["runner"] == ["a100"] for j in include)


def test_bad_format_and_glob_exit_2(cli: InProcessCli) -> None:
    assert cli("ci-matrix", "--format", "jenkins").exit_code == 2
    assert cli("ci-matrix", "--only", "9.9-*").exit_code == 2


def test_github_job_limit(default_matrix: Any) -> None:
    cells = list(default_matrix.cells) * (ci_matrix.GITHUB_MAX_JOBS // len(default_matrix.cells) + 1)
    with pytest.raises(ConfigError, match="at most 256 jobs"):
        ci_matrix.github(cells)
    multi = [c for c in default_matrix.cells if len(c.platforms) == 2]
    fits = multi * (ci_matrix.GITHUB_MAX_JOBS // 2 // len(multi))  # cells under the limit, jobs counted
    assert len(fits) <= ci_matrix.GITHUB_MAX_JOBS // 2
    ci_matrix.github(fits)
    with pytest.raises(ConfigError, match="at most 256 jobs"):
        ci_matrix.github(fits + multi)


def test_child_pipeline_jobs(child_pipeline: Path, default_matrix: Any) -> None:
    doc = yaml.safe_load(child_pipeline.read_text())
    jobs = {name: job for name, job in doc.items() if isinstance(job, dict) and "extends" in job}
    names = [ci_matrix.job_name(cell, p) for cell in default_matrix.cells for p in cell.platforms]
    assert list(jobs) == names
    script = "\n".join(doc[".cell"]["script"])
    assert 'make build TAG="$CELL_TAG" PLATFORM="$CELL_PLATFORM" PUSH=1' in script
    assert "REGISTRY_USERNAME" in script
    assert "REGISTRY_PASSWORD" in script
    for cell in default_matrix.cells:
        for platform in cell.platforms:
            job = jobs[ci_matrix.job_name(cell, platform)]
            assert job["variables"]["CELL_TAG"] == cell.tag
            assert job["variables"]["CELL_PLATFORM"] == platform
            assert ("gpu" in job["tags"]) is cell.is_cuda
            assert ("arm64" in job["tags"]) is (platform == "linux/arm64")
            assert f"{ci_matrix.run_dir(cell, platform)}/build.log" in job["artifacts"]["paths"]
            assert job["artifacts"]["when"] == "always"
        if len(cell.platforms) == 1:
            assert cell.tag in jobs
            assert f"merge {cell.tag}" not in doc
    report = doc["report"]
    assert report["stage"] == "report"
    assert report["when"] == "always"
    assert any("report render" in line for line in report["script"])


def test_child_pipeline_merges_each_multi_platform_cell_after_all_its_platforms(
    child_pipeline: Path, default_matrix: Any
) -> None:
    doc = yaml.safe_load(child_pipeline.read_text())
    assert doc["stages"] == ["build", "merge", "report"]
    multi = [cell for cell in default_matrix.cells if len(cell.platforms) > 1]
    assert multi
    for cell in multi:
        merge = doc[f"merge {cell.tag}"]
        assert merge["stage"] == "merge"
        assert "when" not in merge  # on_success: a failed platform job leaves no index
        assert [n["job"] for n in merge["needs"]] == [f"{cell.tag} {p}" for p in cell.platforms]
        assert f"python -m builder merge {cell.tag}" in merge["script"][-1]


def test_shipped_github_workflow_is_schema_valid() -> None:
    result = check_jsonschema("vendor.github-workflows", WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shipped_gitlab_ci_is_schema_valid() -> None:
    result = check_jsonschema("vendor.gitlab-ci", GITLAB)
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_child_pipeline_is_schema_valid(child_pipeline: Path) -> None:
    result = check_jsonschema("vendor.gitlab-ci", child_pipeline)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_is_not_vacuous(child_pipeline: Path, tmp_path: Path) -> None:
    broken = yaml.safe_load(child_pipeline.read_text())
    broken["report"]["when"] = "sometimes"
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    assert check_jsonschema("vendor.gitlab-ci", path).returncode == 1


def test_github_workflow_shape() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "schedule" in triggers
    assert "workflow_dispatch" in triggers
    jobs = doc["jobs"]
    assert "ci-matrix --format github" in "\n".join(s.get("run", "") for s in jobs["plan"]["steps"])
    assert jobs["plan"]["outputs"]["matrix"]
    build = jobs["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert build["strategy"]["fail-fast"] is False
    assert build["runs-on"] == "${{ matrix.runner }}"
    assert build["env"]["REGISTRY_USERNAME"] == "${{ secrets.REGISTRY_USERNAME }}"
    assert build["env"]["REGISTRY_PASSWORD"] == "${{ secrets.REGISTRY_PASSWORD }}"
    assert build["env"]["PLATFORM"] == "${{ matrix.platform }}"
    runs = "\n".join(s.get("run", "") for s in build["steps"])
    assert 'make build TAG="$TAG" PLATFORM="$PLATFORM" PUSH=1' in runs
    merge = jobs["merge"]
    assert merge["needs"] == ["plan", "build"]
    assert "if" not in merge  # only when every (cell, platform) job passed
    assert "python -m builder merge" in "\n".join(s.get("run", "") for s in merge["steps"])
    uploads = [s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert uploads
    assert "build.log" in uploads[0]["with"]["path"]
    assert uploads[0]["if"] == "always()"
    report = jobs["report"]
    assert report["needs"] == ["plan", "build"]
    assert "always()" in report["if"]
    assert "report render" in "\n".join(s.get("run", "") for s in report["steps"])


def test_gitlab_parent_runs_the_generated_child() -> None:
    doc = yaml.safe_load(GITLAB.read_text())
    assert any("schedule" in rule["if"] for rule in doc["workflow"]["rules"])
    plan = doc["plan"]
    assert "ci-matrix --format gitlab" in "\n".join(plan["script"])
    assert "child.yml" in plan["artifacts"]["paths"]
    trigger = doc["nightly"]["trigger"]
    assert trigger["strategy"] == "depend"
    assert trigger["include"] == [{"artifact": "child.yml", "job": "plan"}]


def test_nothing_changed_is_an_empty_github_list_and_a_one_job_child_pipeline(tmp_path: Path) -> None:
    assert ci_matrix.github_json([]) == '{"include":[]}'
    child = tmp_path / "child.yml"
    child.write_text(ci_matrix.for_ci("gitlab", []))
    doc = yaml.safe_load(child.read_text())
    assert list(doc) == ["nothing-to-build"]
    assert "nothing to build" in doc["nothing-to-build"]["script"][0]
    result = check_jsonschema("vendor.gitlab-ci", child)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_plan_only_changed_cells_and_skip_an_empty_matrix() -> None:
    github = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    plan = "\n".join(s.get("run", "") for s in github["plan"]["steps"])
    assert "args+=(--changed)" in plan
    assert github["plan"]["outputs"]["count"]
    assert github["build"]["if"] == "needs.plan.outputs.count != '0'"
    matrix_step = next(s for s in github["plan"]["steps"] if s.get("id") == "matrix")
    assert matrix_step["env"]["REGISTRY_PASSWORD"] == "${{ secrets.REGISTRY_PASSWORD }}"
    gitlab = yaml.safe_load(GITLAB.read_text())
    assert 'args="$args --changed"' in "\n".join(gitlab["plan"]["script"])


def test_changed_needs_a_valid_registry_target(cli: InProcessCli) -> None:
    result = cli("ci-matrix", "--changed", "--registry", "not a registry")
    assert result.exit_code == 2
    assert "REGISTRY" in result.stderr
