"""The HTML report in a real headless browser: every cell of the default matrix shows, and it renders.

Needs Debian's chromium (`scripts/test-deps.sh`); outside CI a machine without it skips, with CI=true
that is a failure.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from builder.operate import report
from builder.operate.report import STATUSES, CellResult, RunReport
from tests.conftest import unavailable

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        unavailable("chromium is not installed (run scripts/test-deps.sh)")
    return found


@pytest.fixture(scope="module")
def site(default_matrix: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report for every cell of the default matrix, statuses and numbers varied, logs copied."""
    root = tmp_path_factory.mktemp("report")
    results = []
    for index, cell in enumerate(default_matrix.cells):
        status = STATUSES[index % len(STATUSES)]
        log = root / "images" / cell.tag / "build.log"
        log.parent.mkdir(parents=True)
        log.write_text(f"#1 building {cell.tag}\n")
        results.append(
            CellResult.for_tag(
                cell.tag,
                status,
                size_bytes=1_000_000_000 + index * 37_000_000,
                build_s=60.0 + index,
                smoke_s=5.0 + index / 10,
                failing_check="cuda_matmul" if status == "failed" else None,
                log_path=str(log),
                detail="matmul mismatch" if status == "failed" else "",
            )
        )
    started = dt.datetime(2026, 11, 25, 2, 17, tzinfo=dt.UTC)
    run = RunReport(
        started,
        started + dt.timedelta(hours=3),
        tuple(results),
        compat_diff='--- a/x\n+++ b/x\n@@ -1 +1 @@\n-version: "2.15.0"\n+version: "2.15.1"\n',
    )
    report.write_report(run, root / "site", copy_logs=True)
    return root / "site"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The report folder served by `python -m http.server` on 127.0.0.1."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("python -m http.server did not come up")
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_cell_shows_in_the_browser(
    chromium: str, served: str, default_matrix: Any, tmp_path: Path
) -> None:
    result = run_chromium(chromium, tmp_path / "profile", "--dump-dom", served)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "<table" in dom
    for cell in default_matrix.cells:
        assert f'id="cell-{cell.tag}"' in dom, cell.tag
        assert f">{cell.tag}<" in dom, cell.tag
    for status in STATUSES:
        assert f"s-{status}" in dom
    assert "compat.yaml" in dom or 'id="compat"' in dom
    assert dom.count('class="cell ') == len(default_matrix.cells)


def test_log_links_resolve(served: str, site: Path, default_matrix: Any) -> None:
    cell = default_matrix.cells[0]
    with urllib.request.urlopen(f"{served}logs/{cell.tag}/build.log", timeout=10) as response:
        assert response.read().decode() == f"#1 building {cell.tag}\n"


def test_screenshot(chromium: str, served: str, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = run_chromium(
        chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1600,2400", served
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_file_url_works_too(chromium: str, site: Path, tmp_path: Path) -> None:
    result = run_chromium(chromium, tmp_path / "profile", "--dump-dom", (site / "index.html").as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'id="compat"' in result.stdout
