#!/usr/bin/env python3
"""Benchmark: a no-op nightly over the whole default matrix, every cell already in a loopback registry.

Set-up (not timed), in a temporary copy of matrix.yaml and templates/:
  - the `local` profile gets `lock_bases: true`, and a temporary matrix.lock holds a digest for every base
    reference: the real one where the sandbox registry has the base (Debian 12), a made-up `sha256:` value
    otherwise, so planning needs no network;
  - a fresh plain-HTTP `docker-registry` on 127.0.0.1 is the push target;
  - the locally buildable cells (2.13-cpu-debian12; with --with-cuda also 2.14-cuda13.0-debian12, ~6 GB)
    are built, smoke-tested and pushed for real (`python -m builder build TAG --push`);
  - every other cell is stood in by a tiny image (one small layer, a config carrying the cell's content-hash
    label, computed by builder/nightly.py `plan()` as the nightly does), uploaded through the registry API
    as the cell's immutable and floating tags.
Timed: `python -m builder nightly --push` over the whole matrix, Python start-up included.
Every cell must come out `cached` (the skip path is what is measured). Then layer sharing of the real cells:
unique bytes stored (distinct blob digests across their manifests) over the sum of their image sizes.

    python3 bench/nightly.py [--with-cuda] [--repeat N]

Target: the no-op nightly of >= 40 cells takes under 5 seconds. Needs the sandbox (`make sandbox`) and root.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.cli_timing import timed_cli
from builder.build import (
    lock,
)
from builder.build.engine import Engine
from builder.build.render import (
    SHIPPED_TEMPLATES,
    Renderer,
)
from builder.model import (
    matrix,
    profiles,
)
from builder.model.naming import (
    CONTENT_HASH_LABEL,
    LOCAL_REPOSITORY,
    floating_tag,
    immutable_tag,
    local_references,
)
from builder.operate import nightly
from tests.integration.loopback_registry import LoopbackRegistry
from tools import sandbox

TARGET_SECONDS = 5.0
TARGET_CELLS = 40
CPU_TAG = "2.13-cpu-debian12"
CUDA_TAG = "2.14-cuda13.0-debian12"
PROJECT = "bench"
REPOSITORY = f"{PROJECT}/{LOCAL_REPOSITORY}"
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Uploader:
    """Registry API v2 uploads (monolithic blob PUT, manifest PUT) with plain urllib, no engine."""

    def __init__(self, server: LoopbackRegistry) -> None:
        self.base = f"http://{server.host}"
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.blobs: set[str] = set()

    def _call(self, method: str, url: str, data: bytes | None = None, ctype: str = "") -> Any:
        request = urllib.request.Request(url, method=method, data=data)
        if ctype:
            request.add_header("Content-Type", ctype)
        return self.opener.open(request, timeout=30)

    def blob(self, data: bytes) -> str:
        digest = _sha(data)
        if digest not in self.blobs:
            with self._call("POST", f"{self.base}/v2/{REPOSITORY}/blobs/uploads/") as response:
                location = response.headers["Location"]
            if location.startswith("/"):
                location = self.base + location
            separator = "&" if "?" in location else "?"
            self._call(
                "PUT", f"{location}{separator}digest={digest}", data, "application/octet-stream"
            ).close()
            self.blobs.add(digest)
        return digest

    def manifest(self, tag: str, body: bytes) -> None:
        self._call("PUT", f"{self.base}/v2/{REPOSITORY}/manifests/{tag}", body, MANIFEST_V2).close()


def stand_in_layer() -> tuple[bytes, str]:
    """A one-file layer (gzip) and its diff id (sha256 of the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        text = b"pytorch-cuda-images nightly benchmark stand-in\n"
        info = tarfile.TarInfo("STAND-IN")
        info.size, info.mtime = len(text), 0
        tar.addfile(info, io.BytesIO(text))
    return gzip.compress(raw.getvalue(), mtime=0), _sha(raw.getvalue())


def push_stand_in(up: Uploader, tags: list[str], chash: str, layer: tuple[bytes, str], name: str) -> None:
    """A tiny image whose config carries the cell's content-hash label, under all of the cell's tags."""
    gz, diff_id = layer
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {CONTENT_HASH_LABEL: chash, "dev.pytorch-cuda-images.stand-in": name}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created_by": "bench/nightly.py stand-in"}],
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": CONFIG_V1, "size": len(config), "digest": up.blob(config)},
            "layers": [{"mediaType": LAYER_GZIP, "size": len(gz), "digest": up.blob(gz)}],
        }
    ).encode()
    for tag in tags:
        up.manifest(tag, manifest)


def layer_sharing(server: LoopbackRegistry, tags: list[str]) -> tuple[int, int, int]:
    """(sum of the images' compressed sizes, unique bytes over distinct blob digests, images counted)."""
    total, unique, seen = 0, 0, set()
    for tag in tags:
        status, _, body = server.get(f"/v2/{REPOSITORY}/manifests/{tag}", headers={"Accept": MANIFEST_V2})
        if status != 200:
            raise SystemExit(f"manifest of {tag} not in the registry (HTTP {status})")
        manifest = json.loads(body)
        for blob in [manifest["config"], *manifest["layers"]]:
            total += int(blob["size"])
            if blob["digest"] not in seen:
                seen.add(blob["digest"])
                unique += int(blob["size"])
    return total, unique, len(tags)


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-cuda", action="store_true", help=f"also build and push {CUDA_TAG} (~6 GB)")
    parser.add_argument("--repeat", type=int, default=3, help="timed no-op nightly runs (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and registry data")
    args = parser.parse_args()
    real_tags = [CPU_TAG, *([CUDA_TAG] if args.with_cuda else [])]

    info = sandbox.up(with_cuda=args.with_cuda, log=lambda msg: print(msg, file=sys.stderr))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(info.profile_env(), MIRROR="local", PYTHONPATH=str(REPO))
    os.environ.update(info.profile_env())
    engine = Engine.connect()
    work = Path(tempfile.mkdtemp(prefix="bench-nightly-"))
    server = LoopbackRegistry(work / "registry", tls=False, auth=False)
    local_refs = {
        ref: None
        for tag in real_tags
        for ref in local_references(matrix.load(REPO / "matrix.yaml").cell(tag))
    }
    for ref in local_refs:
        local_refs[ref] = engine.image_attrs(ref)["Id"] if engine.image_exists(ref) else None
    try:
        # --- the temporary project: lock_bases on, a lock with a digest for every base ---------------------
        shutil.copy(REPO / "matrix.yaml", work / "matrix.yaml")
        shutil.copytree(SHIPPED_TEMPLATES, work / "templates")
        locks = shutil.ignore_patterns("Dockerfile", "cell.json", "build.log", "smoke-result.json")
        shutil.copytree(REPO / "images", work / "images", ignore=locks)  # the cells' hash locks
        spec = yaml.safe_load((work / "matrix.yaml").read_text())
        spec["mirrors"]["profiles"]["local"]["lock_bases"] = True
        (work / "matrix.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        m = matrix.load(work / "matrix.yaml")
        profile = profiles.resolve(m, "local")
        bases: dict[str, str] = {}
        real_bases = 0
        for ref in sorted({profile.base_image(c) for c in m.cells}):
            digest = engine.registry_digest(ref, auth=None) if ref == info.base_image else None
            real_bases += digest is not None
            bases[ref] = digest or _sha(f"made-up digest for {ref}".encode())
        unlocked = lock.read(REPO / "matrix.lock")["unlocked"]
        (work / "matrix.lock").write_text(lock.render_lock(m.cells, {profile.name: bases}, unlocked=unlocked))
        lock_data = lock.read(work / "matrix.lock")
        planned = nightly.plan(
            list(m.cells), Renderer(work / "templates"), profile, lock_data, lambda _: None
        )
        # cells without a hash lock here (their torch index is unreachable) are refused at planning
        assert all(p.content_hash or "no hash lock" in str(p.problem) for p in planned)
        planned = [p for p in planned if p.content_hash]

        # --- the target registry: real builds pushed, every other cell a stand-in -------------------------
        server.start()
        bench_env = {
            **env,
            "REGISTRY": f"{server.host}/{PROJECT}",
            "DOCKER_CONFIG": str(work / "docker-config"),
        }
        (work / "docker-config").mkdir()
        for tag in real_tags:
            print(f"building and pushing {tag} for real ...", file=sys.stderr)
            seconds, built = timed_cli(
                "build",
                tag,
                "--push",
                "--matrix",
                str(work / "matrix.yaml"),
                "--out",
                str(work / "images"),
                env=bench_env,
            )
            if built.returncode != 0:
                print(built.stdout[-2000:] + built.stderr[-4000:], file=sys.stderr)
                return 1
            print(f"  {tag}: built, smoke-tested and pushed in {seconds:.0f} s", file=sys.stderr)
        up = Uploader(server)
        layer = stand_in_layer()
        started = time.perf_counter()
        stand_ins = [p for p in planned if p.cell.tag not in real_tags]
        for p in stand_ins:
            tags = [immutable_tag(p.cell), floating_tag(p.cell)]
            push_stand_in(up, tags, str(p.content_hash), layer, p.cell.tag)
        print(
            f"{len(stand_ins)} stand-ins uploaded in {time.perf_counter() - started:.1f} s", file=sys.stderr
        )

        # --- timed: the no-op nightly --------------------------------------------------------------------
        nightly_args = [
            "nightly",
            "--push",
            "--matrix",
            str(work / "matrix.yaml"),
            "--out",
            str(work / "images"),
            "--report",
            str(work / "report"),
        ]
        log_size = server.log_path.stat().st_size
        times = []
        for _ in range(max(1, args.repeat)):
            seconds, run = timed_cli(*nightly_args, env=bench_env, timeout=600)
            times.append(seconds)
            report = json.loads((work / "report" / "report.json").read_text())
            statuses = [r["status"] for r in report["results"]]
            if run.returncode != 0 or set(statuses) != {"cached"}:
                print(run.stdout[-3000:] + run.stderr[-3000:], file=sys.stderr)
                print("FAIL: the no-op nightly did not skip every cell", file=sys.stderr)
                return 1
        new_log = server.log_path.read_bytes()[log_size:].decode(errors="replace")
        writes = sum(new_log.count(f'"{verb} ') for verb in ("PUT", "POST", "PATCH"))

        # --- layer sharing of the real cells -------------------------------------------------------------
        immutables = [immutable_tag(m.cell(tag)) for tag in real_tags]
        total, unique, _ = layer_sharing(server, immutables)
        stored = du(server.storage / "docker/registry/v2/blobs")

        best, median = min(times), statistics.median(times)
        ok = median < TARGET_SECONDS and len(planned) >= TARGET_CELLS
        print(
            f"cells       {len(planned)} (default matrix), {len(stand_ins)} stand-ins, {len(real_tags)} real "
            f"({', '.join(real_tags)})"
        )
        print(
            f"bases       {len(bases)} base references locked, {real_bases} real digest(s), "
            f"{len(bases) - real_bases} made up"
        )
        print(
            f"registry    {server.host}/{REPOSITORY} (plain HTTP, loopback); "
            f"writes during the no-op runs: {writes}"
        )
        print(
            f"no-op       {median:.2f} s median, {best:.2f} s best over {len(times)} runs "
            f"(`python -m builder nightly --push`, Python start-up included): "
            + ", ".join(f"{t:.2f}" for t in times)
        )
        print(f"target      < {TARGET_SECONDS:.0f} s for >= {TARGET_CELLS} cells: {'PASS' if ok else 'FAIL'}")
        print(
            f"sharing     real cells: sum of image sizes {total / 1e9:.3f} GB (compressed, from manifests), "
            f"unique blobs {unique / 1e9:.3f} GB: ratio {unique / total:.3f}"
        )
        print(
            f"            registry blob store on disk: {stored / 1e9:.3f} GB "
            f"(incl. {len(stand_ins)} stand-in "
            f"configs and one {len(layer[0])} B stand-in layer)"
        )
        return 0 if ok else 1
    finally:
        server.close()
        for image in engine.client.images.list():
            for reference in [*image.tags, *(image.attrs.get("RepoDigests") or [])]:
                if reference.startswith(f"{server.host}/"):
                    engine.remove_image(reference, keep_parents=True)
        for ref, previous in local_refs.items():  # put the local tags back where they were
            if previous is not None and engine.image_exists(previous):
                engine.tag(previous, ref)
            elif previous is None:
                engine.remove_image(ref, keep_parents=True)
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
