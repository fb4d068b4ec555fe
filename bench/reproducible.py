"""Benchmark: are a cell's layers byte-identical across two `--no-cache` builds?

    python bench/reproducible.py [TAG] [--mirror local]      (default 2.13-cpu-debian12, the sandbox)

Builds TAG twice with `python -m builder build TAG --no-cache`, compares the two images' layer digests
(RootFS.Layers: sha256 of each uncompressed layer tar) and the image IDs, and prints per layer its size and
whether it matched. For each layer that differs, `docker save` both images and list the tar entries whose
bytes, mode or time differ: the sources of difference to remove. Prints the layer sizes too (the layer plan).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools import sandbox


def build(tag: str, env: dict[str, str]) -> tuple[str, list[str], float]:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "builder", "build", tag, "--no-cache"],
        cwd=REPO,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    attrs = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", f"pytorch-cuda-images:{tag}"], capture_output=True, check=True
        ).stdout
    )[0]
    return attrs["Id"], attrs["RootFS"]["Layers"], seconds


def save(image: str, folder: Path) -> dict[str, Path]:
    """`docker save` an image into folder; layer tar by its diff ID."""
    archive = folder / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), image], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="tar")
    manifest = json.loads((folder / "manifest.json").read_text())[0]
    config = json.loads((folder / manifest["Config"]).read_text())
    return dict(zip(config["rootfs"]["diff_ids"], (folder / p for p in manifest["Layers"]), strict=True))


def entries(layer: Path) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    with tarfile.open(layer) as tar:
        for member in tar:
            content = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            digest = hashlib.sha256(content).hexdigest()[:12]
            found[member.name] = (member.mode, member.mtime, member.uid, member.linkname, digest)
    return found


def main() -> int:
    tag = sys.argv[1] if len(sys.argv) > 1 else "2.13-cpu-debian12"
    info = sandbox.up(log=lambda _msg: None)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(info.profile_env(), MIRROR="local", PYTHONPATH=str(REPO))
    first_id, first, first_s = build(tag, env)
    with tempfile.TemporaryDirectory(prefix="bench-repro-") as tmp:
        keep = f"pytorch-cuda-images-bench:first-{tag}"
        subprocess.run(["docker", "tag", first_id, keep], check=True)
        second_id, second, second_s = build(tag, env)
        differing = [i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b]
        sizes: list[int] = []
        old, new = Path(tmp) / "first", Path(tmp) / "second"
        old.mkdir()
        new.mkdir()
        old_layers, new_layers = save(keep, old), save(second_id, new)
        sizes = [new_layers[d].stat().st_size for d in second]
        print(
            f"{tag}: builds {first_s:.0f} s and {second_s:.0f} s; "
            f"image IDs {'equal' if first_id == second_id else 'differ'}"
        )
        print(f"layers matching: {len(first) - len(differing)} of {len(first)} (the first is the base)")
        for i, (digest, size) in enumerate(zip(second, sizes, strict=True)):
            print(
                f"  {i:2d} {size / 1e6:9.1f} MB  {'same' if i not in differing else 'DIFFERS'}  {digest[:19]}"
            )
        for i in differing:
            a, b = entries(old_layers[first[i]]), entries(new_layers[second[i]])
            changed = sorted(name for name in set(a) | set(b) if a.get(name) != b.get(name))
            print(f"layer {i}: {len(changed)} entries differ, e.g.:")
            for name in changed[:15]:
                print(f"    {name}: {a.get(name)} -> {b.get(name)}")
        subprocess.run(["docker", "rmi", keep], check=False, capture_output=True)
    return 0 if not differing else 1


if __name__ == "__main__":
    raise SystemExit(main())
