"""The nightly matrix run: skip every cell whose content is already built (or pushed), build the rest N at a
time, continue past failures, and leave a JSON + HTML report.

Each cell runs the pipeline in-process, in a worker thread with its own Engine object: a cell that hangs is
cancelled at its timeout and Ctrl-C cancels every running cell the same way (the build stream is cut, so the
engine stops the build and removes its containers; a cancelled cell never tags or pushes). One cell's error
or crash becomes its result; the others go on. Each cell's run output (build.log, smoke-result.json) goes
to the run folder `<report>/cells/<tag>/`, never into the rendered images/ tree. A second run after a crash
resumes: what finished is skipped by its content hash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.live import Live
from rich.table import Table

from builder.build import lock, pipeline, wheel_cache
from builder.build.engine import Engine
from builder.build.render import Renderer, templates_for
from builder.errors import BuilderError, ConfigError, RegistryError, StoppedError
from builder.model import naming, profiles
from builder.model.cell import Cell
from builder.model.matrix import Matrix
from builder.model.naming import (
    CONTENT_HASH_LABEL,
    floating_tag,
    immutable_tag,
    local_references,
    parse_reference,
)
from builder.model.platforms import emulation_available, enable_hint
from builder.model.profiles import ResolvedProfile
from builder.operate import report
from builder.output import Output
from builder.publish import index
from builder.publish.push import Publisher

DEFAULT_CELL_TIMEOUT_S = 3 * 3600.0
CELLS_DIR = "cells"  # the run folder inside the report folder: cells/<tag>/build.log, smoke-result.json


@dataclass
class Planned:
    """A cell with the content hash each of its platforms' images is expected to carry, or the reason it
    cannot be planned (then no hashes)."""

    cell: Cell
    content_hashes: dict[str, str]  # platform -> content hash
    problem: str = ""

    def done(self, found: dict[str, str], platforms: list[str] | None = None) -> bool:
        """Whether `found` (platform -> content hash of an image built or pushed) holds each of
        `platforms` (default: all of the cell's) with its expected content hash."""
        wanted = list(self.content_hashes) if platforms is None else platforms
        return bool(wanted) and all(
            p in self.content_hashes and found.get(p) == self.content_hashes[p] for p in wanted
        )


@dataclass
class NightlyOptions:
    """How a nightly runs (the `nightly` command's options)."""

    jobs: int = 1
    push: bool = False
    registry_override: str | None = None
    cell_timeout_s: float = DEFAULT_CELL_TIMEOUT_S
    out: Path = Path("images")  # rendered files (the committed tree)
    report_dir: Path = Path("reports/nightly")  # the report, and the run output under cells/<tag>/
    only: list[str] | None = None  # tag globs; None: every cell
    mirror: str | None = None  # mirror profile; None: the matrix's default
    compat: Path | None = None  # `python -m tools.update_compat --json` output, shown in the report
    wheel_cache: Path | None = None  # a caching PyPI proxy's folder: each wheel fetched upstream once
    wheel_cache_offline: bool = False  # the proxy serves only what the folder holds

    @property
    def run_dir(self) -> Path:
        return self.report_dir / CELLS_DIR


def plan(
    cells: list[Cell],
    renderer: Renderer,
    profile: ResolvedProfile,
    lock_data: dict[str, Any],
    resolve_digest: Callable[[str], str | None],
) -> list[Planned]:
    """Expected content hash per cell and platform: rendered context, build args (a platform other than
    the cell's first adds its name) and base digest (from the lock first; for several platforms the
    index's, as the build records it)."""
    digests: dict[str, str | None] = {}
    planned = []
    for cell in cells:
        base_ref = profile.base_image(cell)
        if base_ref not in digests:
            locked = lock.pinned_digest(lock_data, profile.name, profile.lock_bases, base_ref)
            digests[base_ref] = locked or resolve_digest(base_ref)
        digest = digests[base_ref]
        if digest is None:
            planned.append(Planned(cell, {}, f"base image {base_ref} not found in the registry mirror"))
            continue
        try:
            context = pipeline.build_context(renderer, cell, profile, lock_data)
        except ConfigError as exc:  # no current hash lock: refused, never built unlocked
            planned.append(Planned(cell, {}, str(exc)))
            continue
        args = profile.build_args(cell)
        hashes = {
            platform: pipeline.cell_content_hash(
                context, pipeline.platform_args(cell, platform, args), digest
            )
            for platform in cell.platforms
        }
        planned.append(Planned(cell, hashes))
    return planned


def built_on_engine(planned: Planned, engine: Engine) -> bool:
    """True when the engine holds the image of every platform of the cell it can build (its own, others
    under QEMU), each with its content hash (nightly without --push)."""
    native = engine.native_platform()
    runnable = [p for p in planned.content_hashes if emulation_available(p, native)]
    found = {}
    for platform in runnable:
        reference = local_references(planned.cell, platform)[1]
        if engine.image_exists(reference):
            labels = (engine.image_attrs(reference).get("Config") or {}).get("Labels") or {}
            found[platform] = labels.get(CONTENT_HASH_LABEL, "")
    return planned.done(found, runnable)


def digest_resolver(connect: Callable[[], Engine]) -> Callable[[str], str | None]:
    """A base image's digest from the registry mirror through the engine (None: not found); the engine
    is connected on the first question only (a plan whose bases are all locked needs none)."""
    engines: list[Engine] = []

    def resolve(ref: str) -> str | None:
        if not engines:
            engines.append(connect())
        try:
            return engines[0].registry_digest(ref, auth=None)
        except BuilderError:
            return None

    return resolve


def triage(
    cells: list[Cell],
    *,
    renderer: Renderer,
    profile: ResolvedProfile,
    lock_data: dict[str, Any],
    resolve_digest: Callable[[str], str | None],
    is_done: Callable[[Planned], bool],
    publisher: Publisher | None,
    output: Output,
) -> tuple[dict[str, report.CellResult], list[Cell]]:
    """Decide every cell without building: (results of the cells decided, cells to build).

    With a publisher the registry is asked (a cell is done when the registry's immutable tag carries its
    content hash; a floating tag left behind is moved to it), else `is_done` (the engine). A cell whose
    plan failed (its base is missing) is a failed result. The one home of the skip-by-content-hash rule,
    for `nightly` and `ci-matrix --changed`.
    """
    remote_hash = _remote_hash(publisher) if publisher is not None else None
    sync_floating = _floating_syncer(publisher) if publisher is not None else None
    results: dict[str, report.CellResult] = {}
    todo: list[Cell] = []
    for planned in plan(cells, renderer, profile, lock_data, resolve_digest):
        tag = planned.cell.tag
        if planned.problem:
            results[tag] = report.CellResult.for_tag(tag, "failed", detail=planned.problem)
            continue
        done = planned.done(remote_hash(planned.cell)) if remote_hash is not None else is_done(planned)
        if not done:
            todo.append(planned.cell)
            continue
        where = "in the registry" if publisher is not None else "on the engine"
        detail = f"same content hash {where}"
        try:
            moved = sync_floating(planned.cell) if sync_floating is not None else []
        except (BuilderError, OSError) as exc:
            results[tag] = report.CellResult.for_tag(tag, "failed", detail=f"{detail}; {exc}")
            continue
        if moved:
            detail += f"; moved {', '.join(moved)} to it (left behind by an interrupted run)"
            output.info(f"{tag}: {detail}")
        results[tag] = report.CellResult.for_tag(tag, "cached", detail=detail)
    return results, todo


def changed_cells(
    m: Matrix, cells: list[Cell], publisher: Publisher, *, mirror: str | None, output: Output
) -> list[Cell]:
    """`ci-matrix --changed`: the cells whose content hash the registry lacks, in matrix order (a cell
    whose plan failed is kept, so that its job reports why)."""
    results, _ = triage(
        cells,
        renderer=Renderer(templates_for(m.path)),
        profile=profiles.resolve(m, mirror),
        lock_data=lock.read(lock.lock_path(m.path)),
        resolve_digest=digest_resolver(Engine.connect),
        is_done=lambda _: False,
        publisher=publisher,
        output=output,
    )
    cached = [tag for tag, result in results.items() if result.status == "cached"]
    output.info(
        f"ci-matrix: {len(cells)} cells, {len(cached)} with the same content hash in "
        f"{publisher.target.host}/{publisher.target.repository}, {len(cells) - len(cached)} to build"
    )
    return [cell for cell in cells if cell.tag not in cached]


class CellRunner:
    """Runs the pipeline for one cell at a time per worker, each with its own Engine object, so a timeout
    or Ctrl-C cancels exactly that cell's work."""

    def __init__(
        self,
        options: NightlyOptions,
        *,
        renderer: Renderer,
        profile: ResolvedProfile,
        lock_data: dict[str, Any],
        output: Output,
        publisher: Publisher | None = None,
        connect: Callable[[], Engine] = Engine.connect,
    ) -> None:
        self.options = options
        self.renderer = renderer
        self.profile = profile
        self.lock_data = lock_data
        self.output = output
        self.publisher = publisher
        self.connect = connect
        self.stopping = threading.Event()
        self._running: dict[str, tuple[Engine, float]] = {}
        self._why: dict[str, str] = {}  # tag -> "timeout" | "interrupted"
        self._lock = threading.Lock()

    def running(self) -> list[tuple[str, float]]:
        """(tag, seconds so far) of every running cell."""
        now = time.monotonic()
        with self._lock:
            return [(tag, now - started) for tag, (_, started) in self._running.items()]

    def expire(self) -> None:
        """Cancel every cell running longer than its timeout."""
        limit = self.options.cell_timeout_s
        with self._lock:
            late = [
                (tag, engine)
                for tag, (engine, started) in self._running.items()
                if time.monotonic() - started > limit
            ]
            for tag, _ in late:
                self._why.setdefault(tag, "timeout")
        for _, engine in late:
            engine.cancel()

    def stop_all(self) -> None:
        """Ctrl-C: start nothing more and cancel every running cell."""
        self.stopping.set()
        with self._lock:
            engines = list(self._running.items())
            for tag, _ in engines:
                self._why.setdefault(tag, "interrupted")
        for _, (engine, _) in engines:
            engine.cancel()

    def build(self, cell: Cell) -> report.CellResult:
        """Render, build, smoke-test, tag (and push) one cell; its result, whatever happens."""
        if self.stopping.is_set():
            return report.CellResult.for_tag(
                cell.tag, "interrupted", detail="not started: the run was interrupted"
            )
        run_dir = self.options.run_dir / cell.tag
        shutil.rmtree(run_dir, ignore_errors=True)
        started = time.monotonic()
        try:
            engine = self.connect()
        except BuilderError as exc:
            return report.CellResult.for_tag(cell.tag, "failed", detail=str(exc))
        with self._lock:
            self._running[cell.tag] = (engine, started)
            if self.stopping.is_set():  # Ctrl-C came while this cell was connecting
                self._why.setdefault(cell.tag, "interrupted")
                engine.cancel()
        self.output.info(f"{cell.tag}: building")
        builds: list[pipeline.BuiltCell] = []
        runnable: list[str] = []
        building: str | None = None  # the platform being built, for the row of a failed one
        try:
            native = engine.native_platform()
            runnable = [p for p in cell.platforms if emulation_available(p, native)]
            for platform in cell.platforms:
                if platform not in runnable:
                    self.output.info(f"{cell.tag}: {platform} not built here: {enable_hint(platform)}")
            multi = len(cell.platforms) > 1
            for platform in runnable if multi else cell.platforms[:1]:
                building = platform
                built = pipeline.build_cell(
                    engine,
                    self.renderer,
                    cell,
                    self.profile,
                    out=self.options.out,
                    runs=self.options.run_dir,
                    output=self.output,
                    lock_data=self.lock_data,
                    platform=platform if multi else None,  # another CPU than the engine's: under QEMU
                )
                builds.append(built)
            building = None
            rows = _platform_rows(cell, builds, runnable, self.options.run_dir) if multi else ()
            built = builds[0]
            if self.publisher is not None and multi:
                for line in self.publisher.push_platforms(engine, cell, runnable, self.output):
                    self.output.info(f"{cell.tag}: {line}")
            elif self.publisher is not None:
                for line in self.publisher.push(engine, cell, self.output).lines():
                    self.output.info(f"{cell.tag}: {line}")
        except BuilderError as exc:
            seconds = time.monotonic() - started
            if not (isinstance(exc, StoppedError) or engine.cancelled):
                failed_rows = (
                    _platform_rows(cell, builds, runnable, self.options.run_dir, failed=building)
                    if len(cell.platforms) > 1
                    else ()
                )
                return self._result(
                    cell, "failed", run_dir, build_s=seconds, detail=str(exc), platforms=failed_rows
                )
            with self._lock:
                why = self._why.get(cell.tag, "interrupted")
            detail = f"stopped after its timeout of {self.options.cell_timeout_s:.0f} s"
            return self._result(
                cell, why, run_dir, build_s=seconds, detail=detail if why == "timeout" else why
            )
        except Exception as exc:  # one cell's crash must not take the other cells down
            detail = f"crashed: {type(exc).__name__}: {exc}"
            return self._result(cell, "failed", run_dir, build_s=time.monotonic() - started, detail=detail)
        finally:
            with self._lock:
                self._running.pop(cell.tag, None)
            engine.close()
        return self._result(
            cell,
            "passed",
            run_dir,
            build_s=time.monotonic() - started,
            size_bytes=built.size_bytes,
            smoke=built.smoke.raw if built.smoke else None,
            platforms=rows,
        )

    @staticmethod
    def _result(
        cell: Cell, status: str, run_dir: Path, *, smoke: dict[str, Any] | None = None, **values: Any
    ) -> report.CellResult:
        """A cell's result; the smoke facts come from its report (a failed gate left it in the run folder)."""
        smoke_path = run_dir / "smoke-result.json"
        if smoke is None and status == "failed" and smoke_path.is_file():
            smoke = json.loads(smoke_path.read_text(encoding="utf-8"))
        facts = report.smoke_facts(smoke)
        if facts.get("detail") and values.get("detail"):
            facts.pop("detail")
        log = run_dir / "build.log"
        return report.CellResult.for_tag(
            cell.tag, status, log_path=str(log.resolve()) if log.is_file() else None, **{**facts, **values}
        )


def _platform_rows(
    cell: Cell,
    builds: list[pipeline.BuiltCell],
    runnable: list[str],
    runs: Path,
    *,
    failed: str | None = None,
) -> tuple[report.PlatformResult, ...]:
    """A multi-platform cell's row per platform: each built one with its numbers, the one that `failed`
    with its failing check (from its run folder below `runs`), and those this engine cannot run as
    skipped."""
    rows = {
        b.platform: report.PlatformResult(
            b.platform,
            "passed",
            size_bytes=b.size_bytes,
            build_s=b.build_seconds,
            smoke_s=b.smoke.seconds if b.smoke else None,
        )
        for b in builds
    }
    if failed is not None:
        smoke_path = Path(naming.run_dir(str(runs), cell, failed)) / "smoke-result.json"
        smoke = json.loads(smoke_path.read_text(encoding="utf-8")) if smoke_path.is_file() else None
        facts = report.smoke_facts(smoke)
        rows[failed] = report.PlatformResult(
            failed, "failed", smoke_s=facts.get("smoke_s"), failing_check=facts.get("failing_check")
        )
    for platform in cell.platforms:
        if platform not in runnable:
            rows[platform] = report.PlatformResult(platform, "skipped")
    return tuple(rows[p] for p in cell.platforms if p in rows)


def run(
    cells: list[Cell],
    *,
    renderer: Renderer,
    profile: ResolvedProfile,
    lock_data: dict[str, Any],
    options: NightlyOptions,
    output: Output,
    publisher: Publisher | None = None,
    connect: Callable[[], Engine] = Engine.connect,
) -> list[report.CellResult]:
    """Plan, skip what is done, build the rest; one result per cell (order of `cells`).

    With a publisher, "done" means the registry holds the content, and passed cells are pushed. Ctrl-C
    raises NightlyInterrupted carrying the results so far.
    """
    engine = connect()
    results, todo = triage(
        cells,
        renderer=renderer,
        profile=profile,
        lock_data=lock_data,
        resolve_digest=digest_resolver(lambda: engine),
        is_done=lambda planned: built_on_engine(planned, engine),
        publisher=publisher,
        output=output,
    )
    output.info(
        f"nightly: {len(cells)} cells, {len(results)} decided without building "
        f"({sum(r.status == 'cached' for r in results.values())} cached), {len(todo)} to build"
    )
    runner = CellRunner(
        options,
        renderer=renderer,
        profile=profile,
        lock_data=lock_data,
        output=output.background(),
        publisher=publisher,
        connect=connect,
    )
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool, _live(runner, output):
        futures: dict[Future[report.CellResult], Cell] = {pool.submit(runner.build, c): c for c in todo}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                runner.expire()
                for future in done:
                    result = future.result()
                    results[result.tag] = result
                    output.info(
                        f"{result.tag}: {result.status}" + (f" ({result.detail})" if result.detail else "")
                    )
        except KeyboardInterrupt:
            output.info("nightly: interrupted: stopping every running cell")
            runner.stop_all()
            for future in futures:
                future.cancel()
            for future, cell in futures.items():
                if future.cancelled():
                    results[cell.tag] = report.CellResult.for_tag(
                        cell.tag, "interrupted", detail="not started"
                    )
                else:
                    result = _wait_through_ctrl_c(future, output)
                    results[result.tag] = result
            raise NightlyInterrupted([results[c.tag] for c in cells if c.tag in results]) from None
    return [results[c.tag] for c in cells]


def _wait_through_ctrl_c(future: Future[report.CellResult], output: Output) -> report.CellResult:
    """The result of a cancelled cell; another Ctrl-C does not abandon it (its clean-up would be lost)."""
    while True:
        try:
            return future.result()
        except KeyboardInterrupt:
            output.info("nightly: still stopping the running cells")


def _live(runner: CellRunner, output: Output) -> contextlib.AbstractContextManager[Any]:
    """Rich live view: one line per running cell with its elapsed time (only on a terminal)."""
    if not output.live:
        return contextlib.nullcontext()

    def table() -> Table:
        view = Table(title="running", show_header=False, box=None)
        for tag, seconds in runner.running():
            view.add_row(tag, f"{seconds:6.0f} s")
        return view

    return Live(get_renderable=table, console=output.console, refresh_per_second=2, transient=True)


class NightlyInterrupted(StoppedError):
    """Ctrl-C during a nightly: carries the results so far, for the partial report."""

    def __init__(self, results: list[report.CellResult]) -> None:
        super().__init__("interrupted")
        self.results = results


def _remote_hash(publisher: Publisher) -> Callable[[Cell], dict[str, str]]:
    """Platform -> content hash of each image under a cell's immutable tag in the registry (a
    multi-platform cell's tag names an index: every platform's image is read)."""
    http = publisher.http()

    def remote(cell: Cell) -> dict[str, str]:
        reference = parse_reference(publisher.target.reference(immutable_tag(cell)))
        try:
            return index.content_hashes(http, reference.repository, reference.tag or "", cell.platforms[0])
        except (BuilderError, OSError):
            return {}

    return remote


def _floating_syncer(publisher: Publisher) -> Callable[[Cell], list[str]]:
    """For a cell the registry already holds: point a floating tag that lags behind (a run interrupted between
    the immutable tag and the floating one) at the immutable tag's manifest, registry-side."""
    target = publisher.target
    http = publisher.http()

    def sync(cell: Cell) -> list[str]:
        immutable = immutable_tag(cell)
        found = http.manifest(target.repository, immutable)
        if found is None:
            return []
        digest, media_type, body = found
        tag = floating_tag(cell)
        current = http.manifest(target.repository, tag)
        if current is not None and current[0] == digest:
            return []
        if http.put_manifest(target.repository, tag, media_type, body) not in ("", digest):
            raise RegistryError(f"{target.reference(tag)} does not point at {digest} after moving it")
        return [target.reference(tag)]

    return sync


def make_report(
    results: list[report.CellResult], started: dt.datetime, compat_diff: str, compat_notes: list[str]
) -> report.RunReport:
    return report.RunReport(
        started=started,
        finished=dt.datetime.now(dt.UTC),
        results=tuple(results),
        compat_diff=compat_diff,
        compat_notes=tuple(compat_notes),
    )


@dataclass(frozen=True)
class NightlyRun:
    """A finished nightly: its report and where it was written."""

    run: report.RunReport
    json_path: Path
    html_path: Path
    wheel_cache_fetched: int = 0  # bytes the wheel cache fetched from the upstream index in this run


def nightly(m: Matrix, options: NightlyOptions, output: Output) -> NightlyRun:
    """The `nightly` command: compat check, the run, the report (a partial one on Ctrl-C, then
    StoppedError naming it)."""
    started = dt.datetime.now(dt.UTC)
    cells = m.select_or_all(options.only)
    profile = profiles.resolve(m, options.mirror)
    diff, notes = report.read_compat(options.compat)
    publisher = None
    if options.push:
        publisher = Publisher.resolve(m.spec.registry.target, options.registry_override)
    held_before = wheel_cache.stored_bytes(options.wheel_cache) if options.wheel_cache else 0
    try:
        with wheel_cache.serving(options.wheel_cache, profile, offline=options.wheel_cache_offline) as cached:
            results = run(
                cells,
                renderer=Renderer(templates_for(m.path)),
                profile=cached,
                lock_data=lock.read(lock.lock_path(m.path)),
                options=options,
                output=output,
                publisher=publisher,
            )
    except NightlyInterrupted as stop:
        _, html_path = report.write_report(
            make_report(stop.results, started, diff, notes), options.report_dir
        )
        raise StoppedError(f"interrupted: partial report in {html_path}") from None
    run_report = make_report(results, started, diff, notes)
    json_path, html_path = report.write_report(run_report, options.report_dir)
    fetched = wheel_cache.stored_bytes(options.wheel_cache) - held_before if options.wheel_cache else 0
    return NightlyRun(run_report, json_path, html_path, fetched)


def summary_table(results: list[report.CellResult]) -> Table | None:
    """The end-of-run table: every cell that was built or failed (cached ones are only counted)."""
    rows = [r for r in results if r.status != "cached"]
    if not rows:
        return None
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
    return table
