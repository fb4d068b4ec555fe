from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.errors import ConfigError
from builder.model import naming
from builder.model.naming import CellKey, format_immutable_tag, format_tag, parse_tag

minor = st.builds(lambda a, b: f"{a}.{b}", st.integers(0, 99), st.integers(0, 99))
accelerator = st.one_of(st.just("cpu"), minor.map(lambda v: f"cuda{v}"))
os_name = st.one_of(
    st.builds(lambda a, b: f"ubuntu{a:02d}.{b:02d}", st.integers(10, 99), st.integers(0, 99)),
    st.integers(1, 99).map(lambda v: f"debian{v}"),
)
keys = st.builds(CellKey, minor, accelerator, os_name, st.sampled_from(["slim", "full"]))


@given(keys)
def test_format_then_parse_round_trips(key: CellKey) -> None:
    assert parse_tag(format_tag(key)) == key


@given(keys)
def test_parse_then_format_is_canonical(key: CellKey) -> None:
    tag = format_tag(key)
    assert format_tag(parse_tag(tag)) == tag


def test_slim_is_left_out_and_accepted_explicitly() -> None:
    key = parse_tag("2.9-cuda12.8-ubuntu22.04-slim")
    assert key == CellKey("2.9", "cuda12.8", "ubuntu22.04", "slim")
    assert key.tag == "2.9-cuda12.8-ubuntu22.04"
    assert parse_tag("2.7-cuda11.8-ubuntu22.04-full").variant == "full"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "2.9",
        "2.9-cuda12.8",
        "2.9.1-cuda12.8-ubuntu22.04",
        "2.9-rocm6.2-ubuntu22.04",
        "2.9-cuda12.8-centos7",
        "2.9-cuda12.8-ubuntu22.04-huge",
        "2.9_cuda12.8_ubuntu22.04",
    ],
)
def test_malformed_tags_name_the_grammar(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_tag(bad)
    message = str(info.value)
    assert "{torch}-{accelerator}-{os}[-{variant}]" in message
    assert "2.9-cuda12.8-ubuntu22.04" in message
    assert "\n" not in message


def test_immutable_tags() -> None:
    key = parse_tag("2.9-cuda12.8-ubuntu22.04")
    assert format_immutable_tag(key, torch_version="2.9.1", cuda_version="12.8.1", cudnn_major=9) == (
        "2.9.1-cuda12.8.1-cudnn9-ubuntu22.04"
    )
    cpu = parse_tag("2.13-cpu-debian12-full")
    assert format_immutable_tag(cpu, torch_version="2.13.0", cuda_version=None, cudnn_major=None) == (
        "2.13.0-cpu-debian12-full"
    )


def test_the_names_of_a_cell(default_matrix) -> None:  # type: ignore[no-untyped-def]
    cell = default_matrix.cell("2.14-cuda13.0-debian12-full")
    assert naming.immutable_tag(cell) == "2.14.1-cuda13.0.3-cudnn9-debian12-full"
    assert naming.floating_tag(cell) == "2.14-cuda13.0-debian12-full"
    assert naming.local_references(cell) == [
        "pytorch-cuda-images:2.14-cuda13.0-debian12-full",
        "pytorch-cuda-images:2.14.1-cuda13.0.3-cudnn9-debian12-full",
    ]
    assert ("torch", "2.14.1") in naming.cell_labels(cell)
    assert naming.CONTENT_HASH_LABEL == "dev.pytorch-cuda-images.content-hash"


def test_torch_index_url(default_matrix) -> None:  # type: ignore[no-untyped-def]
    cuda = default_matrix.cell("2.9-cuda12.6-ubuntu22.04")
    assert naming.torch_index_url(cuda) == "https://download.pytorch.org/whl/cu126"
    assert naming.torch_index_url(cuda, "https://mirror.example.com/{index}/") == (
        "https://mirror.example.com/cu126/"
    )
    pypi = default_matrix.cell("2.9-cuda12.8-ubuntu22.04")  # the default PyPI wheel carries CUDA 12.8
    assert pypi.wheel_source == "pypi" and naming.torch_index_url(pypi) == ""


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("debian:12", "", "debian", "12", ""),
        ("library/debian", "", "library/debian", "", ""),
        ("docker.io/library/debian:12", "docker.io", "library/debian", "12", ""),
        (
            "127.0.0.1:5000/pytorch/x:2.13.0-cpu-debian12",
            "127.0.0.1:5000",
            "pytorch/x",
            "2.13.0-cpu-debian12",
            "",
        ),
        ("localhost/a/b", "localhost", "a/b", "", ""),
        ("h.example.com:8443/a@sha256:abc", "h.example.com:8443", "a", "", "sha256:abc"),
        ("h.example.com/a:1@sha256:abc", "h.example.com", "a", "1", "sha256:abc"),
        ("pytorch-cuda-images:2.13-cpu-debian12", "", "pytorch-cuda-images", "2.13-cpu-debian12", ""),
    ],
)
def test_references_split_and_join_as_docker_does(
    text: str, registry: str, repository: str, tag: str, digest: str
) -> None:
    ref = naming.parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == text
    assert ref.name == (f"{registry}/{repository}" if registry else repository)
    assert str(ref.with_tag("t")) == f"{ref.name}:t"


@pytest.mark.parametrize(
    ("component", "host"),
    [
        ("harbor.example.com", True),
        ("127.0.0.1:5000", True),
        ("localhost", True),
        ("[::1]:5000", True),
        ("library", False),
        ("bad_host.example.com", False),
    ],
)
def test_registry_hosts(component: str, host: bool) -> None:
    assert naming.is_registry_host(component) is host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("localhost", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("::1", True),
        ("127.5.0.1", True),
        ("harbor.example.com:443", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert naming.is_loopback(host) is loopback
