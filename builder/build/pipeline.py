"""One cell end to end: render, pull the base through the mirror, build, smoke-test, and only then tag."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.build import cell_lock, gate, lock
from builder.build import wheel_cache as wheel_cache_mod
from builder.build.engine import Engine
from builder.build.render import (
    ContextPaths,
    Renderer,
    content_hash,
    templates_for,
    write,
)
from builder.errors import ConfigError, MirrorError
from builder.model import compat, naming, profiles
from builder.model.cell import Cell
from builder.model.matrix import Matrix
from builder.model.naming import CONTENT_HASH_LABEL, immutable_tag, local_references, requirements_path
from builder.model.platforms import (
    PLATFORMS,
    WHEEL_MACHINE,
    arch,
    emulation_available,
    enable_hint,
    tag_suffix,
)
from builder.model.profiles import ResolvedProfile
from builder.output import Output

SOURCE_URL = "https://github.com/pytorch-cuda-images/pytorch-cuda-images"


@dataclass
class BuiltCell:
    cell: Cell
    image_id: str
    tags: list[str]
    content_hash: str
    build_seconds: float
    smoke: gate.SmokeReport | None
    size_bytes: int
    platform: str = ""  # set for a multi-platform cell (or a platform other than the cell's first)


def build_context(
    renderer: Renderer, cell: Cell, profile: ResolvedProfile, lock_data: dict[str, Any]
) -> dict[str, bytes]:
    """The cell's build context, with its hash locks (ConfigError when one is missing, stale or cannot be
    made here: never built unlocked) and the profile's CA bundle (if it names one) at the CA path."""
    ca_bundle = profile.ca_bundle.read_bytes() if profile.ca_bundle is not None else b""
    locks = cell_lock.context_files(cell, Path(lock_data["root"]), lock_data["unlocked"])
    return renderer.context(cell, ca_bundle=ca_bundle, locks=locks)


def cell_content_hash(context: dict[str, bytes], build_args: dict[str, str], base_digest: str) -> str:
    """The content hash a build of this input carries (label `content-hash`): context, args, base digest.

    The build-time index (a wheel cache) only changes where the same files come from, so it is left out.
    """
    args = {key: value for key, value in build_args.items() if key != "PIP_BUILD_INDEX_URL"}
    return content_hash(context, {**args, "BASE_DIGEST": base_digest})


def platform_args(cell: Cell, platform: str | None, build_args: dict[str, str]) -> dict[str, str]:
    """The build args a platform's content hash covers: a platform other than the cell's first adds
    `PLATFORM`, so that each platform's image has its own content hash."""
    if platform is None or platform == cell.platforms[0]:
        return build_args
    return {**build_args, "PLATFORM": platform}


def _git_revision(repo: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def labels(cell: Cell, *, base_ref: str, base_digest: str, chash: str, revision: str) -> dict[str, str]:
    """Labels known only at build time (the static ones are in the Dockerfile)."""
    return {
        "org.opencontainers.image.version": immutable_tag(cell),
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.source": SOURCE_URL,
        "org.opencontainers.image.base.name": base_ref,
        "org.opencontainers.image.base.digest": base_digest,
        CONTENT_HASH_LABEL: chash,
    }


def build_cell(
    engine: Engine,
    renderer: Renderer,
    cell: Cell,
    profile: ResolvedProfile,
    *,
    out: Path,
    output: Output,
    runs: Path = Path(naming.RUNS_DIR),
    run_smoke: bool = True,
    require_gpu: bool = False,
    smoke_timeout: float = gate.DEFAULT_TIMEOUT_S,
    nocache: bool = False,
    lock_data: dict[str, Any],
    platform: str | None = None,
) -> BuiltCell:
    """Build one cell (for one of its platforms: another CPU than the engine's runs under QEMU); tags
    are created only after the smoke suite passed.

    The rendered files go to `out/<tag>/`; the run's output (build.log, smoke-result.json) to the run
    folder `runs/<tag>/` (`runs/<tag>/<platform>/` for a platform other than the cell's first).
    """
    write(out, cell.tag, renderer.files(cell))
    run_dir = Path(naming.run_dir(str(runs), cell, platform))
    engine_platform = platform if platform is not None and platform != engine.native_platform() else None
    name = f"{cell.tag} ({platform})" if platform is not None and len(cell.platforms) > 1 else cell.tag
    context = build_context(renderer, cell, profile, lock_data)
    build_args = profile.build_args(cell)
    base_ref = profile.base_image(cell)
    problems = profiles.unreachable(profile, cell)
    if problems:
        raise MirrorError(problems[0], lines=problems)
    locked = lock.pinned_digest(lock_data, profile.name, profile.lock_bases, base_ref)
    pinned = f"{base_ref}@{locked}" if locked else base_ref
    with output.step(f"{name}: pulling base {pinned} (profile {profile.name})"):
        base_digest = engine.pull(pinned, platform=platform if len(cell.platforms) > 1 else None)
        if platform is not None and len(cell.platforms) > 1:
            found = engine.image_attrs(pinned).get("Architecture")
            if found != arch(platform):
                raise MirrorError(
                    f"base image {pinned} has no {platform} image (the registry gave {found}): "
                    "the base must be an image index naming that platform (sandbox: `up --arch arm64`)"
                )
    if locked:
        build_args["BASE_DIGEST"] = f"@{locked}"
    elif profile.lock_bases:
        output.info(f"{cell.tag}: {base_ref} is not in matrix.lock for profile {profile.name}: using the tag")
    if not locked and len(cell.platforms) > 1:
        # A pull by tag for one platform records only that platform's manifest: each platform's content
        # hash covers the index the tag names, as a locked digest and nightly's plan do.
        base_digest = engine.registry_digest(base_ref, auth=None) or base_digest
    chash = cell_content_hash(context, platform_args(cell, platform, profile.build_args(cell)), base_digest)
    image_labels = labels(
        cell,
        base_ref=base_ref,
        base_digest=base_digest,
        chash=chash,
        revision=_git_revision(renderer.templates_dir.parent),
    )
    log_path = run_dir / "build.log"
    with output.step(f"{name}: building (log: {log_path})"), output.progress(name) as update:
        result = engine.build(
            context,
            dockerfile=ContextPaths(cell.tag).dockerfile,
            target=cell.variant,
            build_args=build_args,
            labels=image_labels,
            log_path=log_path,
            on_step=lambda number, total, instruction: update(number - 1, total, instruction),
            nocache=nocache,
            platform=engine_platform,
        )
    output.info(f"{name}: built {result.image_id[:19]} in {result.seconds:.1f} s")
    report = None
    if run_smoke:
        gpus = engine.gpu_requests()
        try:
            with output.step(f"{name}: smoke tests"):
                report = gate.run(
                    engine, result.image_id, require_gpu=require_gpu, gpus=gpus, timeout=smoke_timeout
                )
                for line in report.table():
                    output.info(f"  {line}")
                (run_dir / "smoke-result.json").write_text(json.dumps(report.raw, indent=2) + "\n")
                gate.gate(report)
                if platform is not None:
                    gate.gate_machine(report, WHEEL_MACHINE[platform])
        except BaseException:
            engine.remove_image(result.image_id)
            raise
        output.info(f"{name}: smoke tests passed in {report.seconds:.1f} s")
    try:
        with output.step(f"{name}: SBOM"):
            lock_text = context.get(requirements_path(cell.tag, tag_suffix(platform or cell.platforms[0])))
            image_id = _with_sbom(
                engine, result.image_id, cell, lock_text, run_dir, base_ref, base_digest, chash
            )
    except BaseException:
        engine.remove_image(result.image_id)  # as a failed gate does: no untagged image left behind
        raise
    references = local_references(cell, platform)
    for reference in references:
        engine.tag(image_id, reference)
    size = int(engine.image_attrs(image_id).get("Size", 0))
    return BuiltCell(
        cell=cell,
        image_id=image_id,
        tags=references,
        content_hash=chash,
        build_seconds=result.seconds,
        smoke=report,
        size_bytes=size,
        platform=platform or "",
    )


def _with_sbom(
    engine: Engine,
    image_id: str,
    cell: Cell,
    lock: bytes | None,
    run_dir: Path,
    base_ref: str,
    base_digest: str,
    chash: str,
) -> str:
    """The gated image plus its SBOM layer (a copy also in the run folder, for CI artifacts); the hashes
    come from the platform's hash lock the build context carried."""
    from builder.build import sbom  # cyclonedx-python-lib loads in about half a second: only when used

    document = sbom.document(
        cell,
        sbom.collect(engine, image_id),
        lock_text=lock.decode() if lock is not None else None,
        base_ref=base_ref,
        base_digest=base_digest,
        content_hash=chash,
    )
    (run_dir / "sbom.cdx.json").write_bytes(document)
    return sbom.store(engine, image_id, document, log_path=run_dir / "sbom-build.log")


def build(
    m: Matrix,
    tag: str,
    *,
    mirror: str | None,
    out: Path,
    output: Output,
    runs: Path = Path(naming.RUNS_DIR),
    require_gpu: bool = False,
    smoke_timeout: float = gate.DEFAULT_TIMEOUT_S,
    nocache: bool = False,
    wheel_cache: Path | None = None,
    wheel_cache_offline: bool = False,
    platforms: list[str] | None = None,
) -> list[BuiltCell]:
    """`build`: resolve TAG and its mirror profile, then build, smoke-test and tag it for each platform
    (`platforms`, default: every platform of the cell this engine runs; with wheel_cache: pip fetches
    through the caching proxy in that folder)."""
    cell = m.cell(tag)
    profile = profiles.resolve(m, mirror)
    for warning in cell.warnings:
        output.warning(warning)
    check_platforms(cell, platforms or [])
    engine = Engine.connect()
    chosen = choose_platforms(cell, platforms, engine.native_platform(), output)
    with wheel_cache_mod.serving(wheel_cache, profile, offline=wheel_cache_offline) as build_profile:
        return [
            build_cell(
                engine,
                Renderer(templates_for(m.path)),
                cell,
                build_profile,
                lock_data=lock.read(lock.lock_path(m.path)),
                out=out,
                output=output,
                runs=runs,
                require_gpu=require_gpu,
                smoke_timeout=smoke_timeout,
                nocache=nocache,
                platform=platform if len(cell.platforms) > 1 or platform != cell.platforms[0] else None,
            )
            for platform in chosen
        ]


def check_platforms(cell: Cell, asked: list[str]) -> None:
    """ConfigError (one line, exit 2) for an unknown platform or one the cell is not built for, with the
    compat data's reason and what would work when the cell cannot have it."""
    for platform in asked:
        if platform not in PLATFORMS:
            raise ConfigError(f"--platform {platform}: unknown platform; allowed: {', '.join(PLATFORMS)}")
        if platform not in cell.platforms:
            reasons, _ = compat.platform_problems(cell.key, platform, compat.Settings(), compat.load())
            why = reasons[0] if reasons else f"matrix.yaml gives it only {', '.join(cell.platforms)}"
            raise ConfigError(f"--platform {platform}: {cell.tag} is not built for {platform}: {why}")


def choose_platforms(cell: Cell, asked: list[str] | None, native: str, output: Output) -> list[str]:
    """The platforms to build: those asked for (each must be the cell's and runnable here, else
    ConfigError), or every platform of the cell this engine runs (the others named in a warning)."""
    check_platforms(cell, asked or [])
    for platform in asked or []:
        if not emulation_available(platform, native):
            raise ConfigError(
                f"--platform {platform}: this {native} engine cannot run it; {enable_hint(platform)}"
            )
    if asked:
        return list(dict.fromkeys(asked))
    runnable = [p for p in cell.platforms if emulation_available(p, native)]
    for platform in cell.platforms:
        if platform not in runnable:
            output.warning(
                f"{cell.tag}: skipping {platform}: a {native} engine cannot run it; {enable_hint(platform)}"
            )
    if not runnable:
        raise ConfigError(
            f"{cell.tag}: this {native} engine runs none of its platforms ({', '.join(cell.platforms)})"
        )
    return runnable


def run_hint(built: BuiltCell) -> str:
    """How to start the image just built."""
    command = "docker run --rm -it"
    if built.cell.is_cuda:
        command += " --gpus all"
    if built.cell.variant == "full":
        command += " -p 8888:8888 -p 2222:22 -v $(pwd):/workspace"
    return f"{command} {built.tags[0]}"
