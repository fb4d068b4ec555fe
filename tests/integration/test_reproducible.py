"""Two `--no-cache` builds of a cell give byte-identical layers, every one above the base (issue 11, item 4).

The CPU cell (part of `make test`, about three minutes): two tool builds give the same layer list, the SBOM
layer included; a plain `docker build --no-cache` of a checkout whose files have other times and modes
gives the same layers too (all but the SBOM, which the tool adds after the gate). The CUDA 13.0 cell
(`long` marker: two CUDA builds, 3 to 8 minutes, `nox -s long`): two tool builds, the same layer list.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.model.naming import LOCAL_REPOSITORY
from tests.integration.conftest import Cli, checkout_copy, plain_docker_build

pytestmark = pytest.mark.integration

CPU_TAG = "2.13-cpu-debian12"
CUDA_TAG = "2.14-cuda13.0-debian12"


def build(cli: Cli, tag: str, engine) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """Build the cell without cache; (instruction, diff ID) per layer, base first."""
    result = cli("build", tag, "--no-cache", timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return layers(engine, f"{LOCAL_REPOSITORY}:{tag}")


def layers(engine, image: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(instruction, diff ID) per layer of a local image, base first; the instruction is the history entry
    of each step that wrote files (best effort: only for the failure message)."""
    found = engine.client.images.get(image)
    diff_ids = found.attrs["RootFS"]["Layers"]
    steps = [h["CreatedBy"] for h in reversed(found.history()) if h["Size"]]
    if len(steps) != len(diff_ids):
        steps = [f"layer {i}" for i in range(len(diff_ids))]
    return list(zip(steps, diff_ids, strict=True))


def assert_same(first: list[tuple[str, str]], second: list[tuple[str, str]]) -> None:
    assert len(first) == len(second)
    for (step, one), (_, other) in zip(first, second, strict=True):
        assert one == other, f"layer of `{step[-120:]}` differs between two --no-cache builds"


def test_no_cache_rebuilds_give_identical_layers_from_the_tool_and_a_checkout(
    cli: Cli, engine, local_env: dict[str, str], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    first = build(cli, CPU_TAG, engine)
    second = build(cli, CPU_TAG, engine)
    assert [step for step, _ in first] == [step for step, _ in second]
    assert len(first) >= 9, [step for step, _ in first]  # base, 6 RUN and COPY layers, cell, suite, SBOM
    assert_same(first, second)

    checkout = checkout_copy(tmp_path / "checkout", another_machine=True)
    result, image = plain_docker_build(checkout, CPU_TAG, local_env, "--no-cache")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    try:
        assert " ---> Running in " in result.stdout  # built, not taken from the cache
        assert_same(first[:-1], layers(engine, image))  # the tool's SBOM layer comes after the gate
    finally:
        engine.remove_image(image, keep_parents=True)


@pytest.mark.slow
@pytest.mark.long
def test_no_cache_rebuilds_of_a_cuda_cell_give_identical_layers(cli: Cli, engine) -> None:  # type: ignore[no-untyped-def]
    first = build(cli, CUDA_TAG, engine)
    second = build(cli, CUDA_TAG, engine)
    assert len(first) >= 13, [step for step, _ in first]  # 5 of them the CUDA and torch installs
    assert_same(first, second)
