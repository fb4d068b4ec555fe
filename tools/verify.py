"""The verification run: build, gate and record every cell this machine can serve, one at a time.

    python -m tools.verify [--only GLOB]... [--keep] [--wheel-cache DIR] [--report DIR] [--lock FILE]

A cell is servable here when it is a Debian 12 cell (the sandbox's base) whose wheels all come from PyPI
(torch's default CUDA, or CPU wheels the sandbox's folder holds), full cells included when their nvcc
comes from wheels. Each cell runs as `python -m builder build TAG` (build, smoke gate, tag); its facts
are read from the gate's result and the image, then the image is removed unless --keep, so the run
fits a disk that holds one image at a time. After every cell the JSON and HTML reports are rewritten,
so a long run shows its progress and a crash loses nothing. `--lock FILE` holds an flock around each
cell, so the run shares one Docker engine with test suites that take the same lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from builder.build import wheel_cache
from builder.build.engine import Engine
from builder.cli import run_cli
from builder.flock import held
from builder.model import matrix as matrix_mod
from builder.model import profiles
from builder.model.cell import Cell
from builder.model.naming import local_references

DEFAULT_REPORT = Path("reports/verify")
DEFAULT_MIRROR = "local-pypi"
SANDBOX_CPU_TORCH = ("2.13",)  # torch minors whose +cpu wheels the sandbox's folder holds
MIN_FREE_GB = 20.0
DOCKER_ROOT = Path("/var/lib/docker")
_PIP_DOWNLOAD = re.compile(r"Downloading \S+ \(([\d.]+) (kB|MB|GB)\)")
_UNITS = {"kB": 1e3, "MB": 1e6, "GB": 1e9}


@dataclass
class Record:
    """One cell's line in the evidence table."""

    tag: str
    result: str  # passed | failed | skipped
    torch: str = ""
    cuda: str = ""
    cudnn: str = ""
    nccl: str = ""
    size_bytes: int | None = None
    build_s: float | None = None
    pip_bytes: int | None = None  # what the build's pip downloaded (= upstream bytes without a cache)
    upstream_bytes: int | None = None  # what the wheel cache fetched upstream for this cell
    budget_gb: float | None = None  # the cell's size budget (matrix.yaml `budgets`)
    detail: str = ""

    @property
    def over_budget(self) -> bool:
        return bool(self.size_bytes and self.budget_gb and self.size_bytes > self.budget_gb * 1e9)


def servable(cell: Cell) -> bool:
    """Whether this machine can build the cell: Debian 12, every wheel from PyPI or the sandbox's folder."""
    if cell.key.os != "debian12":
        return False
    if cell.key.variant == "full" and cell.is_cuda and cell.cuda_dev_base != "wheels":
        return False
    if cell.wheel_source == "pypi":
        return True
    return cell.wheel_index == "cpu" and cell.key.variant == "slim" and cell.key.torch in SANDBOX_CPU_TORCH


def select(cells: Sequence[Cell], only: Sequence[str]) -> list[Cell]:
    """The servable cells, narrowed to the --only globs when given; PyPI's oldest torch first."""
    chosen = [c for c in cells if servable(c) and (not only or any(fnmatch.fnmatch(c.tag, p) for p in only))]
    return sorted(chosen, key=lambda c: (tuple(int(x) for x in c.key.torch.split(".")), c.tag))


def pip_downloaded_bytes(log_text: str) -> int:
    """Bytes pip reported downloading in a build log (`Downloading URL (915.2 MB)`)."""
    return int(sum(float(n) * _UNITS[unit] for n, unit in _PIP_DOWNLOAD.findall(log_text)))


def smoke_versions(smoke: dict[str, Any]) -> dict[str, str]:
    """torch, CUDA, cuDNN and NCCL as the gate measured them inside the image."""
    details = {c.get("name"): str(c.get("detail", "")) for c in smoke.get("checks", [])}
    found: dict[str, str] = {}
    patterns = {
        "torch": ("torch", r"torch (\S+)"),
        "cuda": ("cuda_version", r"torch\.version\.cuda '([^']+)'"),
        "cudnn": ("cudnn", r"cuDNN ([\d.]+)"),
        "nccl": ("nccl_version", r"NCCL ([\d.]+)"),
    }
    for key, (check, pattern) in patterns.items():
        match = re.search(pattern, details.get(check, ""))
        if match:
            found[key] = match[1]
    return found


# --------------------------------------------------------------------------- reports


def _gb(value: int | None) -> str:
    return "" if value is None else f"{value / 1e9:.2f} GB"


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value / 60:.1f} min"


COLUMNS = ("cell", "torch", "CUDA", "cuDNN", "NCCL", "size", "build time", "gate", "pip fetched", "upstream")


def _row(record: Record) -> list[str]:
    return [
        record.tag,
        record.torch,
        record.cuda or "-",
        record.cudnn or "-",
        record.nccl or "-",
        _gb(record.size_bytes) + (f" (over {record.budget_gb:g} GB)" if record.over_budget else ""),
        _secs(record.build_s),
        record.result + (f": {record.detail}" if record.detail and record.result != "passed" else ""),
        _gb(record.pip_bytes),
        _gb(record.upstream_bytes),
    ]


def markdown_table(records: Sequence[Record]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for record in records:
        cells = [cell.replace("|", "\\|") for cell in _row(record)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def html_page(records: Sequence[Record], meta: dict[str, Any]) -> str:
    passed = sum(r.result == "passed" for r in records)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    rows = []
    for record in records:
        cls = {"passed": "ok", "failed": "bad"}.get(record.result, "skip")
        cells = "".join(f"<td>{html.escape(c)}</td>" for c in _row(record))
        rows.append(f'<tr class="{cls}">{cells}</tr>')
    facts = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in meta.items())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>verification run</title>'
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:.3em .6em;text-align:left}"
        "tr.ok td{background:#e6f4e6}tr.bad td{background:#f8dddd}tr.skip td{background:#eee}</style>"
        f"</head><body><h1>Verification run: {passed} of {len(records)} cells passed</h1><ul>{facts}</ul>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></body></html>\n"
    )


def write_reports(records: Sequence[Record], meta: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "cells": [asdict(r) for r in records]}
    (folder / "verify.json").write_text(json.dumps(payload, indent=2) + "\n")
    (folder / "table.md").write_text(markdown_table(records))
    page = folder / "index.html"
    page.write_text(html_page(records, meta))
    return page


# --------------------------------------------------------------------------- the run


def _free_gb() -> float:
    root = DOCKER_ROOT if DOCKER_ROOT.exists() else Path("/")
    return shutil.disk_usage(root).free / 1e9


@dataclass(frozen=True)
class VerifyRun:
    """How every cell of one verification run is built and kept."""

    engine: Engine
    mirror: str
    out: Path
    cache: Path | None
    keep: bool
    timeout_s: float
    min_free_gb: float


def verify_cell(cell: Cell, run: VerifyRun) -> Record:
    """Build and gate one cell, read its facts, then remove its image unless run.keep."""
    engine, mirror, out, cache, timeout_s = run.engine, run.mirror, run.out, run.cache, run.timeout_s
    keep, min_free_gb = run.keep, run.min_free_gb
    free = _free_gb()
    if free < min_free_gb:
        return Record(cell.tag, "skipped", detail=f"only {free:.0f} GB free on the engine's disk")
    command = [sys.executable, "-m", "builder", "build", cell.tag, "--mirror", mirror]
    command += ["--out", str(out), "--runs", str(out)]
    command += wheel_cache.build_options(cache, offline=False)
    cached_before = wheel_cache.stored_bytes(cache) if cache else 0
    started = time.monotonic()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
        returncode, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        returncode, stderr = -1, f"error: stopped after {timeout_s:.0f} s"
    seconds = time.monotonic() - started
    record = Record(cell.tag, "passed" if returncode == 0 else "failed", build_s=round(seconds, 1))
    record.budget_gb = cell.size_budget_gb
    if cache:
        record.upstream_bytes = wheel_cache.stored_bytes(cache) - cached_before
    log = out / cell.tag / "build.log"
    if log.exists():
        record.pip_bytes = pip_downloaded_bytes(log.read_text(errors="replace"))
    smoke = out / cell.tag / "smoke-result.json"
    if smoke.exists() and smoke.stat().st_mtime >= time.time() - seconds - 5:
        for key, value in smoke_versions(json.loads(smoke.read_text())).items():
            setattr(record, key, value)
    if returncode != 0:
        errors = [line.removeprefix("error: ") for line in stderr.splitlines() if line.startswith("error: ")]
        record.detail = errors[0] if errors else stderr.strip()[-300:]
    references = local_references(cell)
    if engine.image_exists(references[0]):
        record.size_bytes = int(engine.image_attrs(references[0]).get("Size", 0))
        if not keep:
            for reference in references:
                engine.remove_image(reference)
    return record


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help=__doc__)


@app.command()
def main(
    only: Annotated[list[str] | None, typer.Option("--only", help="Glob(s) over the servable tags.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep each image after it passed.")] = False,
    mirror: Annotated[str, typer.Option("--mirror", help="Mirror profile of the builds.")] = DEFAULT_MIRROR,
    cache: Annotated[
        Path | None, typer.Option("--wheel-cache", help="Fetch wheels through this wheel cache.")
    ] = None,
    report: Annotated[Path, typer.Option("--report", help="Where the reports go.")] = DEFAULT_REPORT,
    lock: Annotated[Path | None, typer.Option("--lock", help="flock held around each cell.")] = None,
    cell_timeout: Annotated[float, typer.Option("--cell-timeout", help="Seconds per cell.")] = 3600.0,
    min_free_gb: Annotated[
        float, typer.Option("--min-free-gb", help="Skip a cell below this.")
    ] = MIN_FREE_GB,
    list_only: Annotated[bool, typer.Option("--list", help="Print the cells and stop.")] = False,
    matrix: Annotated[Path, typer.Option("--matrix", "-m")] = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Build, gate and record every servable cell (rolling: each image is removed after its record)."""
    loaded = matrix_mod.load(matrix)
    cells = select(loaded.cells, only or [])
    if list_only:
        for cell in cells:
            typer.echo(cell.tag)
        return
    engine = Engine.connect()
    out = report / "images"
    meta: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "host": os.uname().nodename,
        "mirror profile": mirror,
        "wheel cache": str(cache) if cache else "none",
        "cells": len(cells),
    }
    records: list[Record] = []
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if cache:  # one server for the run; each build finds it running and leaves it running
            stack.enter_context(wheel_cache.serving(cache, profiles.resolve(loaded, mirror)))
        run = VerifyRun(engine, mirror, out, cache, keep, cell_timeout, min_free_gb)
        _verify_cells(cells, records, meta, started, run, lock=lock, report=report)
    passed = sum(r.result == "passed" for r in records)
    typer.echo(f"verify: {passed} of {len(records)} cells passed; report {report / 'index.html'}")
    if passed != len(records):
        raise typer.Exit(1)


def _verify_cells(
    cells: Sequence[Cell],
    records: list[Record],
    meta: dict[str, Any],
    started: float,
    run: VerifyRun,
    *,
    lock: Path | None,
    report: Path,
) -> None:
    """Each cell under the lock, its record appended and the reports rewritten after it."""
    for cell in cells:
        typer.echo(f"verify: {cell.tag}: building", err=True)
        with held(lock) if lock else contextlib.nullcontext():
            record = verify_cell(cell, run)
        records.append(record)
        typer.echo(
            f"verify: {cell.tag}: {record.result} in {_secs(record.build_s)} {record.detail}", err=True
        )
        meta["elapsed"] = _secs(time.monotonic() - started)
        write_reports(records, meta, report)


if __name__ == "__main__":
    run_cli(app)
