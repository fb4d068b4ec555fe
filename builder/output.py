"""The tool's one voice, modelled on cibuildwheel's `logger.py`: timed steps, warnings and errors.

Two streams with two jobs:
- stderr carries everything a person watches: steps with their timings, notes, warnings, errors, tables
  and live progress (through rich, live only on a terminal);
- stdout carries the command's result: human lines, or with `--json` exactly one JSON document and
  nothing else (`python -m builder smoke TAG --json | python -m json.tool` works).

Safe to use from several threads at once (nightly builds run side by side); `background()` gives work that
runs beside others the same streams without live displays.
"""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

NON_TERMINAL_WIDTH = 200  # tables in CI logs and captured stderr: wide enough for a tag and a detail


@dataclass(frozen=True)
class StepTiming:
    """How long one step took and whether it succeeded."""

    title: str
    seconds: float
    ok: bool


class Output:
    """Human text on stderr, results on stdout; `json_mode`: stdout is one JSON document."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        live: bool | None = None,
    ) -> None:
        self.json_mode = json_mode
        self._stdout = stdout if stdout is not None else sys.stdout
        stderr = stderr if stderr is not None else sys.stderr
        terminal = stderr.isatty()
        self.console = Console(
            file=stderr,
            soft_wrap=True,
            highlight=False,
            width=None if terminal else NON_TERMINAL_WIDTH,
        )
        self.live = self.console.is_terminal if live is None else live
        self.steps: list[StepTiming] = []
        self._lock = threading.RLock()
        self._document_written = False
        unicode = (self.console.encoding or "").lower().startswith("utf")
        self._marks = ("▸", "✓", "✕") if unicode else ("->", "done:", "failed:")  # start, done, failed

    def background(self) -> Output:
        """The same streams and lock without live displays, for work running beside other work."""
        other = copy.copy(self)
        other.live = False
        other.steps = []
        return other

    # --- stderr: what a person watches -----------------------------------------------------------
    def info(self, text: str) -> None:
        """One line of progress or context."""
        with self._lock:
            self.console.print(text, markup=False, highlight=False)

    def warning(self, text: str) -> None:
        self.info(f"warning: {text}")

    def error(self, text: str) -> None:
        self.info(f"error: {text}")

    def show(self, renderable: RenderableType) -> None:
        """A rich renderable (a table) on stderr."""
        with self._lock:
            self.console.print(renderable)

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        """A timed step: `title` when it starts, its duration (and whether it failed) when it ends."""
        start, done, failed = self._marks
        self.info(f"{start} {title}")
        started = time.perf_counter()
        ok = False
        try:
            yield
            ok = True
        finally:
            seconds = time.perf_counter() - started
            self.steps.append(StepTiming(title, seconds, ok))
            self.info(f"{done if ok else failed} {title} ({seconds:.1f} s)")

    @contextlib.contextmanager
    def progress(self, label: str) -> Iterator[Callable[[int, int, str], None]]:
        """A progress bar for `label` on a terminal; elsewhere a callback that shows nothing.

        Yields `update(done, total, description)`.
        """
        if not self.live:
            yield lambda done, total, description: None
            return
        with Progress(
            TextColumn("[bold]{task.fields[label]}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task("starting", total=None, label=label)

            def update(done: int, total: int, description: str) -> None:
                bar.update(task, completed=done, total=total, description=description[:70])

            yield update

    # --- stdout: the command's result ------------------------------------------------------------
    def result(self, text: str = "") -> None:
        """A human result line: stdout, or stderr when stdout is reserved for the JSON document."""
        if self.json_mode:
            self.info(text)
            return
        self._write(text + "\n")

    def raw(self, text: str) -> None:
        """Text for stdout as it is (a YAML or diff a user pipes on); never in JSON mode."""
        if self.json_mode:
            raise RuntimeError("raw text would break the JSON document on stdout")
        self._write(text)

    def document(self, payload: Any) -> None:
        """The JSON document on stdout; at most one per command."""
        with self._lock:
            if self._document_written:
                raise RuntimeError("a command writes one JSON document, not two")
            self._document_written = True
            self._write(json.dumps(payload, indent=2) + "\n")

    def _write(self, text: str) -> None:
        with self._lock:
            self._stdout.write(text)
            self._stdout.flush()
