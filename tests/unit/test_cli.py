"""The command line: in-process through typer's CliRunner (the `cli` fixture), and as users run it
(`python -m builder` subprocesses) for exit statuses, one-line errors and no traceback. No engine anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import Result

from tests.conftest import REPO
from tests.unit.conftest import NO_ENGINE, InProcessCli

COMMANDS = ("list", "validate", "render", "explain", "build")


def run_module(*args: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m builder ARGS` as a separate process."""
    env = {**os.environ, "DOCKER_HOST": NO_ENGINE, "PYTHONPATH": str(REPO), "COLUMNS": "120", "NO_COLOR": "1"}
    env.pop("MATRIX", None)
    env.pop("MIRROR", None)
    return subprocess.run(
        [sys.executable, "-m", "builder", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str] | Result) -> list[str]:
    """stderr of a failed command: only `error: ...` lines, never a traceback."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.splitlines()
    assert lines, "no error message on stderr"
    assert all(line.startswith("error: ") for line in lines), result.stderr
    return lines


@pytest.fixture(scope="module")
def listed(cli: InProcessCli) -> list[str]:
    result = cli("list")
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines()


def test_list_prints_one_tag_per_line(listed: list[str]) -> None:
    from builder.model.naming import format_tag, parse_tag

    assert "2.13-cpu-debian12" in listed
    assert "2.14-cuda13.0-debian12" in listed
    assert "2.7-cuda11.8-ubuntu22.04-full" in listed
    assert len(listed) >= 40
    assert len(listed) == len(set(listed))
    for line in listed:
        assert format_tag(parse_tag(line)) == line  # a canonical tag and nothing else


def test_list_json(cli: InProcessCli, listed: list[str]) -> None:
    result = cli("list", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    assert [row["tag"] for row in rows] == listed
    for row in rows:
        assert {"tag", "torch", "accelerator", "os", "variant", "python", "base_image"} <= set(row)
    by_tag = {row["tag"]: row for row in rows}
    cpu = by_tag["2.13-cpu-debian12"]
    assert (cpu["torch"], cpu["accelerator"], cpu["os"], cpu["variant"]) == (
        "2.13",
        "cpu",
        "debian12",
        "slim",
    )
    assert cpu["python"] == "3.11"
    assert cpu["base_image"] == "docker.io/library/debian:12"
    full = by_tag["2.9-cuda12.8-ubuntu22.04-full"]
    assert full["variant"] == "full"
    assert full["base_image"] == "docker.io/nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04"


def test_list_explain_drops(cli: InProcessCli, listed: list[str]) -> None:
    result = cli("list", "--explain-drops")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[: len(listed)] == listed
    drops = {line.split(": ", 1)[0].removeprefix("# "): line for line in lines if line.startswith("# 2.")}
    assert "2.9-cuda11.8-ubuntu22.04" in drops
    assert "PyTorch 2.9 publishes no CUDA 11.8 wheels" in drops["2.9-cuda11.8-ubuntu22.04"]
    assert not set(drops) & set(listed)


def test_list_only_selects_by_glob(cli: InProcessCli) -> None:
    result = cli("list", "--only", "2.13-cpu-*")
    assert result.exit_code == 0, result.stderr
    tags = result.stdout.splitlines()
    assert "2.13-cpu-debian12" in tags
    assert all(tag.startswith("2.13-cpu-") for tag in tags)


def test_validate_default_matrix(cli: InProcessCli) -> None:
    result = cli("validate")
    assert result.exit_code == 0, result.stderr
    assert "valid" in result.stdout


def test_validate_missing_matrix_file() -> None:
    result = run_module("validate", "--matrix", "BAD")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "BAD" in line


def test_validate_bad_matrix_file(cli: InProcessCli, tmp_path: Path) -> None:
    bad = tmp_path / "matrix.yaml"
    bad.write_text(
        "axes:\n  torch: ['2.9']\n  accelerator: [cuda12.8]\n  os: [ubuntu22.04]\n  flavour: [slim]\n"
    )
    result = cli("validate", "--matrix", str(bad))
    assert result.exit_code == 2
    lines = error_lines(result)
    assert any(str(bad) in line and "flavour" in line for line in lines), lines


def test_a_matrix_outside_the_checkout(cli: InProcessCli, tmp_path: Path) -> None:
    """A team keeps matrix.yaml in its own repository: validate and render work from any directory, images/
    goes next to the matrix, and the project's own templates/ (when it has one) replace the shipped ones."""
    project, elsewhere = tmp_path / "team-repo", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    matrix_file = project / "matrix.yaml"
    matrix_file.write_bytes((REPO / "matrix.yaml").read_bytes())

    result = cli("validate", "--matrix", str(matrix_file), cwd=elsewhere)
    assert result.exit_code == 0, result.stderr
    assert f"{matrix_file}: valid: " in result.stdout

    result = cli("render", "--matrix", str(matrix_file), cwd=elsewhere)
    assert result.exit_code == 0, result.stderr
    assert not (elsewhere / "images").exists()
    shipped = (REPO / "images" / "2.13-cpu-debian12" / "Dockerfile").read_bytes()
    assert (project / "images" / "2.13-cpu-debian12" / "Dockerfile").read_bytes() == shipped
    result = cli("render", "--check", "--matrix", str(matrix_file), cwd=elsewhere)
    assert result.exit_code == 0, result.stdout + result.stderr

    templates = project / "templates"
    shutil.copytree(REPO / "builder" / "resources" / "templates", templates)
    main = templates / "Dockerfile.j2"
    main.write_text(main.read_text().replace("do not edit by hand.", "do not edit by hand (team templates)."))
    result = cli("render", "--check", "--matrix", str(matrix_file), cwd=elsewhere)
    assert result.exit_code == 1
    assert f"stale: {project / 'images' / '2.13-cpu-debian12' / 'Dockerfile'}" in result.stdout
    assert cli("render", "--matrix", str(matrix_file), cwd=elsewhere).exit_code == 0
    assert b"(team templates)" in (project / "images" / "2.13-cpu-debian12" / "Dockerfile").read_bytes()


def test_explain_a_cell(cli: InProcessCli) -> None:
    result = cli("explain", "2.14-cuda13.0-debian12")
    assert result.exit_code == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition("  ")
        rows[name.strip()] = value.strip()
    assert rows["torch"] == "2.14.1"
    assert rows["CUDA"] == "13.0.3"
    assert rows["cuDNN"].startswith("9.")
    assert rows["Python"].startswith("3.11")
    assert rows["base image"] == "docker.io/library/debian:12"
    assert rows["minimum driver"] == "580.65.06"
    assert rows["immutable tag"] == "2.14.1-cuda13.0.3-cudnn9-debian12"
    assert rows["wheel source"].startswith("PyPI")


def test_explain_an_impossible_cell(cli: InProcessCli) -> None:
    result = cli("explain", "2.9-cuda11.8-ubuntu20.04")
    assert result.exit_code == 2
    lines = error_lines(result)
    assert any("PyTorch 2.9 publishes no CUDA 11.8 wheels" in line for line in lines)
    assert result.stdout == ""


def test_build_of_an_impossible_cell_is_refused_before_the_engine() -> None:
    result = run_module("build", "2.9-cuda11.8-ubuntu20.04")  # DOCKER_HOST answers nothing: contact = exit 3
    assert result.returncode == 2, result.stdout + result.stderr
    lines = error_lines(result)
    text = "\n".join(lines)
    wheels = next(line for line in lines if "publishes no CUDA 11.8 wheels" in line)
    assert "PyTorch 2.9 publishes no CUDA 11.8 wheels" in wheels
    published = wheels.split("publishes CUDA", 1)[1]
    for version in ("12.6", "12.8", "13.0"):
        assert version in published
    assert "2.9-cuda12.6-ubuntu22.04" in text
    assert "2.7-cuda11.8-ubuntu22.04" in text
    assert "engine" not in text.lower() and "docker" not in text.lower()  # never got as far as the engine


@pytest.mark.parametrize("command", ["explain", "build"])
@pytest.mark.parametrize("tag", ["2.9-cuda11", "2.9_cuda12.8_ubuntu22.04", "torch-latest"])
def test_malformed_tag_names_the_grammar(command: str, tag: str) -> None:
    result = run_module(command, tag)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert f"malformed tag {tag!r}" in line
    assert "{torch}-{accelerator}-{os}[-{variant}]" in line


def test_no_arguments_prints_help() -> None:
    result = run_module()
    assert result.returncode in (0, 2)
    assert "Traceback" not in result.stderr
    text = result.stdout + result.stderr
    assert "Usage" in text
    for command in COMMANDS:
        assert command in text, command


def test_help_lists_the_commands(cli: InProcessCli) -> None:
    result = cli("--help")
    assert result.exit_code == 0, result.stderr
    for command in COMMANDS:
        assert command in result.stdout


def test_unknown_option_is_a_one_line_usage_error() -> None:
    result = run_module("list", "--bogus")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "--bogus" in line


# --- --json: exactly one JSON document on stdout -----------------------------------------------------------

# engine ones (build, smoke, doctor, nightly, sbom): integration tests
JSON_COMMANDS = {"list", "explain", "build", "smoke", "doctor", "nightly", "sbom"}


def test_the_commands_with_json_are_known() -> None:
    """A new `--json` option needs its one-document test (here, or in tests/integration with an engine)."""
    from typer.main import get_command

    from builder.cli import app

    group = get_command(app)
    with_json = {
        name
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        if any("--json" in getattr(param, "opts", ()) for param in command.params)
    }
    assert with_json == JSON_COMMANDS


def test_list_json_through_json_tool() -> None:
    """`python -m builder list --json | python -m json.tool`: two real processes, as in a shell."""
    listed = run_module("list", "--json", "--explain-drops")
    assert listed.returncode == 0, listed.stderr
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=listed.stdout, capture_output=True, text=True, check=False
    )
    assert tool.returncode == 0, tool.stderr
    doc = json.loads(tool.stdout)
    assert {"cells", "dropped"} == set(doc)
    assert any(d["tag"] == "2.9-cuda11.8-ubuntu22.04" for d in doc["dropped"])


def test_explain_json(cli: InProcessCli) -> None:
    result = cli("explain", "2.14-cuda13.0-debian12", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["torch_version"] == "2.14.1"
    assert doc["cuda_version"] == "13.0.3"
    assert doc["immutable_tag"] == "2.14.1-cuda13.0.3-cudnn9-debian12"
    assert doc["min_driver"] == "580.65.06"
    assert doc["wheel_source"] == "pypi"
    assert doc["python"] == "3.11"
    assert result.stderr == ""


def test_doctor_json_is_one_document_even_when_a_check_fails(cli: InProcessCli) -> None:
    result = cli("doctor", "2.13-cpu-debian12", "--json")
    assert result.exit_code == 1  # no engine answers here
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["engine"]["status"] == "fail"
    assert "no Docker engine answers" in checks["engine"]["detail"]
    assert checks["driver"]["status"] == "pass"


def test_json_errors_leave_stdout_empty(cli: InProcessCli) -> None:
    result = cli("explain", "2.9-cuda11.8-ubuntu20.04", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert error_lines(result)
