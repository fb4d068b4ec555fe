"""Platforms per cell: the matrix names them, the compat data says which have wheels, and an impossible
one is refused (include) or left out (matrix default, override) with its reason and what would work."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from builder.model import compat, matrix, platforms
from builder.model.naming import parse_tag
from tests.unit.conftest import InProcessCli
from tests.unit.test_matrix import error_lines, write_matrix

ARM = "linux/arm64"


def test_compat_knows_which_releases_publish_aarch64_wheels() -> None:
    data = compat.load()
    assert compat.arm64_accelerators(data.torch["2.9"]) == ["cpu"]  # PyPI's 2.9.1 aarch64: a CPU build
    assert compat.arm64_accelerators(data.torch["2.14"]) == ["cpu", "cuda13.0"]  # CUDA 13 from 2.11
    assert compat.arm64_accelerators(data.torch["2.15"]) == ["cpu", "cuda13.2"]
    assert compat.arm64_accelerators(data.torch["2.5"]) == []  # no +cpu aarch64 wheel
    for minor, release in data.torch.items():
        assert release.aarch64 is not None, minor
        assert release.aarch64.source, minor


def test_amd64_is_always_possible_and_arm64_only_with_wheels() -> None:
    data = compat.load()
    settings = compat.Settings()
    assert compat.platform_problems(parse_tag("2.9-cuda12.8-ubuntu22.04"), "linux/amd64", settings, data) == (
        [],
        [],
    )
    assert compat.platform_problems(parse_tag("2.14-cuda13.0-debian13"), ARM, settings, data) == ([], [])
    (reason,), _ = compat.platform_problems(parse_tag("2.14-cuda12.6-debian12"), ARM, settings, data)
    assert "linux/arm64 wheels on PyPI are CUDA 13.0 builds; no CUDA 12.6 build" in reason
    assert reason.endswith("(linux/arm64 works for 2.14-cpu/cuda13.0)")
    reasons, _ = compat.platform_problems(parse_tag("2.5-cpu-debian13"), ARM, settings, data)
    assert any("no torch==2.5.1+cpu wheel for linux/arm64" in r for r in reasons)
    assert any("no cp313 wheels for linux/arm64" in r and "Python 3.9-3.12" in r for r in reasons)
    assert all(r.endswith("(linux/arm64 has no 2.5 cell)") for r in reasons)


def test_custom_wheel_index_turns_the_refusal_into_a_warning() -> None:
    settings = compat.Settings(wheel_index="https://nexus.example.com/whl/cu126")
    reasons, warnings = compat.platform_problems(
        parse_tag("2.14-cuda12.6-debian12"), ARM, settings, compat.load()
    )
    assert reasons == []
    assert "trusting the custom wheel index https://nexus.example.com/whl/cu126" in warnings[0]


def test_default_matrix_names_platforms(default_matrix: matrix.Matrix) -> None:
    assert default_matrix.spec.platforms == ["linux/amd64"]
    assert default_matrix.cell("2.14-cuda13.0-debian13").platforms == ("linux/amd64", ARM)  # its include
    assert default_matrix.cell("2.13-cpu-debian12").platforms == ("linux/amd64",)
    assert default_matrix.cell("2.14-cuda13.0-debian12").platforms == ("linux/amd64",)


ARM_OVERRIDE = [
    {"select": "2.1[1-5]-cuda13.*-*[0-9]", "platforms": ["linux/amd64", ARM]}
]  # matrix.yaml's example


def test_cuda13_override_adds_arm64_where_pypi_has_that_build(tmp_path: Path) -> None:
    m = matrix.load(write_matrix(tmp_path, overrides=ARM_OVERRIDE))
    assert m.cell("2.14-cuda13.0-debian12").platforms == ("linux/amd64", ARM)
    left_out = {(d.key.tag, d.platform) for d in m.platform_drops}
    assert ("2.15-cuda13.0-debian12", ARM) in left_out  # PyPI's 2.15 aarch64 wheel is CUDA 13.2
    assert m.cell("2.15-cuda13.0-debian12").platforms == ("linux/amd64",)
    assert m.cell("2.15-cuda13.2-debian12").platforms == ("linux/amd64", ARM)


def test_unknown_platform_is_one_line_with_the_allowed_values(tmp_path: Path) -> None:
    (line,) = error_lines(write_matrix(tmp_path, platforms=["linux/s390x"]))
    assert line.startswith(f"{tmp_path / 'matrix.yaml'}: platforms[0]: 'linux/s390x'")
    assert "'linux/amd64' or 'linux/arm64'" in line


def test_include_with_an_impossible_platform_is_refused_with_what_works(tmp_path: Path) -> None:
    include = [
        {"torch": "2.14", "accelerator": "cuda12.6", "os": "debian12", "platforms": ["linux/amd64", ARM]}
    ]
    (line,) = error_lines(write_matrix(tmp_path, include=include))
    assert "include[0]: 2.14-cuda12.6-debian12 is impossible: linux/arm64: PyTorch 2.14's" in line
    assert "(linux/arm64 works for 2.14-cpu/cuda13.0)" in line


def test_override_leaves_an_impossible_platform_out(tmp_path: Path) -> None:
    overrides = [{"select": "2.9-*", "platforms": ["linux/amd64", ARM]}]
    m = matrix.load(write_matrix(tmp_path, overrides=overrides))
    assert m.cell("2.9-cpu-debian12").platforms == ("linux/amd64", ARM)
    assert m.cell("2.9-cuda12.8-debian12").platforms == ("linux/amd64",)
    reasons = {d.key.tag: d.reasons for d in m.platform_drops if d.platform == ARM}
    assert "CPU builds; no CUDA 12.8 build for linux/arm64" in reasons["2.9-cuda12.8-debian12"][0]


def test_a_cell_with_no_possible_platform_is_dropped(tmp_path: Path) -> None:
    m = matrix.load(write_matrix(tmp_path, platforms=[ARM], include=[], overrides=[]))
    tags = {c.tag for c in m.cells}
    assert "2.9-cpu-debian12" in tags
    assert "2.9-cuda12.8-debian12" not in tags
    assert all(c.platforms == (ARM,) for c in m.cells)


@pytest.mark.parametrize(
    "command", [("explain", "2.14-cuda13.0-debian13"), ("list", "--json"), ("list", "--platforms")]
)
def test_explain_and_list_show_platforms(cli: InProcessCli, command: tuple[str, ...]) -> None:
    result = cli(*command)
    assert result.exit_code == 0, result.stderr
    if command[0] == "explain":
        rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in result.stdout.splitlines())
        assert rows["platforms"] == "linux/amd64, linux/arm64"
        # torch 2.14's aarch64 wheel is built for other GPUs than its x86_64 wheel: one row per CPU
        assert rows["GPU architectures (x86_64)"] == "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120"
        assert rows["GPU architectures (aarch64)"] == "sm_80 sm_90 sm_100 sm_110 sm_120"
    elif command[1] == "--platforms":
        lines = result.stdout.splitlines()
        assert "2.14-cuda13.0-debian13 linux/amd64,linux/arm64" in lines
        assert "2.13-cpu-debian12 linux/amd64" in lines
    else:
        rows = {row["tag"]: row for row in json.loads(result.stdout)}
        assert rows["2.14-cuda13.0-debian13"]["platforms"] == ["linux/amd64", ARM]
        assert rows["2.13-cpu-debian12"]["platforms"] == ["linux/amd64"]


def test_list_explain_drops_gives_each_left_out_platform(cli: InProcessCli, tmp_path: Path) -> None:
    path = write_matrix(tmp_path, overrides=ARM_OVERRIDE)
    result = cli("list", "--explain-drops", "--matrix", str(path))
    assert result.exit_code == 0, result.stderr
    assert any(
        line.startswith(
            "# 2.15-cuda13.0-debian12 linux/arm64: PyTorch 2.15's linux/arm64 wheels on PyPI are CUDA 13.2"
        )
        for line in result.stdout.splitlines()
    )
    document = json.loads(cli("list", "--json", "--explain-drops", "--matrix", str(path)).stdout)
    left_out = [d for d in document["dropped"] if d.get("platform") == ARM]
    assert any(d["tag"] == "2.15-cuda13.0-debian12" and "CUDA 13.2" in d["reasons"][0] for d in left_out)


def test_emulation_needs_the_native_platform_or_an_enabled_binfmt_handler() -> None:
    assert platforms.emulation_available("linux/amd64", native="linux/amd64")
    assert platforms.native_platform("aarch64") == ARM
    assert platforms.native_platform("x86_64") == "linux/amd64"
    assert platforms.tag_suffix(ARM) == "linux-arm64"
    registered = platforms.binfmt_path("arm64").is_file()
    assert platforms.emulation_available(ARM, native="linux/amd64") is (
        registered and platforms.binfmt_path("arm64").read_text().startswith("enabled")
    )
    assert "qemu-user-static binfmt-support" in platforms.enable_hint(ARM)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("2.13-cpu-debian12", "--platform", "linux/s390x"),
            "--platform linux/s390x: unknown platform; allowed: linux/amd64, linux/arm64",
        ),
        (
            ("2.14-cuda12.6-debian12", "--platform", "linux/arm64"),
            "--platform linux/arm64: 2.14-cuda12.6-debian12 is not built for linux/arm64: PyTorch 2.14's "
            "linux/arm64 wheels on PyPI are CUDA 13.0 builds",
        ),
        (
            ("2.13-cpu-debian12", "--platform", "linux/arm64"),
            "--platform linux/arm64: 2.13-cpu-debian12 is not built for linux/arm64: matrix.yaml gives it "
            "only linux/amd64",
        ),
    ],
)
def test_build_refuses_a_bad_platform_in_one_line_before_any_engine(
    cli: InProcessCli, args: tuple[str, ...], expected: str
) -> None:
    result = cli("build", *args)
    assert result.exit_code == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {expected}")


def test_a_platform_the_engine_cannot_run_is_refused_with_how_to_enable_it() -> None:
    from builder.build import pipeline
    from builder.errors import ConfigError
    from builder.output import Output

    cell = matrix.load().cell("2.14-cuda13.0-debian13")
    # an arm64 engine with no x86_64 handler registered here (this host registers only qemu-aarch64)
    assert not platforms.emulation_available("linux/amd64", native=ARM)
    with pytest.raises(ConfigError) as info:
        pipeline.choose_platforms(cell, ["linux/amd64"], ARM, Output())
    assert "this linux/arm64 engine cannot run it; register QEMU for amd64" in str(info.value)
    assert pipeline.choose_platforms(cell, None, ARM, Output()) == [ARM]  # the rest: a warning


def test_doctor_says_how_to_enable_binfmt_when_a_platform_cannot_run() -> None:
    from builder.build.gate import platform_checks

    cell = matrix.load().cell("2.14-cuda13.0-debian13")
    checks = {c.name: c for c in platform_checks(cell, [], ARM)}
    assert checks["platform linux/arm64"].status == "pass"
    amd64 = checks["platform linux/amd64"]
    assert (amd64.status, amd64.blocking) == ("warn", False)
    assert "apt-get install qemu-user-static binfmt-support" in amd64.detail
    assert "tonistiigi/binfmt --install amd64" in amd64.detail


def test_each_platform_has_its_own_hash_lock(tmp_path: Path) -> None:
    from builder.build import cell_lock
    from tests.conftest import REPO

    cell = matrix.load().cell("2.14-cuda13.0-debian13")
    assert cell_lock.other_platforms([cell]) == {"linux-arm64": [cell]}
    assert cell_lock.problems([cell], REPO, {}, "linux-arm64") == []
    arm = (REPO / "images" / cell.tag / "requirements.linux-arm64.txt").read_text()
    assert "# platform: linux-arm64 (aarch64-manylinux_2_40)" in arm
    assert arm != (REPO / "images" / cell.tag / "requirements.linux-amd64.txt").read_text()
    (problem,) = cell_lock.problems([cell], tmp_path, {}, "linux-arm64")
    assert "requirements.linux-arm64.txt" in problem
    context = cell_lock.context_files(cell, REPO, {})
    assert sorted(context) == [f"images/{cell.tag}/requirements.linux-{a}.txt" for a in ("amd64", "arm64")]


DEBIAN12_ENTRY = """enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: PF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
"""


def test_a_binfmt_entry_says_which_qemu_and_whether_it_runs_torch_in_containers() -> None:
    entry = platforms.parse_binfmt(DEBIAN12_ENTRY)
    assert (entry.enabled, entry.interpreter, entry.flags) == (
        True,
        "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
        "PF",
    )
    assert entry.fixed and entry.version is None and not entry.usable
    assert "version is unknown" in (entry.problem() or "")
    old = dataclasses.replace(
        entry, version=platforms.parse_qemu_version("qemu-aarch64 version 7.2.19 (Debian)")
    )
    assert old.version == (7, 2, 19)
    assert "older than 10.0" in (old.problem() or "") and not old.usable
    assert old.describe() == "QEMU 7.2.19 (/usr/libexec/qemu-binfmt/aarch64-binfmt-P, flags PF)"
    new = dataclasses.replace(
        entry,
        version=platforms.parse_qemu_version("qemu-aarch64 version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)"),
    )
    assert new.usable and new.problem() is None
    assert "F flag" in (dataclasses.replace(new, flags="P").problem() or "")
    assert dataclasses.replace(new, enabled=False).problem() == "the registration is disabled"
    assert not platforms.parse_binfmt("disabled\n").enabled


def test_doctor_names_the_registered_qemu_and_whether_it_is_new_enough() -> None:
    from builder.build.gate import platform_checks

    entry = platforms.registered_qemu("arm64")
    cell = matrix.load().cell("2.14-cuda13.0-debian13")
    (check,) = [c for c in platform_checks(cell, [], "linux/amd64") if c.name == f"platform {ARM}"]
    if entry is None or not entry.enabled:
        assert check.status == "warn" and "cannot run it" in check.detail
    elif entry.usable:
        assert check.status == "pass" and entry.describe() in check.detail
    else:
        assert check.status == "warn" and f"is registered but {entry.problem()}" in check.detail


def test_nightly_plans_one_content_hash_per_platform_and_skips_only_when_every_one_is_there() -> None:
    from builder.build import lock, pipeline
    from builder.build.render import Renderer, templates_for
    from builder.model import profiles
    from builder.operate.nightly import Planned, plan

    m = matrix.load()
    cell = m.cell("2.14-cuda13.0-debian13")
    profile = profiles.resolve(m, "official")
    digest = "sha256:" + "0" * 64
    lock_data = lock.read(lock.lock_path(m.path))
    renderer = Renderer(templates_for(m.path))
    (planned,) = plan([cell], renderer, profile, lock_data, lambda _: digest)
    assert list(planned.content_hashes) == ["linux/amd64", "linux/arm64"]
    context = pipeline.build_context(renderer, cell, profile, lock_data)
    # the first platform's hash is the plain one a single-platform build carries; arm64's differs
    assert planned.content_hashes["linux/amd64"] == pipeline.cell_content_hash(
        context, profile.build_args(cell), digest
    )
    assert planned.content_hashes["linux/arm64"] != planned.content_hashes["linux/amd64"]
    amd64_only = {"linux/amd64": planned.content_hashes["linux/amd64"]}
    assert not planned.done(amd64_only)  # the registry's index lacks arm64's image: rebuild
    assert planned.done(amd64_only, ["linux/amd64"])  # an engine that builds amd64 only: done
    assert planned.done(dict(planned.content_hashes))
    assert not planned.done({**planned.content_hashes, "linux/arm64": "stale"})
    assert not Planned(cell, {}, "base missing").done({})


def test_nightly_gives_a_multi_platform_cell_one_row_per_platform(tmp_path: Path) -> None:
    from builder.build.pipeline import BuiltCell
    from builder.operate.nightly import _platform_rows

    cell = matrix.load().cell("2.14-cuda13.0-debian13")
    amd64 = BuiltCell(cell, "sha256:1", [], "h", 135.5, None, 5_750_000_000, platform="linux/amd64")
    arm_folder = tmp_path / cell.tag / "linux-arm64"  # the run folder below the runs root
    arm_folder.mkdir(parents=True)
    smoke = {"total_s": 52.0, "checks": [{"name": "torch", "status": "fail", "detail": "SIGSEGV"}]}
    (arm_folder / "smoke-result.json").write_text(json.dumps(smoke))
    rows = _platform_rows(cell, [amd64], list(cell.platforms), tmp_path, failed=ARM)
    assert [(r.platform, r.status, r.size_bytes, r.build_s) for r in rows] == [
        ("linux/amd64", "passed", 5_750_000_000, 135.5),
        (ARM, "failed", None, None),
    ]
    assert (rows[1].smoke_s, rows[1].failing_check) == (52.0, "torch")
    (only_amd64,) = _platform_rows(cell, [amd64], ["linux/amd64"], tmp_path)[1:]
    assert (only_amd64.platform, only_amd64.status) == (ARM, "skipped")  # no binfmt: not built here
