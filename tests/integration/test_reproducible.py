"""Two `--no-cache` builds of the CPU cell give byte-identical RUN layers (issue 11, item 4).

Every layer a RUN step makes (apt, the venv, the hash lock's install) has the same digest in both builds;
the COPY layers may differ, and then only in a folder's time: the legacy builder stamps the folder it
copies into with the time of the copy (docs/DESIGN.md, "Byte-identical layers"). About three minutes.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.integration.conftest import Cli

pytestmark = pytest.mark.integration

TAG = "2.13-cpu-debian12"


def build_and_save(cli: Cli, folder: Path) -> list[tuple[str, str, Path]]:
    """Build TAG without cache, `docker save` it; (instruction, diff ID, layer tar) per layer."""
    result = cli("build", TAG, "--no-cache", timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    folder.mkdir()
    subprocess.run(
        ["docker", "save", "-o", str(folder / "image.tar"), f"pytorch-cuda-images:{TAG}"], check=True
    )
    with tarfile.open(folder / "image.tar") as tar:
        tar.extractall(folder, filter="tar")
    (folder / "image.tar").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())[0]
    config = json.loads((folder / manifest["Config"]).read_text())
    steps = [h.get("created_by", "") for h in config["history"] if not h.get("empty_layer")]
    diff_ids = config["rootfs"]["diff_ids"]
    assert len(steps) == len(diff_ids) == len(manifest["Layers"])
    return list(zip(steps, diff_ids, (folder / p for p in manifest["Layers"]), strict=True))


def entries(layer: Path) -> dict[str, tuple[object, ...]]:
    with tarfile.open(layer) as tar:
        return {m.name: (m.type, m.mode, m.mtime, m.size, m.linkname) for m in tar}


def test_no_cache_rebuild_gives_identical_run_layers(cli: Cli, tmp_path: Path) -> None:
    first = build_and_save(cli, tmp_path / "first")
    second = build_and_save(cli, tmp_path / "second")
    assert [step for step, _, _ in first] == [step for step, _, _ in second]
    runs = [(a, b) for a, b in zip(first, second, strict=True) if "#(nop)" not in a[0]]  # RUN steps, base
    assert len(runs) >= 4, [step for step, _, _ in first]  # the base, apt, the venv, the lock's install
    for (step, one, _), (_, other, _) in runs:
        assert one == other, f"layer of `{step[-120:]}` differs between two --no-cache builds"
    pairs = list(zip(first, second, strict=True))
    same_bytes = sum(path.stat().st_size for (_, one, path), (_, other, _) in pairs if one == other)
    all_bytes = sum(path.stat().st_size for _, _, path in second)
    assert same_bytes / all_bytes > 0.999
    for (step, one, old), (_, other, new) in zip(first, second, strict=True):
        if one != other:  # a COPY: only folder times may differ
            a, b = entries(old), entries(new)
            changed = {name for name in set(a) | set(b) if a.get(name) != b.get(name)}
            assert all(a[n][0] == b[n][0] == tarfile.DIRTYPE for n in changed), (step, sorted(changed))
            assert all(a[n][:2] + a[n][3:] == b[n][:2] + b[n][3:] for n in changed), (step, sorted(changed))
