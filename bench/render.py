#!/usr/bin/env python3
"""Benchmark: expand the default matrix and render every cell into a temporary folder.

Each repetition starts cold: the compatibility data is re-read, matrix.yaml is parsed and expanded, a new
Renderer (fresh Jinja2 template cache) renders every cell and writes its files into an empty folder.

    python3 bench/render.py [--repeat N] [--matrix PATH]

Target: the whole matrix (>= 40 cells) renders in under 1 second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from builder.build.render import Renderer, templates_for, write
from builder.model import (
    compat,
    matrix,
)

TARGET_SECONDS = 1.0
TARGET_CELLS = 40


def render_all(matrix_path: Path, out: Path) -> tuple[int, int]:
    """One cold run: load and expand the matrix, render and write every cell. Returns (cells, files)."""
    compat.load.cache_clear()
    m = matrix.load(matrix_path)
    renderer = Renderer(templates_for(matrix_path))
    files = 0
    for cell in m.cells:
        rendered = renderer.files(cell)
        write(out, cell.tag, rendered)
        files += len(rendered)
    return len(m.cells), files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=7, help="Repetitions (default 7).")
    parser.add_argument("--matrix", type=Path, default=REPO / "matrix.yaml", help="The matrix file.")
    args = parser.parse_args(argv)

    times: list[float] = []
    cells = files = 0
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        for index in range(args.repeat):
            out = Path(tmp) / f"run{index}"
            started = time.perf_counter()
            cells, files = render_all(args.matrix, out)
            times.append(time.perf_counter() - started)

    best, median, worst = min(times), statistics.median(times), max(times)
    print(f"matrix:      {args.matrix}")
    print(f"cells:       {cells} ({files} files per run)")
    print(f"repetitions: {args.repeat}")
    print(f"seconds:     median {median:.3f}, best {best:.3f}, worst {worst:.3f}")
    print(f"cells/s:     {cells / median:.0f} (median run)")
    ok = cells >= TARGET_CELLS and worst < TARGET_SECONDS
    verdict = "PASS" if ok else "FAIL"
    print(
        f"target:      whole matrix (>= {TARGET_CELLS} cells) under {TARGET_SECONDS:g} s: {verdict} "
        f"({cells} cells, slowest run {worst:.3f} s)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
