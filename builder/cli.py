"""Command line: `python -m builder ...` (also installed as `pytorch-cuda-images`).

The only module that exits: every other module raises a BuilderError, turned here into one line per
problem on stderr and the error's exit code.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console

from builder.build.render import (
    Renderer,
    cell_immutable_tag,
    floating_tags,
    remove_orphans,
    stale,
    templates_for,
    write,
)
from builder.errors import BuilderError, ConfigError
from builder.model import matrix as matrix_mod
from builder.model import profiles
from builder.model.cell import Cell
from builder.operate.report import CellResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Build, smoke-test and push PyTorch + CUDA images from matrix.yaml.",
    pretty_exceptions_enable=False,
)

MatrixOption = Annotated[Path, typer.Option("--matrix", "-m", help="The matrix file.", envvar="MATRIX")]
DEFAULT_OUT = Path("images")
RegistryOption = Annotated[
    str | None,
    typer.Option("--registry", envvar="REGISTRY", help="host[:port]/project (default: matrix.yaml)."),
]


def _load(path: Path) -> matrix_mod.Matrix:
    return matrix_mod.load(path)


def _renderer(m: matrix_mod.Matrix) -> Renderer:
    return Renderer(templates_for(m.path))


def _echo(line: str = "") -> None:
    typer.echo(line)


@app.command("list")
def list_cells(
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list of cell objects.")] = False,
    explain_drops: Annotated[
        bool, typer.Option("--explain-drops", help="Also list dropped cells and why.")
    ] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Glob(s) over tags.")] = None,
) -> None:
    """One line per matrix cell (its tag)."""
    m = _load(matrix)
    cells = m.select(only) if only else list(m.cells)
    if as_json:
        rows = [_cell_summary(c) for c in cells]
        if explain_drops:
            payload: object = {
                "cells": rows,
                "dropped": [{"tag": d.key.tag, "reasons": list(d.reasons)} for d in m.drops],
            }
        else:
            payload = rows
        _echo(json.dumps(payload, indent=2))
        return
    for cell in cells:
        _echo(cell.tag)
    if explain_drops:
        _echo(f"# dropped {len(m.drops)} impossible cells of the cartesian product:")
        for drop in m.drops:
            _echo(f"# {drop.key.tag}: {'; '.join(drop.reasons)}")


def _cell_summary(cell: Cell) -> dict[str, object]:
    return {
        "tag": cell.tag,
        "immutable_tag": cell_immutable_tag(cell),
        "floating_tags": floating_tags(cell),
        "torch": cell.key.torch,
        "torch_version": cell.torch_version,
        "accelerator": cell.key.accelerator,
        "cuda_version": cell.cuda_version,
        "os": cell.key.os,
        "variant": cell.variant,
        "python": cell.python_version,
        "base_image": cell.base_image_ref,
    }


@app.command()
def validate(matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX) -> None:
    """Exit 0 when the matrix is valid; 2 with one line per problem when not."""
    m = _load(matrix)
    renderer = _renderer(m)
    for cell in m.cells:
        renderer.files(cell)
    _echo(f"{matrix}: valid: {len(m.cells)} cells ({len(m.drops)} impossible combinations dropped)")


@app.command()
def render(
    tags: Annotated[list[str] | None, typer.Argument(help="Tags or globs; default: all cells.")] = None,
    all_cells: Annotated[bool, typer.Option("--all", help="Every cell of the matrix.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = DEFAULT_OUT,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 naming stale or missing files.")] = False,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Render Dockerfiles and their context files into OUT/<tag>/."""
    m = _load(matrix)
    everything = all_cells or not tags
    cells = list(m.cells) if everything else m.select(tags or [])
    renderer = _renderer(m)
    rendered = {cell.tag: renderer.files(cell) for cell in cells}
    if check:
        problems = stale(out, rendered, complete=everything)
        for problem in problems:
            _echo(problem)
        if problems:
            _echo(f"{len(problems)} rendered files are stale or missing: run `make render` and commit {out}/")
            raise typer.Exit(1)
        _echo(f"{out}/: {len(rendered)} cells up to date")
        return
    started = time.perf_counter()
    for tag, files in rendered.items():
        write(out, tag, files)
    removed = remove_orphans(out, rendered) if everything else []
    for path in removed:
        _echo(f"removed {path}/ (no longer in the matrix)")
    _echo(f"rendered {len(rendered)} cells into {out}/ in {time.perf_counter() - started:.2f} s")


@app.command()
def explain(tag: str, matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX) -> None:
    """What TAG resolves to, or why it is impossible."""
    m = _load(matrix)
    cell = m.cell(tag)
    profile = _profile_or_none(m)
    rows: list[tuple[str, str]] = [
        ("tag", cell.tag),
        ("immutable tag", cell_immutable_tag(cell)),
        ("floating tags", ", ".join(floating_tags(cell))),
        ("torch", cell.torch_version),
        (
            "torchvision",
            cell.torchvision_version + ("" if cell.variant == "full" else " (full variant only)"),
        ),
        (
            "torchaudio",
            (cell.torchaudio_version or "none released for this torch")
            + ("" if cell.variant == "full" or not cell.torchaudio_version else " (full variant only)"),
        ),
        ("accelerator", cell.key.accelerator),
        ("CUDA", cell.cuda_version or "none (CPU build)"),
        ("cuDNN", _cudnn_text(cell)),
        ("NCCL", cell.nccl_version or "none"),
        ("minimum driver", cell.min_driver or "none needed"),
        ("GPU architectures", cell.arch_list or "none"),
        (
            "Python",
            f"{cell.python_version} ({cell.os_family.capitalize()} {cell.os_version}'s python3, /opt/venv)",
        ),
        ("OS", f"{cell.os_family.capitalize()} {cell.os_version} ({cell.os_codename})"),
        ("variant", cell.variant),
        ("base image", cell.base_image_ref),
        ("wheel source", _wheel_source(cell)),
    ]
    if cell.cuda_dev_base:
        rows.append(
            (
                "CUDA compiler",
                "NVIDIA's cuda-toolkit wheels " + str(cell.toolkit_wheel)
                if cell.cuda_dev_base == "wheels"
                else "NVIDIA's cuDNN devel image",
            )
        )
    rows.append(("size budget", f"{cell.size_budget_gb} GB"))
    if profile is not None:
        rows.append((f"mirror profile ({profile.name})", profile.base_image(cell)))
        for name, value in profile.build_args(cell).items():
            if value:
                rows.append((f"  {name}", value))
    for warning in cell.warnings:
        rows.append(("warning", warning))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        _echo(f"{name.ljust(width)}  {value}")


def _cudnn_text(cell: Cell) -> str:
    if not cell.cudnn_version:
        return "none"
    if "." in cell.cudnn_version:
        return cell.cudnn_version
    return (
        f"{cell.cudnn_version}.x (the {cell.wheel_index} build pins its own patch; the smoke test reports it)"
    )


def _profile_or_none(m: matrix_mod.Matrix) -> profiles.ResolvedProfile | None:
    """The chosen mirror profile, or None when its environment is not set (explain still works)."""
    try:
        return profiles.resolve(m, None)
    except ConfigError:
        return None


def _wheel_source(cell: Cell) -> str:
    if cell.wheel_source == "pypi":
        return f"PyPI (the default Linux wheel carries CUDA {cell.cuda_minor}; no PyTorch index needed)"
    if cell.wheel_source == "custom":
        return f"custom index {cell.wheel_index}"
    return f"PyTorch index {cell.wheel_index} (https://download.pytorch.org/whl/{cell.wheel_index})"


@app.command()
def build(
    tag: str,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
    out: Annotated[Path, typer.Option("--out", "-o")] = DEFAULT_OUT,
    mirror: Annotated[str | None, typer.Option("--mirror", envvar="MIRROR", help="Mirror profile.")] = None,
    require_gpu: Annotated[
        bool, typer.Option("--require-gpu", help="GPU checks fail without a GPU.")
    ] = False,
    smoke_timeout: Annotated[float, typer.Option("--smoke-timeout", help="Seconds.")] = 300.0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Build without the layer cache.")] = False,
    push: Annotated[bool, typer.Option("--push", help="Push to the registry after the tag step.")] = False,
    registry: RegistryOption = None,
) -> None:
    """Resolve and render TAG, then build it, run its smoke tests and tag it (--push: and push it)."""
    from rich.console import Console

    from builder.build import lock, pipeline
    from builder.build.engine import Engine

    m = _load(matrix)
    cell = m.cell(tag)
    profile = profiles.resolve(m, mirror)
    console = Console(stderr=True, soft_wrap=True)
    for warning in cell.warnings:
        console.print(f"warning: {warning}")
    engine = Engine.connect()
    built = pipeline.build_cell(
        engine,
        _renderer(m),
        cell,
        profile,
        lock_data=lock.read(lock.lock_path(m.path)),
        out=out,
        console=console,
        require_gpu=require_gpu,
        smoke_timeout=smoke_timeout,
        nocache=no_cache,
    )
    size_gb = built.size_bytes / 1e9
    _echo(
        f"{cell.tag}: tagged {', '.join(built.tags)} ({size_gb:.2f} GB, built in {built.build_seconds:.0f} s)"
    )
    run_hint = "docker run --rm -it"
    if cell.is_cuda:
        run_hint += " --gpus all"
    if cell.variant == "full":
        run_hint += " -p 8888:8888 -p 2222:22 -v $(pwd):/workspace"
    _echo(f"run it: {run_hint} {built.tags[0]}")
    if push:
        _push_cells(
            m, [cell], registry=registry, retries=None, retry_max_s=None, create_project=False, force=False
        )


def _push_cells(
    m: matrix_mod.Matrix,
    cells: list[Cell],
    *,
    registry: str | None,
    retries: int | None,
    retry_max_s: float | None,
    create_project: bool,
    force: bool,
    image: str | None = None,
) -> None:
    from rich.console import Console

    from builder.build.engine import Engine
    from builder.publish import push as registry_mod

    target = registry_mod.resolve_target(m.spec.registry.target, registry)
    creds = registry_mod.lookup_credentials(target.host)
    policy = registry_mod.RetryPolicy.from_env(retries, retry_max_s)
    console = Console(stderr=True, soft_wrap=True)
    if create_project:
        created = registry_mod.ensure_harbor_project(target, creds)
        _echo(f"Harbor project {target.project!r} on {target.host}: {'created' if created else 'exists'}")
    engine = Engine.connect()
    for cell in cells:
        plan = registry_mod.plan_push(cell, target, local=image)
        result = registry_mod.push_cell(
            engine, plan, target, creds, policy=policy, console=console, force=force
        )
        for line in result.lines():
            _echo(f"{cell.tag}: {line}")


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
    """Push built cells: the immutable tag, its digest verified, then the floating tags."""
    m = _load(matrix)
    cells = m.select(tags)
    if image and len(cells) != 1:
        raise ConfigError(f"--image {image} needs exactly one TAG ({len(cells)} selected)")
    _push_cells(
        m,
        cells,
        registry=registry,
        retries=retries,
        retry_max_s=retry_max_s,
        create_project=create_project,
        force=force,
        image=image,
    )


@app.command("mirror-bases")
def mirror_bases_command(
    only: Annotated[list[str] | None, typer.Option("--only", help="Glob(s) over tags.")] = None,
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
    from rich.console import Console

    from builder.build import lock
    from builder.build.engine import Engine
    from builder.publish import push as registry_mod

    m = _load(matrix)
    if record_profile is not None and record_profile not in m.spec.mirrors.profiles:
        raise ConfigError(
            f"--profile {record_profile!r}: unknown mirror profile; "
            f"allowed: {', '.join(m.spec.mirrors.profiles)}"
        )
    profile = profiles.resolve(m, mirror)
    cells = m.select(only) if only else list(m.cells)
    destination = to or registry_mod.resolve_target(m.spec.registry.target, registry).host
    path = lock.lock_path(m.path)
    recorded = lock.read(path)["bases"].get(record_profile or "", {}) or {}
    engine = Engine.connect()
    done = registry_mod.mirror_bases(
        engine,
        registry_mod.select_bases(cells, profile.base_image),
        destination,
        policy=registry_mod.RetryPolicy.from_env(retries, retry_max_s),
        console=Console(stderr=True, soft_wrap=True),
        recorded=recorded,
    )
    for item in done:
        action = "copied" if item.copied else "present"
        _echo(f"{action} {item.mirror}@{item.mirror_digest} (from {item.source}@{item.digest})")
    if record_profile is None:
        _echo(f"{len(done)} base images in {destination} (--profile NAME records them in {path.name})")
        return
    digests = {item.mirror: item.mirror_digest for item in done}
    refs = {ref: ref for ref in [*recorded, *digests]}
    text, _ = lock.updated_text(path, list(m.cells), record_profile, refs, digests.get)
    path.write_text(text, encoding="utf-8")
    _echo(f"{len(done)} base images in {destination}; digests recorded in {path} (profile {record_profile})")


@app.command("smoke")
def smoke_command(
    target: Annotated[
        str, typer.Argument(help="A tag of the matrix (its local image) or any image reference.")
    ],
    require_gpu: Annotated[
        bool, typer.Option("--require-gpu", help="GPU checks fail without a GPU.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Suite timeout in seconds.")] = 300.0,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Run the in-image smoke suite against a built image (exit 1 when a check fails)."""
    from builder.build import gate, pipeline
    from builder.build.engine import Engine
    from builder.model.tags import TAG_RE

    image = target
    if TAG_RE.match(target):
        image = pipeline.local_references(_load(matrix).cell(target))[0]
    engine = Engine.connect()
    report = gate.run(
        engine, image, require_gpu=require_gpu, gpus=engine.has_nvidia_runtime(), timeout=timeout
    )
    if as_json:
        _echo(json.dumps(report.raw, indent=2))
    else:
        for line in report.table():
            _echo(line)
    gate.gate(report)
    _echo(f"{image}: smoke tests passed in {report.seconds:.1f} s")


@app.command()
def doctor(
    tag: Annotated[str | None, typer.Argument(help="Check the host against this cell's needs.")] = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Host-side checks alone: engine, GPU runtime, driver vs the cell's minimum (exit 1 on a failure)."""
    from builder.build import gate

    cell = _load(matrix).cell(tag) if tag else None
    checks = gate.doctor(cell)
    width = max(len(c.name) for c in checks)
    for check in checks:
        _echo(f"{check.name.ljust(width)}  {check.status.ljust(7)}  {check.detail}")
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


@app.command("lock")
def lock_command(
    update: Annotated[bool, typer.Option("--update", help="Rewrite matrix.lock and print the diff.")] = False,
    no_bases: Annotated[
        bool, typer.Option("--no-bases", help="With --update: cells only, no engine.")
    ] = False,
    mirror: Annotated[
        str | None, typer.Option("--mirror", envvar="MIRROR", help="Profile to resolve.")
    ] = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Check matrix.lock against the matrix (exit 1 when stale), or --update it."""
    from builder.build import lock
    from builder.build.engine import Engine
    from builder.errors import MirrorError

    m = _load(matrix)
    path = lock.lock_path(m.path)
    cells = list(m.cells)
    if not update:
        problems = lock.stale_cells(path, cells)
        for problem in problems[:50]:
            _echo(problem)
        if problems:
            _echo(f"{path}: {len(problems)} cells stale: run `python -m builder lock --update`")
            raise typer.Exit(1)
        _echo(f"{path}: {len(cells)} cells locked and current")
        return
    profile = profiles.resolve(m, mirror)
    if not profile.lock_bases and not no_bases:
        raise ConfigError(
            f"mirror profile {profile.name!r} has lock_bases: false (its bases are made per machine); "
            "use --no-bases or another profile"
        )
    refs = {} if no_bases else {c.tag: profile.base_image(c) for c in cells}
    engine = Engine.connect() if refs else None
    unresolved: list[str] = []

    def resolve(ref: str) -> str | None:
        assert engine is not None
        try:
            return engine.pull(ref)
        except MirrorError as exc:
            unresolved.append(str(exc))
            return None

    text, diff = lock.updated_text(path, cells, profile.name, refs, resolve)
    path.write_text(text, encoding="utf-8")
    _echo(diff or f"{path}: unchanged")
    for problem in unresolved:
        typer.echo(f"warning: {problem}", err=True)


# --- nightly pieces: CI job matrix, run reports (ci_matrix.py, report.py) -------------------------------

report_app = typer.Typer(no_args_is_help=True, help="Run reports: per-cell results, a JSON and an HTML page.")
app.add_typer(report_app, name="report")
CompatOption = Annotated[
    Path | None,
    typer.Option("--compat", help="The JSON of `python -m tools.update_compat --json`, shown in the report."),
]


def _compat_result(path: Path | None) -> tuple[str, list[str]]:
    """The compat check's diff and notes from its JSON file (no file: nothing to show)."""
    if path is None:
        return "", []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return str(raw["diff"]), [str(note) for note in raw["notes"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{path}: not the JSON of `python -m tools.update_compat --json` (keys: current, diff, notes)"
        ) from None


@app.command("ci-matrix")
def ci_matrix_command(
    fmt: Annotated[str, typer.Option("--format", help="github or gitlab.")] = "github",
    only: Annotated[list[str] | None, typer.Option("--only", help="Glob(s) over tags.")] = None,
    cpu_runner: Annotated[
        list[str] | None, typer.Option("--cpu-runner", help="Runner label/tag for CPU cells (repeatable).")
    ] = None,
    gpu_runner: Annotated[
        list[str] | None, typer.Option("--gpu-runner", help="Runner label/tag for CUDA cells (repeatable).")
    ] = None,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """The cells as a CI job matrix, one cell per job: GitHub `fromJSON` include list or GitLab child YAML."""
    from builder.operate import ci_matrix

    if fmt not in ("github", "gitlab"):
        raise ConfigError(f"--format {fmt!r}: allowed: github, gitlab")
    m = _load(matrix)
    cells = m.select(only) if only else list(m.cells)
    default = ci_matrix.GITHUB_RUNNERS if fmt == "github" else ci_matrix.GITLAB_RUNNERS
    runners = ci_matrix.Runners(
        cpu=tuple(cpu_runner) if cpu_runner else default.cpu,
        gpu=tuple(gpu_runner) if gpu_runner else default.gpu,
    )
    if fmt == "github":
        _echo(ci_matrix.github_json(cells, runners))
    else:
        typer.echo(ci_matrix.gitlab(cells, runners, source=str(matrix)), nl=False)


@report_app.command("cell")
def report_cell_command(
    tag: str,
    status: Annotated[
        str,
        typer.Option("--status", help="passed|failed|skipped|cached|timeout|interrupted or a CI outcome."),
    ],
    build_seconds: Annotated[float | None, typer.Option("--build-seconds")] = None,
    size_bytes: Annotated[int | None, typer.Option("--size-bytes")] = None,
    log: Annotated[Path | None, typer.Option("--log", help="Default: IMAGES/<tag>/build.log.")] = None,
    detail: Annotated[str | None, typer.Option("--detail")] = None,
    images: Annotated[Path, typer.Option("--images", help="Where the build left its files.")] = DEFAULT_OUT,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("reports/cells"),
) -> None:
    """Record one cell's result (its smoke-result.json read for the failing check) as OUT/<tag>.json."""
    from builder.model.tags import parse_tag
    from builder.operate import report

    tag = parse_tag(tag).tag
    smoke_file = images / tag / "smoke-result.json"
    facts = report.smoke_facts(json.loads(smoke_file.read_text()) if smoke_file.is_file() else None)
    if detail is not None:
        facts["detail"] = detail
    log_path = log or images / tag / "build.log"
    result = report.CellResult.for_tag(
        tag,
        status,
        size_bytes=size_bytes,
        build_s=build_seconds,
        log_path=str(log_path) if log_path.is_file() else None,
        **facts,
    )
    _echo(f"{report.save_result(result, out)}: {result.status}")


@report_app.command("render")
def report_render_command(
    results: Annotated[list[Path], typer.Argument(help="Cell result files or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("reports"),
    compat: CompatOption = None,
    started: Annotated[str | None, typer.Option("--started", help="ISO time the run started.")] = None,
) -> None:
    """Turn cell results into OUT/report.json and OUT/index.html (build logs copied into OUT/logs/)."""
    import datetime as dt

    from builder.operate import report

    cells = report.load_results(results)
    now = dt.datetime.now(dt.UTC)
    begin = dt.datetime.fromisoformat(started) if started else now
    if not started:
        files = [p for r in results for p in ([r] if r.is_file() else r.rglob("*.json"))]
        if files:
            begin = dt.datetime.fromtimestamp(min(p.stat().st_mtime for p in files), dt.UTC)
    diff, notes = _compat_result(compat)
    run = report.RunReport(begin, now, tuple(cells), compat_diff=diff, compat_notes=tuple(notes))
    _, html_path = report.write_report(run, out, copy_logs=True)
    summary = ", ".join(f"{n} {s}" for s, n in run.counts.items() if n) or "no cells"
    compat_line = "compat data is current" if not diff else "compat data lacks releases (see the report)"
    _echo(f"{html_path}: {len(cells)} cells: {summary}; {compat_line}")


@app.command()
def nightly(
    jobs: Annotated[int, typer.Option("-j", "--jobs", help="Builds at a time.")] = 1,
    push: Annotated[
        bool, typer.Option("--push", help="Push each passed cell; skip what the registry has.")
    ] = False,
    report_dir: Annotated[Path, typer.Option("--report", help="Where the JSON and HTML report go.")] = Path(
        "reports/nightly"
    ),
    only: Annotated[list[str] | None, typer.Option("--only", help="Glob(s) over tags.")] = None,
    mirror: Annotated[str | None, typer.Option("--mirror", envvar="MIRROR", help="Mirror profile.")] = None,
    registry: RegistryOption = None,
    cell_timeout: Annotated[float, typer.Option("--cell-timeout", help="Seconds per cell build.")] = 3
    * 3600.0,
    compat: CompatOption = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = DEFAULT_OUT,
    matrix: MatrixOption = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Build the whole matrix (or --only): skip cells already built/pushed, continue past failures, report."""
    import datetime as dt

    from rich.console import Console

    from builder.build import lock
    from builder.operate import nightly as nightly_mod
    from builder.operate import report

    started = dt.datetime.now(dt.UTC)
    m = _load(matrix)
    cells = m.select(only) if only else list(m.cells)
    profile = profiles.resolve(m, mirror)
    console = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 200)
    diff, notes = _compat_result(compat)
    options = nightly_mod.NightlyOptions(
        jobs=jobs,
        push=push,
        registry_override=registry,
        cell_timeout_s=cell_timeout,
        out=out,
        matrix_path=m.path,
    )

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    try:
        results = nightly_mod.run(
            cells,
            renderer=_renderer(m),
            profile=profile,
            lock_data=lock.read(lock.lock_path(m.path)),
            options=options,
            say=say,
            console=console,
        )
    except nightly_mod.NightlyInterrupted as stop:
        paths = report.write_report(nightly_mod.make_report(stop.results, started, diff, notes), report_dir)
        typer.echo(f"interrupted: partial report in {paths[1]}", err=True)
        raise typer.Exit(130) from None
    run = nightly_mod.make_report(results, started, diff, notes)
    json_path, html_path = report.write_report(run, report_dir)
    _summary_table(console, results)
    counts = {status: n for status, n in run.counts.items() if n}
    _echo(f"nightly: {len(results)} cells: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    _echo(f"report: {html_path} ({json_path})")
    if diff:
        _echo("compat check: the data lacks newer releases; see the report for the proposed diff")
    bad = [r for r in results if r.bad]
    for result in bad:
        _echo(f"FAILED {result.tag}: {result.status}" + (f": {result.detail}" if result.detail else ""))
    if bad:
        raise typer.Exit(1)


def _summary_table(console: Console, results: Sequence[CellResult]) -> None:
    """The end-of-run table: every cell that was built or failed (cached ones are only counted)."""
    from rich.table import Table

    rows = [r for r in results if r.status != "cached"]
    if not rows:
        return
    table = Table(title="nightly", show_lines=False)
    for column in ("cell", "status", "build", "smoke", "size"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="ellipsis", no_wrap=True)
    for r in rows:
        table.add_row(
            r.tag,
            r.status,
            f"{r.build_s:.0f} s" if r.build_s is not None else "",
            f"{r.smoke_s:.1f} s" if r.smoke_s is not None else "",
            f"{r.size_bytes / 1e9:.2f} GB" if r.size_bytes else "",
            (r.failing_check or r.detail or "")[:80],
        )
    console.print(table)


def main() -> None:
    run_cli(app)


def run_cli(cli: typer.Typer) -> None:
    """Run a CLI (this one, or a tool's in tools/); BuilderErrors become one line per problem and their
    exit code."""
    try:
        result = cli(standalone_mode=False)
    except BuilderError as exc:
        for line in exc.lines:
            typer.echo(f"error: {line}", err=True)
        for line in exc.details:
            typer.echo(line, err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, typer.Abort):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except (click.ClickException, typer.TyperException) as exc:  # typer may bundle its own click
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message())
            sys.exit(0)
        typer.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
