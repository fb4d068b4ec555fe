from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.errors import ConfigError
from builder.model.tags import CellKey, format_tag, immutable_tag, parse_tag

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
    assert immutable_tag(key, torch_version="2.9.1", cuda_version="12.8.1", cudnn_major=9) == (
        "2.9.1-cuda12.8.1-cudnn9-ubuntu22.04"
    )
    cpu = parse_tag("2.13-cpu-debian12-full")
    assert immutable_tag(cpu, torch_version="2.13.0", cuda_version=None, cudnn_major=None) == (
        "2.13.0-cpu-debian12-full"
    )
