"""`python -m tools.update_compat`: recorded PyPI answers (tests/fixtures/pypi) in, a reviewable diff out;
no network."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from builder import yaml_roundtrip
from builder.errors import MirrorError
from builder.model.compat import CompatData
from tests.conftest import REPO
from tools import compat_proposal as cp
from tools import pypi, update_compat, wheel_metadata

FIXTURES = REPO / "tests" / "fixtures" / "pypi"
DATA_TEXT = (FIXTURES / "compat.yaml").read_text()
FILES = "https://files.pythonhosted.org/packages"
MIRROR = "https://mirror.example/simple"


class FakeIndex:
    """Answers GETs from the fixtures: PyPI's JSON API, a PEP 691 mirror, and wheels by Range request."""

    def __init__(self, *, mirror_html_for: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.routes: dict[str, bytes] = {
            "https://pypi.org/pypi/torch/json": (FIXTURES / "torch.json").read_bytes(),
            "https://pypi.org/pypi/torch/2.15.1/json": (FIXTURES / "torch-2.15.1.json").read_bytes(),
            "https://pypi.org/pypi/torchvision/json": (FIXTURES / "torchvision.json").read_bytes(),
            "https://pypi.org/pypi/torchvision/0.29.3/json": (
                FIXTURES / "torchvision-0.29.3.json"
            ).read_bytes(),
        }
        self.wheel = wheel_bytes("torch-2.15.1", (FIXTURES / "torch-2.15.1.metadata").read_text())
        simple = json.loads((FIXTURES / "simple-torch.json").read_text())
        for item in simple["files"]:
            if item["filename"] == "torch-2.15.1-cp312-cp312-manylinux_2_28_x86_64.whl":
                item["size"] = len(self.wheel)
        self.routes[f"{MIRROR}/torch/"] = json.dumps(simple).encode()
        self.routes[
            "https://mirror.example/packages/e3/21/torch-2.16.0-cp312-cp312-manylinux_2_28_x86_64.whl.metadata"
        ] = (FIXTURES / "torch-2.16.0.metadata").read_bytes()
        self.wheel_url = (
            "https://mirror.example/packages/d2/12/torch-2.15.1-cp312-cp312-manylinux_2_28_x86_64.whl"
        )
        for project in mirror_html_for:
            self.routes[f"{MIRROR}/{project}/"] = (
                b"<!DOCTYPE html><html><body><a href='x'>x</a></body></html>"
            )

    def __call__(self, url: str, headers: Mapping[str, str]) -> bytes:
        self.calls.append((url, dict(headers)))
        if url == self.wheel_url and "Range" in headers:
            first, last = headers["Range"].removeprefix("bytes=").split("-")
            return self.wheel[int(first) : int(last) + 1]
        if url not in self.routes:
            raise pypi.NotFoundError(f"{url}: not found (HTTP 404)")
        return self.routes[url]


def wheel_bytes(dist_info: str, metadata: str) -> bytes:
    """A small but real wheel: a module, padding, and `<dist>.dist-info/METADATA`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        wheel.writestr("torch/__init__.py", "__version__ = '2.15.1'\n")
        wheel.writestr("torch/lib/padding.bin", bytes(range(256)) * 4096)  # 1 MiB: several Range blocks
        wheel.writestr(f"{dist_info}.dist-info/METADATA", metadata)
        wheel.writestr(f"{dist_info}.dist-info/RECORD", "")
    return buffer.getvalue()


# --- requirements -> CUDA, cuDNN, NCCL; wheel tags -> Python ------------------------------------------


@pytest.mark.parametrize(
    ("requirement", "cuda"),
    [
        ('cuda-toolkit[cublas,cudart,nvrtc]==13.0.3; platform_system == "Linux"', "13.0"),
        (
            'nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux" and platform_machine == "x86_64"',
            "12.8",
        ),
        ('nvidia-cuda-runtime==13.0.96; platform_system == "Linux"', "13.0"),
        ("nvidia-cuda-runtime-cu11==11.8.89", "11.8"),
    ],
)
def test_cuda_from_requires_dist(requirement: str, cuda: str) -> None:
    facts = cp.wheel_cuda(["filelock", requirement, "sympy>=1.13.3"])
    assert facts.cuda is not None
    assert facts.cuda.version == cuda


def test_cudnn_and_nccl_pins_shortened_to_three_parts() -> None:
    facts = cp.wheel_cuda(
        [
            'nvidia-cudnn-cu12==9.10.2.21; platform_system == "Linux" and platform_machine == "x86_64"',
            'nvidia-nccl-cu12==2.27.5; platform_system == "Linux" and platform_machine == "x86_64"',
            'nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux" and platform_machine == "x86_64"',
        ]
    )
    assert facts.cudnn == cp.Pin("9.10.2", "nvidia-cudnn-cu12==9.10.2.21")
    assert facts.nccl == cp.Pin("2.27.5", "nvidia-nccl-cu12==2.27.5")
    assert facts.cuda == cp.Pin("12.8", "nvidia-cuda-runtime-cu12==12.8.90")


def test_toolkit_pin_shown_with_extras_elided() -> None:
    facts = cp.wheel_cuda(['cuda-toolkit[cublas,cudart]==13.2.2; platform_system == "Linux"'])
    assert facts.cuda == cp.Pin("13.2", "cuda-toolkit[...]==13.2.2")


def test_non_linux_and_unpinned_requirements_ignored() -> None:
    facts = cp.wheel_cuda(
        [
            'nvidia-cuda-runtime-cu12==12.4.127; platform_system == "Windows"',
            "cuda-toolkit>=13.0",
            "not a requirement ==",
        ]
    )
    assert facts == cp.WheelCuda()


def test_cpu_only_wheel_has_no_cuda() -> None:
    assert cp.wheel_cuda(["filelock", "sympy"]).cuda is None


def test_pythons_from_linux_x86_64_cp_tags_without_free_threaded() -> None:
    names = [
        "torch-2.15.1-cp311-cp311-manylinux_2_28_x86_64.whl",
        "torch-2.15.1-cp315-cp315-manylinux_2_28_x86_64.whl",
        "torch-2.15.1-cp314-cp314t-manylinux_2_28_x86_64.whl",
        "torch-2.15.1-cp310-cp310-macosx_14_0_arm64.whl",
        "torch-2.15.1-cp310-cp310-manylinux_2_28_aarch64.whl",
        "torch-2.15.1.tar.gz",
    ]
    assert cp.linux_pythons(pypi.ReleaseFile(n) for n in names) == ["3.11", "3.15"]


def test_pythons_from_requires_python_when_no_tags() -> None:
    assert cp.pythons_from_requires(">=3.11", ["3.8", "3.10", "3.11", "3.14"]) == ["3.11", "3.14"]


# --- which releases are newer than the data ------------------------------------------------------------


def load_releases(name: str) -> dict[str, list[pypi.ReleaseFile]]:
    return pypi.PypiJson(fetch=FakeIndex()).releases(name)


def test_new_patches_and_new_minors_only() -> None:
    data = cp.parse_data(DATA_TEXT)
    # 2.3.0: an older minor; 2.16.1: yanked; 2.17.0rc1: a pre-release; 2.14.1, 2.15.0: known
    assert cp.newer_torch(data, load_releases("torch")) == ["2.15.1", "2.16.0"]
    assert cp.newer_torchvision(data, load_releases("torchvision")) == ["0.29.3", "0.30.0"]


def test_torchvision_goes_to_the_newest_torch_it_accepts() -> None:
    releases = [
        pypi.Release("0.29.3", (), ("numpy", "torch==2.15.1")),
        pypi.Release("0.30.0", (), ("torch>=2.15.0",)),
        pypi.Release("0.30.1", (), ("numpy",)),
    ]
    chosen = cp.assign_torchvision(releases, ["2.14.1", "2.15.1", "2.16.0"])
    assert {k: v.version for k, v in chosen.items()} == {"2.15.1": "0.29.3", "2.16.0": "0.30.0"}


# --- the whole check against the recorded PyPI ---------------------------------------------------------


@pytest.fixture(scope="module")
def proposal() -> cp.Proposal:
    return update_compat.check(data_text=DATA_TEXT, fetch=FakeIndex())


def test_check_reports_patch_and_minor_changes(proposal: cp.Proposal) -> None:
    changes = {(c.minor, c.field): (c.old, c.new) for c in proposal.changes}
    assert changes == {
        ("2.15", "version"): ("2.15.0", "2.15.1"),
        ("2.15", "released"): ("2026-10-28", "2026-12-02"),
        ("2.15", "torchvision"): ("0.29.2", "0.29.3"),
        ("2.15", "cudnn"): ("9.26.0", "9.27.0"),
        ("2.16", "entry"): (None, "2.16.0"),
    }
    assert not proposal.current


def test_proposed_data_is_valid_and_complete(proposal: cp.Proposal) -> None:
    data = CompatData.model_validate(yaml.safe_load(proposal.new_text))
    patched = data.torch["2.15"]
    assert (patched.version, patched.torchvision, patched.cudnn) == ("2.15.1", "0.29.3", "9.27.0")
    assert patched.cuda == ["13.0", "13.2"]  # untouched: only PyPI's CUDA is known to the check
    assert "https://pypi.org/project/torch/2.15.1/" in patched.source
    assert "https://pypi.org/project/torchvision/0.29.3/" in patched.source
    new = data.torch["2.16"]
    assert new.version == "2.16.0"
    assert new.released == "2027-01-20"
    assert new.torchvision == "0.30.0"
    assert new.python == ["3.12", "3.13", "3.14", "3.15"]
    assert new.requires_python == ">=3.12"
    assert (new.pypi_cuda, new.cudnn, new.nccl) == ("13.4", "9.28.1", "2.31.2")
    assert new.cuda == ["13.4"]
    assert new.torchaudio is None
    assert data.torch["2.14"] == cp.parse_data(DATA_TEXT).torch["2.14"]


def test_diff_keeps_comments_and_flags_what_needs_a_human(proposal: cp.Proposal) -> None:
    diff = proposal.diff
    assert diff.startswith("--- a/builder/resources/compat.yaml\n+++ b/builder/resources/compat.yaml\n")
    assert '+    cudnn: "9.27.0"              # nvidia-cudnn-cu13==9.27.0.12\n' in diff
    assert '+    pypi_cuda: "13.4"            # cuda-toolkit[...]==13.4.1\n' in diff
    assert '+    torchvision: "0.30.0"        # Requires-Dist: torch==2.16.0\n' in diff
    assert "# unverified: compat check reads only the PyPI wheel's CUDA" in diff
    assert '     nccl: "2.30.7"               # nvidia-nccl-cu13==2.30.7\n' in diff  # context, untouched
    assert any("CUDA 13.4" in note and "cuda:" in note for note in proposal.notes)
    assert any("torch 2.16 is new" in note for note in proposal.notes)


def test_diff_applies_with_git_apply(proposal: cp.Proposal, tmp_path: Path) -> None:
    target = tmp_path / "builder" / "resources" / "compat.yaml"
    target.parent.mkdir(parents=True)
    target.write_text(DATA_TEXT)
    (tmp_path / "change.diff").write_text(proposal.diff)
    subprocess.run(["git", "apply", "change.diff"], cwd=tmp_path, check=True, capture_output=True)
    assert target.read_text() == proposal.new_text


def test_json_api_requests(proposal: cp.Proposal) -> None:
    fake = FakeIndex()
    update_compat.check(data_text=DATA_TEXT, fetch=fake)
    urls = [url for url, _ in fake.calls]
    assert urls == [
        "https://pypi.org/pypi/torch/json",
        "https://pypi.org/pypi/torch/2.15.1/json",
        "https://pypi.org/pypi/torch/2.16.0/json",  # 404: the project page's `info` is 2.16.0
        "https://pypi.org/pypi/torchvision/json",
        "https://pypi.org/pypi/torchvision/0.29.3/json",
        "https://pypi.org/pypi/torchvision/0.30.0/json",  # 404: `info` again
    ]


def test_current_data_gives_no_diff() -> None:
    current = DATA_TEXT.replace('version: "2.15.0"', 'version: "2.16.0"')  # nothing newer on "PyPI"
    proposal = cp.propose(current, [], [])
    assert proposal.current
    assert proposal.diff == ""
    assert proposal.changes == []


def test_shipped_data_round_trips_byte_for_byte() -> None:
    text = cp.shipped_data_text()
    data = cp.parse_data(text)
    document = yaml_roundtrip.load(text)
    assert list(document["torch"]) == list(data.torch)
    assert yaml_roundtrip.dump(document) == text  # comments, quotes, nulls and alignment all kept


def test_comment_lines_after_an_updated_field_stay() -> None:
    text = DATA_TEXT.replace(
        '    cudnn: "9.26.0"              # nvidia-cudnn-cu13==9.26.0.51\n',
        '    cudnn: "9.26.0"              # nvidia-cudnn-cu13==9.26.0.51\n    # a reviewer\'s note\n',
    )
    release = pypi.Release("2.15.1", (), ('nvidia-cudnn-cu13==9.27.0.12; platform_system == "Linux"',))
    new_text = cp.propose(text, [release]).new_text
    assert (
        '    cudnn: "9.27.0"              # nvidia-cudnn-cu13==9.27.0.12\n    # a reviewer\'s note\n'
        in new_text
    )


# --- a PEP 691 mirror ----------------------------------------------------------------------------------


def test_mirror_uses_pep691_pep658_and_range_requests() -> None:
    fake = FakeIndex(mirror_html_for=("torchvision",))
    proposal = update_compat.check(index_url=MIRROR, data_text=DATA_TEXT, fetch=fake)
    via_mirror = update_compat.check(data_text=DATA_TEXT, fetch=FakeIndex())
    assert proposal.new_text == via_mirror.new_text  # the same facts either way
    accepts = {url: headers.get("Accept", "") for url, headers in fake.calls}
    assert accepts[f"{MIRROR}/torch/"].startswith("application/vnd.pypi.simple.v1+json")
    assert any(url.endswith("torch-2.16.0-cp312-cp312-manylinux_2_28_x86_64.whl.metadata") for url in accepts)
    ranges = [h["Range"] for url, h in fake.calls if url == fake.wheel_url]
    assert 1 <= len(ranges) <= 8, ranges  # the zip directory and METADATA, never the whole wheel
    assert any("torchvision/: not a PEP 691 JSON project page" in n for n in proposal.notes)


def test_unreachable_mirror_is_an_error_not_a_fallback() -> None:
    def fetch(url: str, headers: Mapping[str, str]) -> bytes:
        if url.startswith(MIRROR):
            raise MirrorError(f"{url}: unreachable: [Errno -2] Name or service not known")
        return FakeIndex()(url, headers)

    with pytest.raises(MirrorError, match="unreachable"):
        update_compat.check(index_url=MIRROR, data_text=DATA_TEXT, fetch=fetch)


def test_mirror_missing_project_is_an_error() -> None:
    fake = FakeIndex()
    fake.routes.pop(f"{MIRROR}/torch/")
    with pytest.raises(MirrorError, match="404"):
        update_compat.check(index_url=MIRROR, data_text=DATA_TEXT, fetch=fake)


def test_metadata_from_a_remote_zip() -> None:
    wheel = wheel_bytes("demo-1.0", "Name: demo\nRequires-Dist: numpy>=2\nRequires-Dist: torch==2.15.1\n")

    def fetch(url: str, headers: Mapping[str, str]) -> bytes:
        first, last = headers["Range"].removeprefix("bytes=").split("-")
        return wheel[int(first) : int(last) + 1]

    text = wheel_metadata.wheel_metadata(fetch, "https://example.invalid/demo.whl", len(wheel))
    assert wheel_metadata.requires_dist_from_metadata(text) == ("numpy>=2", "torch==2.15.1")


# --- the command ---------------------------------------------------------------------------------------


def test_applied_proposal_is_current(proposal: cp.Proposal) -> None:
    again = update_compat.check(data_text=proposal.new_text, fetch=FakeIndex())
    assert again.current, again.diff


def test_cli_prints_the_diff_and_fails_on_drift_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], proposal: cp.Proposal
) -> None:
    app = update_compat.app
    check = update_compat.check
    data = {"text": DATA_TEXT}
    monkeypatch.setattr(
        update_compat, "check", lambda index_url=None: check(index_url, data["text"], FakeIndex())
    )
    assert app([], standalone_mode=False) in (None, 0)
    out, err = capsys.readouterr()
    assert out == proposal.diff
    assert "review the diff" in err
    assert app(["--fail-on-drift"], standalone_mode=False) == 1
    capsys.readouterr()
    data["text"] = proposal.new_text
    assert app(["--fail-on-drift"], standalone_mode=False) in (None, 0)
    assert capsys.readouterr().out == "compat data is current\n"


def test_json_output_is_what_the_report_reads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], proposal: cp.Proposal, tmp_path: Path
) -> None:
    check = update_compat.check
    monkeypatch.setattr(
        update_compat, "check", lambda index_url=None: check(index_url, DATA_TEXT, FakeIndex())
    )
    assert update_compat.app(["--json"], standalone_mode=False) in (None, 0)
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"current": False, "diff": proposal.diff, "notes": proposal.notes}
    (tmp_path / "compat.json").write_text(json.dumps(printed))
    (tmp_path / "cells").mkdir()
    command = [sys.executable, "-m", "builder", "report", "render", "cells", "--out", "site"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shown = subprocess.run(
        [*command, "--compat", "compat.json"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert "compat data lacks releases" in shown.stdout
    assert json.loads((tmp_path / "site" / "report.json").read_text())["compat"] == printed
    (tmp_path / "compat.json").write_text("{}")
    bad = subprocess.run(
        [*command, "--compat", "compat.json"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        "error: compat.json: not the JSON of `python -m tools.update_compat --json` "
        "(keys: current, diff, notes)"
    ]


def test_a_cuda_pin_the_data_does_not_record_is_a_note(proposal: cp.Proposal) -> None:
    """torch 2.16.0 (new) pins cuda-toolkit==13.4.1: the reviewer is told to record it in cuda_pins."""
    expected = 'set torch.2.16.cuda_pins to {"13.4": {cuda-toolkit: "13.4.1"}} by hand'
    assert any(expected in note for note in proposal.notes), proposal.notes
    data = cp.parse_data(cp.shipped_data_text())
    assert cp._cuda_pin_note("2.14.1", cp.Pin("13.0", "cuda-toolkit[...]==13.0.3"), data) is None
    changed = cp._cuda_pin_note("2.14.1", cp.Pin("13.0", "cuda-toolkit[...]==13.0.2"), data)
    assert changed is not None and "pins cuda-toolkit==13.0.2" in changed
