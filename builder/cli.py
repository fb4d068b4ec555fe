"""Command line: `python -m builder ...` (also installed as `pytorch-cuda-images`).

Parses arguments, calls one stage function per command, prints through `builder.output.Output`, and is the
only module that exits: every other module raises a BuilderError, turned here into one `error: ...` line
per problem on stderr and the error's exit code (`_Commands.invoke`, so typer's CliRunner sees the same).
"""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from builder.errors import BuilderError
from builder.model import matrix as matrix_mod
from builder.model import naming
from builder.output import Output

if TYPE_CHECKING:
    from builder.model.cell import Cell

USAGE_EXIT = 2
INTERRUPTED_EXIT = 130


class _Commands(TyperGroup):
    """Every command's errors become `error: ...` lines and an exit code, Ctrl-C exit 130."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BuilderError as exc:
            report_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            Output().info("interrupted")
            raise typer.Exit(INTERRUPTED_EXIT) from None
        except typer.TyperException as exc:  # a subcommand's usage error
            raise typer.Exit(_usage_error(exc)) from None


def report_error(exc: BuilderError) -> None:
    """One `error: ...` line per problem, then the context lines (a build log's tail) as they are."""
    output = Output()
    for line in exc.lines:
        output.error(line)
    for line in exc.details:
        output.info(line)


def _usage_error(exc: typer.TyperException) -> int:
    if type(exc).__name__ == "NoArgsIsHelpError":  # a group called without a command: its help, exit 0
        Output().result(exc.format_message())
        return 0
    Output().error(exc.format_message())
    return USAGE_EXIT


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    help="Build, smoke-test and push PyTorch + CUDA images from matrix.yaml.",
    pretty_exceptions_enable=False,
)

MatrixOption = Annotated[Path, typer.Option("--matrix", "-m", help="The matrix file.", envvar="MATRIX")]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout (nothing else there).")]
OnlyOption = Annotated[list[str] | None, typer.Option("--only", help="Glob(s) over tags.")]
MirrorOption = Annotated[str | None, typer.Option("--mirror", envvar="MIRROR", help="Mirror profile.")]
DEFAULT_RUNS = Path(naming.RUNS_DIR)
WheelCacheOption = Annotated[
    Path | None,
    typer.Option(
        "--wheel-cache",
        envvar="WHEEL_CACHE",
        help="Fetch wheels through a caching PyPI proxy (devpi-server) that keeps them in DIR.",
    ),
]
WheelCacheOfflineOption = Annotated[
    bool, typer.Option("--wheel-cache-offline", help="Serve only what the wheel cache holds; no upstream.")
]
OutDirOption = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Where the cells are rendered (default: images/ next to the matrix)."),
]
RunsOption = Annotated[
    Path,
    typer.Option("--runs", help="Where each build run leaves build.log and smoke-result.json, per cell."),
]
RegistryOption = Annotated[
    str | None,
    typer.Option("--registry", envvar="REGISTRY", help="host[:port]/project (default: matrix.yaml)."),
]


@app.command("list")
def list_cells(
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of cell objects.")] = False,
    explain_drops: Annotated[
        bool, typer.Option("--explain-drops", help="Also list dropped cells and why.")
    ] = False,
    with_platforms: Annotated[
        bool, typer.Option("--platforms", help="Each tag followed by its platforms (comma-separated).")
    ] = False,
    only: OnlyOption = None,
) -> None:
    """One line per matrix cell (its tag)."""
    from builder.model import explain

    out = Output(json_mode=as_json)
    m = matrix_mod.load(matrix)
    cells = m.select_or_all(only)
    if as_json:
        rows = [explain.summary(c) for c in cells]
        drops = [{"tag": d.key.tag, "reasons": list(d.reasons)} for d in m.drops]
        drops += [
            {"tag": d.key.tag, "platform": d.platform, "reasons": list(d.reasons)} for d in m.platform_drops
        ]
        out.document({"cells": rows, "dropped": drops} if explain_drops else rows)
        return
    for cell in cells:
        out.result(f"{cell.tag} {','.join(cell.platforms)}" if with_platforms else cell.tag)
    if explain_drops:
        out.result(f"# dropped {len(m.drops)} impossible cells of the cartesian product:")
        for drop in m.drops:
            out.result(f"# {drop.key.tag}: {'; '.join(drop.reasons)}")
        if m.platform_drops:
            out.result(f"# left out {len(m.platform_drops)} impossible platforms of cells:")
            for drop in m.platform_drops:
                out.result(f"# {drop.key.tag} {drop.platform}: {'; '.join(drop.reasons)}")


@app.command()
def validate(matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX) -> None:
    """Exit 0 when the matrix is valid; 2 with one line per problem when not."""
    from builder.build import render

    m = matrix_mod.load(matrix)
    render.render_all(m.cells, render.templates_for(m.path))
    Output().result(f"{matrix}: valid: {len(m.cells)} cells ({len(m.drops)} impossible combinations dropped)")


@app.command()
def render(
    tags: Annotated[list[str] | None, typer.Argument(help="Tags or globs; default: all cells.")] = None,
    all_cells: Annotated[bool, typer.Option("--all", help="Every cell of the matrix.")] = False,
    out_dir: OutDirOption = None,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 naming stale or missing files.")] = False,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Render each cell's Dockerfile and cell.json into OUT/<tag>/."""
    from builder.build import render as render_mod

    out = Output()
    m = matrix_mod.load(matrix)
    out_dir = out_dir or render_mod.images_dir(m.path)
    everything = all_cells or not tags
    cells = list(m.cells) if everything else m.select(tags or [])
    done = render_mod.render_cells(
        cells, render_mod.templates_for(m.path), out_dir, complete=everything, check=check
    )
    if check:
        for problem in done.problems:
            out.result(problem)
        if done.problems:
            stale = len(done.problems)
            out.result(
                f"{stale} rendered files are stale or missing: run `make render` and commit {out_dir}/"
            )
            raise typer.Exit(1)
        out.result(f"{out_dir}/: {done.cells} cells up to date")
        return
    for path in done.removed:
        out.result(f"removed {path}/ (no longer in the matrix)")
    out.result(f"rendered {done.cells} cells into {out_dir}/ in {done.seconds:.2f} s")


@app.command()
def explain(tag: str, matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX, as_json: JsonOption = False) -> None:
    """What TAG resolves to, or why it is impossible."""
    from builder.model import explain as explain_mod

    out = Output(json_mode=as_json)
    m = matrix_mod.load(matrix)
    cell = m.cell(tag)
    profile = explain_mod.optional_profile(m)
    if as_json:
        out.document(explain_mod.facts(cell, profile))
        return
    rows = explain_mod.rows(cell, profile)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out.result(f"{name.ljust(width)}  {value}")


@app.command()
def build(
    tag: str,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
    out_dir: OutDirOption = None,
    runs: RunsOption = DEFAULT_RUNS,
    mirror: MirrorOption = None,
    require_gpu: Annotated[
        bool, typer.Option("--require-gpu", help="GPU checks fail without a GPU.")
    ] = False,
    smoke_timeout: Annotated[float, typer.Option("--smoke-timeout", help="Seconds.")] = 300.0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Build without the layer cache.")] = False,
    push: Annotated[bool, typer.Option("--push", help="Push to the registry after the tag step.")] = False,
    registry: RegistryOption = None,
    as_json: JsonOption = False,
    wheel_cache: WheelCacheOption = None,
    wheel_cache_offline: WheelCacheOfflineOption = False,
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            help="Build this platform (repeatable; default: each of the cell's platforms this engine runs).",
        ),
    ] = None,
) -> None:
    """Resolve and render TAG, then build it, run its smoke tests and tag it (--push: and push it)."""
    from builder.build import pipeline, render

    out = Output(json_mode=as_json)
    m = matrix_mod.load(matrix)
    builds = pipeline.build(
        m,
        tag,
        mirror=mirror,
        out=out_dir or render.images_dir(m.path),
        runs=runs,
        output=out,
        require_gpu=require_gpu,
        smoke_timeout=smoke_timeout,
        nocache=no_cache,
        wheel_cache=wheel_cache,
        wheel_cache_offline=wheel_cache_offline,
        platforms=platform,
    )
    built = builds[0]
    cell = built.cell
    for one in builds:
        size_gb = one.size_bytes / 1e9
        where = f" for {one.platform}" if one.platform else ""
        seconds = one.build_seconds
        out.result(
            f"{cell.tag}: tagged {', '.join(one.tags)}{where} ({size_gb:.2f} GB, built in {seconds:.0f} s)"
        )
    out.result(f"run it: {pipeline.run_hint(built)}")
    pushed = _push(m, [cell], out, registry=registry) if push else []
    if as_json:
        out.document(
            {
                "tag": cell.tag,
                "tags": built.tags,
                "image_id": built.image_id,
                "content_hash": built.content_hash,
                "size_bytes": built.size_bytes,
                "build_s": round(built.build_seconds, 3),
                "smoke": built.smoke.raw if built.smoke else None,
                "pushed": pushed,
                "platforms": [
                    {
                        "platform": one.platform or cell.platforms[0],
                        "tags": one.tags,
                        "image_id": one.image_id,
                        "content_hash": one.content_hash,
                        "size_bytes": one.size_bytes,
                        "build_s": round(one.build_seconds, 3),
                    }
                    for one in builds
                ],
            }
        )


@app.command()
def merge(
    tags: Annotated[
        list[str] | None, typer.Argument(help="Tags or globs (default: every multi-platform cell).")
    ] = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
    registry: RegistryOption = None,
) -> None:
    """Put each multi-platform cell's OCI image index (every platform's image, pushed by `build --platform
    P --push`) under its immutable and floating tags, digests verified; a cell missing a platform keeps
    both tags where they were (exit 1). Single-platform cells are left to `push`."""
    from builder.errors import RegistryError
    from builder.publish import push

    out = Output()
    m = matrix_mod.load(matrix)
    publisher = push.Publisher.resolve(m.spec.registry.target, registry)
    failed = []
    for cell in [c for c in m.select_or_all(tags) if len(c.platforms) > 1]:
        try:
            lines = publisher.merge(cell, out)
        except RegistryError as exc:
            out.error(str(exc))
            failed.append(cell.tag)
            continue
        for line in lines:
            out.result(f"{cell.tag}: {line}")
    if failed:
        raise RegistryError(f"no index for {len(failed)} cell(s): {', '.join(failed)}")


def _push(
    m: matrix_mod.Matrix,
    cells: list[Cell],
    out: Output,
    *,
    registry: str | None,
    retries: int | None = None,
    retry_max_s: float | None = None,
    image: str | None = None,
    force: bool = False,
    create_project: bool = False,
) -> list[str]:
    """Push cells and print what happened; the lines printed. A multi-platform cell: each platform built
    here by digest, then its image index when every platform is there."""
    from builder.build.engine import Engine
    from builder.errors import ConfigError
    from builder.model.naming import local_references
    from builder.publish import push

    publisher = push.Publisher.resolve(
        m.spec.registry.target, registry, retries=retries, retry_max_s=retry_max_s
    )
    multi = [cell for cell in cells if len(cell.platforms) > 1]
    if multi and image:
        raise ConfigError(f"--image: {multi[0].tag} has several platforms; push what `build` made")
    single = [cell for cell in cells if len(cell.platforms) == 1]
    results = push.push_cells(publisher, single, out, image=image, force=force, create_project=create_project)
    lines = [f"{cell.tag}: {line}" for cell, result in results for line in result.lines()]
    for cell in multi:  # each built platform by digest; the index once every platform is there
        engine = Engine.connect()
        built = [p for p in cell.platforms if engine.image_exists(local_references(cell, p)[1])]
        if not built:
            raise ConfigError(f"{cell.tag}: no platform of it is built here (`python -m builder build ...`)")
        lines += [f"{cell.tag}: {line}" for line in publisher.push_platforms(engine, cell, built, out)]
    for line in lines:
        out.result(line)
    return lines


@app.command("push")
def push_command(
    tags: Annotated[list[str], typer.Argument(help="Tags or globs of built cells.")],
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
    registry: RegistryOption = None,
    retries: Annotated[
        int | None,
        typer.Option("--retries", envvar="PUSH_RETRIES", help="Tries per registry call (default 6)."),
    ] = None,
    retry_max_s: Annotated[
        float | None,
        typer.Option(
            "--retry-max-s", envvar="PUSH_RETRY_MAX_S", help="Retry window in seconds (default 300)."
        ),
    ] = None,
    create_project: Annotated[
        bool, typer.Option("--create-project", help="Create the Harbor project first (Harbor API v2.0).")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Push even when the registry holds the same content.")
    ] = False,
    image: Annotated[
        str | None,
        typer.Option("--image", help="Local image to push for one TAG (default: its local immutable tag)."),
    ] = None,
) -> None:
    """Push built cells: the immutable tag, its digest verified, then the floating tag."""
    m = matrix_mod.load(matrix)
    _push(
        m,
        m.select(tags),
        Output(),
        registry=registry,
        retries=retries,
        retry_max_s=retry_max_s,
        image=image,
        force=force,
        create_project=create_project,
    )


@app.command("sbom")
def sbom_command(
    target: Annotated[str, typer.Argument(help="A tag of the matrix (its local image) or an image.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="The CycloneDX JSON document, alone on stdout.")
    ] = False,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """The image's bill of materials (CycloneDX JSON, made after its smoke gate passed and stored in it)."""
    from builder.build import sbom

    out = Output()  # --json: the document as stored, byte for byte, as the one thing on stdout
    image, document = sbom.of_image(target, matrix)
    if as_json:
        out.raw(document.decode())
        return
    doc = json.loads(document)
    for kind, name, version in sbom.rows(doc):
        out.result(f"{kind:5} {name} {version}")
    facts = sbom.properties(doc)
    counts = Counter(kind for kind, _, _ in sbom.rows(doc))
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    out.result(f"{image}: {sbom.SBOM_PATH}: {summary}; " + ", ".join(f"{k} {v}" for k, v in facts.items()))


@app.command("mirror-bases")
def mirror_bases_command(
    only: OnlyOption = None,
    to: Annotated[
        str | None,
        typer.Option("--to", envvar="BASES_REGISTRY", help="host[:port][/prefix] (default: target host)."),
    ] = None,
    record_profile: Annotated[
        str | None,
        typer.Option("--profile", help="Record the copies in matrix.lock under this profile."),
    ] = None,
    mirror: Annotated[str | None, typer.Option("--mirror", envvar="MIRROR", help="Source profile.")] = None,
    registry: RegistryOption = None,
    retries: Annotated[int | None, typer.Option("--retries", envvar="PUSH_RETRIES")] = None,
    retry_max_s: Annotated[float | None, typer.Option("--retry-max-s", envvar="PUSH_RETRY_MAX_S")] = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Copy the selected cells' base images, by digest, from the profile's registry into the team's."""
    from builder.model import profiles
    from builder.publish import push
    from builder.publish.mirror import mirror_matrix_bases

    out = Output()
    m = matrix_mod.load(matrix)
    done = mirror_matrix_bases(
        m,
        m.select_or_all(only),
        source=profiles.resolve(m, mirror),
        to=to,
        registry=registry,
        record_profile=record_profile,
        policy=push.RetryPolicy.from_env(retries, retry_max_s),
        output=out,
    )
    for item in done.done:
        action = "copied" if item.copied else "present"
        out.result(f"{action} {item.mirror}@{item.mirror_digest} (from {item.source}@{item.digest})")
    where = f"{len(done.done)} base images in {done.destination}"
    if done.recorded_profile is None:
        out.result(f"{where} (--profile NAME records them in {done.lock_file.name})")
    else:
        out.result(f"{where}; digests recorded in {done.lock_file} (profile {done.recorded_profile})")


@app.command("smoke")
def smoke_command(
    target: Annotated[
        str, typer.Argument(help="A tag of the matrix (its local image) or any image reference.")
    ],
    require_gpu: Annotated[
        bool, typer.Option("--require-gpu", help="GPU checks fail without a GPU.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="The suite's JSON report, alone on stdout.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Suite timeout in seconds.")] = 300.0,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Run the in-image smoke suite against a built image (exit 1 when a check fails)."""
    from builder.build import gate

    out = Output(json_mode=as_json)
    image, report = gate.smoke(target, matrix, require_gpu=require_gpu, timeout=timeout)
    if as_json:
        out.document(report.raw)
    else:
        for line in report.table():
            out.result(line)
    gate.gate(report)
    out.result(f"{image}: smoke tests passed in {report.seconds:.1f} s")


@app.command()
def doctor(
    tag: Annotated[str | None, typer.Argument(help="Check the host against this cell's needs.")] = None,
    driver: Annotated[
        str | None,
        typer.Option("--driver", help="Judge this driver version (e.g. 535.104.05) instead of the host's."),
    ] = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
    as_json: JsonOption = False,
) -> None:
    """Host-side checks: engine, GPU requests, and the driver against a cell's needs (exit 1 on a failure).

    Without TAG, every CUDA version of the matrix is judged against the driver: runs, runs with limits
    (warn: minor-version compatibility), or fails.
    """
    from builder.build import gate

    out = Output(json_mode=as_json)
    loaded = matrix_mod.load(matrix)
    checks = gate.doctor(loaded.cell(tag) if tag else None, cells=loaded.cells, driver=driver)
    if as_json:
        out.document(
            [{"name": c.name, "status": c.status, "detail": c.detail, "blocking": c.blocking} for c in checks]
        )
    else:
        width = max(len(c.name) for c in checks)
        for check in checks:
            out.result(f"{check.name.ljust(width)}  {check.status.ljust(7)}  {check.detail}")
    if any(c.status == "fail" and c.blocking for c in checks):
        raise typer.Exit(1)


@app.command("lock")
def lock_command(
    update: Annotated[
        bool, typer.Option("--update", help="Resolve again: hash locks, matrix.lock; print the diff.")
    ] = False,
    only: OnlyOption = None,
    no_bases: Annotated[
        bool, typer.Option("--no-bases", help="With --update: no base digests (no engine).")
    ] = False,
    mirror: Annotated[
        str | None, typer.Option("--mirror", envvar="MIRROR", help="Profile to resolve.")
    ] = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Check matrix.lock and every cell's hash lock (exit 2 when stale or missing), or --update them."""
    from builder.build import cell_lock, lock
    from builder.errors import ConfigError
    from builder.model import profiles

    out = Output()
    m = matrix_mod.load(matrix)
    path = lock.lock_path(m.path)
    root = path.parent
    if update:
        profile = profiles.resolve(m, mirror)
        unlocked = dict(lock.read(path)["unlocked"])
        cells = m.select_or_all(only)
        with out.step(f"hash locks: resolving {len(cells)} cells with uv (profile {profile.name})"):
            run = cell_lock.update(cells, profile, root, unlocked)
        for result in run.results:
            for change in result.changes:
                out.result(f"{result.tag}: {change}")
        for platform, others in cell_lock.other_platforms(cells).items():
            with out.step(f"hash locks for {platform}: resolving {len(others)} cells with uv"):
                extra = cell_lock.update(others, profile, root, {}, platform=platform)
            for result in extra.results:
                if result.refused:  # an impossible platform was refused earlier: this one must lock
                    raise ConfigError(f"{result.tag}: no {platform} hash lock: {result.refused}")
                for change in result.changes:
                    out.result(f"{result.tag} {platform}: {change}")
        written, diff, unresolved = lock.update(m, profile, with_bases=not no_bases, unlocked=unlocked)
        out.result(diff.rstrip("\n") if diff else f"{written}: unchanged")
        for problem in unresolved:
            out.warning(problem)
        refused = run.refused
        kept = [r for r in run.results if r.kept]
        for result in refused:
            out.info(f"{result.tag}: not locked: {result.refused}")
        out.result(
            f"hash locks: {len(cells) - len(refused) - len(kept)} cells resolved, {len(kept)} kept "
            f"(unresolvable now, lock current), {len(refused)} cannot be locked from here "
            f"({run.seconds:.1f} s)"
        )
        return
    data = lock.read(path)
    problems = lock.stale_cells(path, list(m.cells))
    problems += cell_lock.problems(m.cells, root, data["unlocked"])
    for platform, others in cell_lock.other_platforms(m.cells).items():
        problems += cell_lock.problems(others, root, {}, platform)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        hint = "" if "run `" in problems[0] else ": run `python -m builder lock --update`"
        raise ConfigError(f"{problems[0]}{more}{hint}")
    unlockable = len([c for c in m.cells if c.tag in data["unlocked"]])
    out.result(
        f"{path}: {len(m.cells)} cells current; {len(m.cells) - unlockable} hash-locked, "
        f"{unlockable} recorded as not lockable here"
    )


# --- nightly pieces: CI job matrix, run reports -------------------------------------------------------

report_app = typer.Typer(no_args_is_help=True, help="Run reports: per-cell results, a JSON and an HTML page.")
app.add_typer(report_app, name="report")
CompatOption = Annotated[
    Path | None,
    typer.Option("--compat", help="The JSON of `python -m tools.update_compat --json`, shown in the report."),
]


@app.command("ci-matrix")
def ci_matrix_command(
    fmt: Annotated[str, typer.Option("--format", help="github or gitlab.")] = "github",
    only: OnlyOption = None,
    cpu_runner: Annotated[
        list[str] | None, typer.Option("--cpu-runner", help="Runner label/tag for CPU cells (repeatable).")
    ] = None,
    gpu_runner: Annotated[
        list[str] | None, typer.Option("--gpu-runner", help="Runner label/tag for CUDA cells (repeatable).")
    ] = None,
    changed: Annotated[
        bool,
        typer.Option(
            "--changed", help="Only cells whose content hash the registry lacks (asked as nightly --push)."
        ),
    ] = False,
    registry: RegistryOption = None,
    mirror: MirrorOption = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """The cells as a CI job matrix, one cell per job: GitHub `fromJSON` include list or GitLab child YAML."""
    from builder.operate import ci_matrix, nightly
    from builder.publish.push import Publisher

    m = matrix_mod.load(matrix)
    cells = m.select_or_all(only)
    if changed:
        publisher = Publisher.resolve(m.spec.registry.target, registry)
        cells = nightly.changed_cells(m, cells, publisher, mirror=mirror, output=Output())
    text = ci_matrix.for_ci(fmt, cells, cpu_runners=cpu_runner, gpu_runners=gpu_runner, source=str(matrix))
    Output().raw(text)


@report_app.command("cell")
def report_cell_command(
    tag: str,
    status: Annotated[
        str,
        typer.Option("--status", help="passed|failed|skipped|cached|timeout|interrupted or a CI outcome."),
    ],
    build_seconds: Annotated[float | None, typer.Option("--build-seconds")] = None,
    size_bytes: Annotated[int | None, typer.Option("--size-bytes")] = None,
    log: Annotated[Path | None, typer.Option("--log", help="Default: RUNS/<tag>/build.log.")] = None,
    detail: Annotated[str | None, typer.Option("--detail")] = None,
    runs: RunsOption = DEFAULT_RUNS,
    out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("reports/cells"),
    platform: Annotated[
        str | None,
        typer.Option("--platform", help="The platform this job built (a multi-platform cell's row)."),
    ] = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Record one cell's result (its smoke-result.json read for the failing check) as OUT/<tag>.json;
    with --platform, as that platform's row of the cell (`report render` merges a cell's rows)."""
    from builder.build.pipeline import check_platforms
    from builder.operate import report

    run_folder = runs / naming.parse_tag(tag).tag
    if platform is not None:
        cell = matrix_mod.load(matrix).cell(tag)
        check_platforms(cell, [platform])
        run_folder = Path(naming.run_dir(str(runs), cell, platform))
    path, result = report.record_cell(
        tag,
        status,
        build_s=build_seconds,
        size_bytes=size_bytes,
        log=log,
        detail=detail,
        run_folder=run_folder,
        out_dir=out_dir,
        platform=platform,
    )
    Output().result(f"{path}: {result.status}")


@report_app.command("render")
def report_render_command(
    results: Annotated[list[Path], typer.Argument(help="Cell result files or folders of them.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o")] = Path("reports"),
    compat: CompatOption = None,
    started: Annotated[str | None, typer.Option("--started", help="ISO time the run started.")] = None,
) -> None:
    """Turn cell results into OUT/report.json and OUT/index.html (build logs copied into OUT/logs/)."""
    from builder.operate import report

    run, html_path = report.render_results(results, out_dir, started=started, compat=compat)
    summary = ", ".join(f"{n} {s}" for s, n in run.counts.items() if n) or "no cells"
    compat_line = (
        "compat data lacks releases (see the report)" if run.compat_diff else "compat data is current"
    )
    Output().result(f"{html_path}: {len(run.results)} cells: {summary}; {compat_line}")


@app.command()
def nightly(
    jobs: Annotated[int, typer.Option("-j", "--jobs", help="Builds at a time.")] = 1,
    push: Annotated[
        bool, typer.Option("--push", help="Push each passed cell; skip what the registry has.")
    ] = False,
    report_dir: Annotated[
        Path, typer.Option("--report", help="Where the JSON and HTML report and the run's logs go.")
    ] = Path("reports/nightly"),
    only: OnlyOption = None,
    mirror: MirrorOption = None,
    registry: RegistryOption = None,
    cell_timeout: Annotated[float, typer.Option("--cell-timeout", help="Seconds per cell build.")] = 3
    * 3600.0,
    compat: CompatOption = None,
    out_dir: OutDirOption = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
    as_json: Annotated[bool, typer.Option("--json", help="The run report, alone on stdout.")] = False,
    wheel_cache: WheelCacheOption = None,
    wheel_cache_offline: WheelCacheOfflineOption = False,
) -> None:
    """Build the whole matrix (or --only): skip cells already built/pushed, continue past failures, report."""
    from builder.build import render
    from builder.operate import nightly as nightly_mod
    from builder.operate import report

    out = Output(json_mode=as_json)
    m = matrix_mod.load(matrix)
    options = nightly_mod.NightlyOptions(
        jobs=jobs,
        push=push,
        registry_override=registry,
        cell_timeout_s=cell_timeout,
        out=out_dir or render.images_dir(m.path),
        report_dir=report_dir,
        only=only,
        mirror=mirror,
        compat=compat,
        wheel_cache=wheel_cache,
        wheel_cache_offline=wheel_cache_offline,
    )
    done = nightly_mod.nightly(m, options, out)
    results = list(done.run.results)
    table = nightly_mod.summary_table(results)
    if table is not None:
        out.show(table)
    counts = {status: n for status, n in done.run.counts.items() if n}
    out.result(
        f"nightly: {len(results)} cells: " + ", ".join(f"{n} {status}" for status, n in counts.items())
    )
    out.result(f"report: {done.html_path} ({done.json_path})")
    if wheel_cache:
        out.result(
            f"wheel cache: {done.wheel_cache_fetched / 1e9:.2f} GB fetched upstream this run ({wheel_cache})"
        )
    if done.run.compat_diff:
        out.result("compat check: the data lacks newer releases; see the report for the proposed diff")
    bad = [r for r in results if r.bad]
    for result in bad:
        out.result(f"FAILED {result.tag}: {result.status}" + (f": {result.detail}" if result.detail else ""))
    if as_json:
        out.document(report.to_json(done.run))
    if bad:
        raise typer.Exit(1)


def main() -> None:
    run_cli(app)


def run_cli(cli: typer.Typer) -> None:
    """Run a CLI (this one, or a tool's in tools/) and exit with its code. Errors inside this CLI's
    commands are mapped by `_Commands.invoke`; here: usage errors before a command, and a tool's errors."""
    # Ctrl-C (or `kill -INT`) stops a run even when it was started with SIGINT ignored, as a script's
    # background job is: the nightly's clean-up and partial report depend on it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = cli(standalone_mode=False)
    except BuilderError as exc:
        report_error(exc)
        code = exc.exit_code
    except typer.TyperException as exc:  # top-level usage errors, before any command runs
        code = _usage_error(exc)
    except (typer.Abort, KeyboardInterrupt):
        Output().info("interrupted")
        code = INTERRUPTED_EXIT
    sys.exit(code if isinstance(code, int) else 0)
