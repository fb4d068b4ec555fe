"""The nightly matrix run: skip every cell whose content is already built (or pushed), build the rest N at a
time, continue past failures, and leave a JSON + HTML report.

Each build runs as its own `python -m builder build TAG` process: a cell that hangs is interrupted at its
timeout, Ctrl-C interrupts every running build the same way (the engine then cancels the build and our
clean-up removes its containers), and one cell's crash cannot take the others down. A second run after a
crash resumes: what finished is skipped by its content hash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from builder.build import lock, pipeline
from builder.build.engine import Engine
from builder.build.render import Renderer, cell_immutable_tag, floating_tags
from builder.errors import BuilderError, RegistryError
from builder.model.cell import Cell
from builder.model.profiles import ResolvedProfile
from builder.operate import report
from builder.publish import push as registry

DEFAULT_CELL_TIMEOUT_S = 3 * 3600.0
INTERRUPT_GRACE_S = 60.0


@dataclass
class Planned:
    """A cell with its expected content hash, or the reason it cannot be planned."""

    cell: Cell
    content_hash: str | None
    problem: str = ""


@dataclass
class NightlyOptions:
    jobs: int = 1
    push: bool = False
    registry_override: str | None = None
    cell_timeout_s: float = DEFAULT_CELL_TIMEOUT_S
    out: Path = Path("images")
    matrix_path: Path = Path("matrix.yaml")
    extra_build_args: list[str] = field(default_factory=list)


def plan(
    cells: list[Cell],
    renderer: Renderer,
    profile: ResolvedProfile,
    lock_data: dict[str, Any] | None,
    resolve_digest: Callable[[str], str | None],
) -> list[Planned]:
    """Expected content hash per cell: rendered context, build args and base digest (from the lock first)."""
    digests: dict[str, str | None] = {}
    planned = []
    for cell in cells:
        base_ref = profile.base_image(cell)
        if base_ref not in digests:
            locked = lock.pinned_digest(lock_data, profile.name, profile.lock_bases, base_ref)
            digests[base_ref] = locked or resolve_digest(base_ref)
        digest = digests[base_ref]
        if digest is None:
            planned.append(Planned(cell, None, f"base image {base_ref} not found in the registry mirror"))
            continue
        context = pipeline.build_context(renderer, cell, profile)
        planned.append(Planned(cell, pipeline.cell_content_hash(context, profile.build_args(cell), digest)))
    return planned


def already_done(planned: Planned, engine: Engine, remote_hash: Callable[[Cell], str | None] | None) -> bool:
    """True when the registry (with push) or the engine (without) holds an image with this content hash."""
    if planned.content_hash is None:
        return False
    if remote_hash is not None:
        return remote_hash(planned.cell) == planned.content_hash
    reference = pipeline.local_references(planned.cell)[1]
    if not engine.image_exists(reference):
        return False
    labels = (engine.image_attrs(reference).get("Config") or {}).get("Labels") or {}
    return bool(labels.get(registry.CONTENT_HASH_LABEL) == planned.content_hash)


class BuildRunner:
    """Runs `python -m builder build` per cell, N at a time, with a timeout and a shared stop switch."""

    def __init__(self, options: NightlyOptions, engine: Engine, say: Callable[[str], None]) -> None:
        self.options = options
        self.engine = engine
        self.say = say
        self.stopping = threading.Event()
        self._procs: dict[str, subprocess.Popen[str]] = {}
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def running(self) -> list[tuple[str, float]]:
        """(tag, seconds so far) of every running build."""
        now = time.monotonic()
        with self._lock:
            return [(tag, now - self._started[tag]) for tag in self._procs]

    def command(self, cell: Cell) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "builder",
            "build",
            cell.tag,
            "--matrix",
            str(self.options.matrix_path),
            "--out",
            str(self.options.out),
            *self.options.extra_build_args,
        ]
        if self.options.push:
            command.append("--push")
            if self.options.registry_override:
                command += ["--registry", self.options.registry_override]
        return command

    def build(self, cell: Cell) -> report.CellResult:
        if self.stopping.is_set():
            return self._result(cell, "interrupted", detail="not started: the run was interrupted")
        started = time.monotonic()
        proc = subprocess.Popen(
            self.command(cell),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env=os.environ.copy(),
        )
        with self._lock:
            self._procs[cell.tag] = proc
            self._started[cell.tag] = started
        self.say(f"{cell.tag}: building (pid {proc.pid})")
        timed_out = False
        try:
            _, stderr = proc.communicate(timeout=self.options.cell_timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _, stderr = self._interrupt(proc)
        finally:
            with self._lock:
                self._procs.pop(cell.tag, None)
        seconds = time.monotonic() - started
        if timed_out:
            detail = f"stopped after its timeout of {self.options.cell_timeout_s:.0f} s"
            return self._result(cell, "timeout", build_s=seconds, detail=detail)
        if self.stopping.is_set() and proc.returncode in (130, -signal.SIGINT, -signal.SIGKILL):
            return self._result(cell, "interrupted", build_s=seconds, detail="interrupted")
        errors = [line.removeprefix("error: ") for line in stderr.splitlines() if line.startswith("error: ")]
        if proc.returncode == 0:
            return self._result(cell, "passed", build_s=seconds)
        return self._result(cell, "failed", build_s=seconds, detail=errors[0] if errors else stderr[-300:])

    def _interrupt(self, proc: subprocess.Popen[str]) -> tuple[str, str]:
        """SIGINT (the CLI cleans up and exits 130), then SIGKILL after a grace period."""
        proc.send_signal(signal.SIGINT)
        try:
            return proc.communicate(timeout=INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.communicate()

    def stop_all(self) -> None:
        """Ctrl-C: stop starting builds and interrupt the running ones."""
        self.stopping.set()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        killer = threading.Timer(INTERRUPT_GRACE_S, self._kill, args=(procs,))
        killer.daemon = True
        killer.start()

    @staticmethod
    def _kill(procs: list[subprocess.Popen[str]]) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    def _result(self, cell: Cell, status: str, **values: Any) -> report.CellResult:
        folder = self.options.out / cell.tag
        smoke_path = folder / "smoke-result.json"
        facts: dict[str, Any] = {}
        if status in ("passed", "failed") and smoke_path.exists():
            facts = report.smoke_facts(json.loads(smoke_path.read_text()))
        size = None
        reference = pipeline.local_references(cell)[1]
        if status == "passed" and self.engine.image_exists(reference):
            size = int(self.engine.image_attrs(reference).get("Size", 0))
        if facts.get("detail") and values.get("detail"):
            facts.pop("detail")
        log = folder / "build.log"
        return report.CellResult.for_tag(
            cell.tag,
            status,
            size_bytes=size,
            log_path=str(log.resolve()) if log.exists() else None,
            **{**facts, **values},
        )


def run(
    cells: list[Cell],
    *,
    renderer: Renderer,
    profile: ResolvedProfile,
    lock_data: dict[str, Any] | None,
    options: NightlyOptions,
    say: Callable[[str], None],
    console: Console | None = None,
) -> list[report.CellResult]:
    """Plan, skip what is done, build the rest; returns one result per cell (order of `cells`)."""
    engine = Engine.connect()
    if "--mirror" not in options.extra_build_args:  # the builds use the nightly's profile, not $MIRROR's
        options = replace(options, extra_build_args=[*options.extra_build_args, "--mirror", profile.name])
    remote_hash = _remote_hash(options) if options.push else None
    sync_floating = _floating_syncer(options) if options.push else None

    def resolve(ref: str) -> str | None:
        try:
            return engine.registry_digest(ref, auth=None)
        except BuilderError:
            return None

    results: dict[str, report.CellResult] = {}
    todo: list[Cell] = []
    for planned in plan(cells, renderer, profile, lock_data, resolve):
        tag = planned.cell.tag
        if planned.problem:
            results[tag] = report.CellResult.for_tag(tag, "failed", detail=planned.problem)
        elif already_done(planned, engine, remote_hash):
            where = "in the registry" if options.push else "on the engine"
            detail = f"same content hash {where}"
            try:
                moved = sync_floating(planned.cell) if sync_floating is not None else []
            except (BuilderError, OSError) as exc:
                results[tag] = report.CellResult.for_tag(tag, "failed", detail=f"{detail}; {exc}")
                continue
            if moved:
                detail += f"; moved {', '.join(moved)} to it (left behind by an interrupted run)"
                say(f"{tag}: {detail}")
            results[tag] = report.CellResult.for_tag(tag, "cached", detail=detail)
        else:
            todo.append(planned.cell)
    say(
        f"nightly: {len(cells)} cells, {len(results)} decided without building "
        f"({sum(r.status == 'cached' for r in results.values())} cached), {len(todo)} to build"
    )
    runner = BuildRunner(options, engine, say)
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool, _live(runner, console):
        futures: dict[Future[report.CellResult], Cell] = {pool.submit(runner.build, c): c for c in todo}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()
                    results[result.tag] = result
                    say(f"{result.tag}: {result.status}" + (f" ({result.detail})" if result.detail else ""))
        except KeyboardInterrupt:
            say("nightly: interrupted: stopping every running build")
            runner.stop_all()
            for future in futures:
                future.cancel()
            for future, cell in futures.items():
                if future.cancelled():
                    results[cell.tag] = report.CellResult.for_tag(
                        cell.tag, "interrupted", detail="not started"
                    )
                else:
                    result = _wait_through_ctrl_c(future, say)
                    results[result.tag] = result
            raise NightlyInterrupted([results[c.tag] for c in cells if c.tag in results]) from None
    return [results[c.tag] for c in cells]


def _wait_through_ctrl_c(future: Future[report.CellResult], say: Callable[[str], None]) -> report.CellResult:
    """The result of an interrupted build; another Ctrl-C does not abandon it (it would keep running)."""
    while True:
        try:
            return future.result()
        except KeyboardInterrupt:
            say("nightly: still stopping the running builds (each is killed after its grace period)")


def _live(runner: BuildRunner, console: Console | None) -> Any:
    """Rich live view: one line per running cell with its elapsed time (a no-op without a console)."""
    if console is None or not console.is_terminal:
        return contextlib.nullcontext()

    def table() -> Table:
        view = Table(title="running", show_header=False, box=None)
        for tag, seconds in runner.running():
            view.add_row(tag, f"{seconds:6.0f} s")
        return view

    return Live(get_renderable=table, console=console, refresh_per_second=2, transient=True)


class NightlyInterrupted(Exception):
    """Ctrl-C during a nightly: carries the results so far, for the report."""

    def __init__(self, results: list[report.CellResult]) -> None:
        super().__init__("interrupted")
        self.results = results


def _remote_hash(options: NightlyOptions) -> Callable[[Cell], str | None]:
    from builder.model import matrix as matrix_mod

    spec = matrix_mod.parse(options.matrix_path)
    target = registry.resolve_target(spec.registry.target, options.registry_override)
    creds = registry.lookup_credentials(target.host)
    http = registry.RegistryHttp(target.host, creds, insecure=target.insecure)

    def remote(cell: Cell) -> str | None:
        reference = target.reference(cell_immutable_tag(cell))
        try:
            return registry.remote_content_hash(http, reference)
        except (BuilderError, OSError):
            return None

    return remote


def _floating_syncer(options: NightlyOptions) -> Callable[[Cell], list[str]]:
    """For a cell the registry already holds: point floating tags that lag behind (a run interrupted between
    the immutable tag and the floating ones) at the immutable tag's manifest, registry-side."""
    from builder.model import matrix as matrix_mod

    spec = matrix_mod.parse(options.matrix_path)
    target = registry.resolve_target(spec.registry.target, options.registry_override)
    http = registry.RegistryHttp(
        target.host, registry.lookup_credentials(target.host), insecure=target.insecure
    )

    def sync(cell: Cell) -> list[str]:
        immutable = cell_immutable_tag(cell)
        found = http.manifest(target.repository, immutable)
        if found is None:
            return []
        digest, media_type, body = found
        moved = []
        for tag in floating_tags(cell):
            current = http.manifest(target.repository, tag) if tag != immutable else found
            if current is not None and current[0] == digest:
                continue
            if http.put_manifest(target.repository, tag, media_type, body) not in ("", digest):
                raise RegistryError(f"{target.reference(tag)} does not point at {digest} after moving it")
            moved.append(target.reference(tag))
        return moved

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
