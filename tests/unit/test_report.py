"""The run report: JSON content, the static HTML page, and the `report cell` / `report render` commands."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from builder.errors import ConfigError
from builder.operate import report
from builder.operate.report import CellResult, RunReport
from tests.unit.conftest import InProcessCli

START = dt.datetime(2026, 11, 25, 2, 17, tzinfo=dt.UTC)
DIFF = """\
--- a/builder/resources/compat.yaml
+++ b/builder/resources/compat.yaml
@@ -1,3 +1,3 @@
   "2.15":
-    version: "2.15.0"
+    version: "2.15.1"
"""


def sample_run(**overrides: Any) -> RunReport:
    results = (
        CellResult.for_tag(
            "2.9-cuda12.8-ubuntu22.04", "passed", size_bytes=6_120_000_000, build_s=512.4, smoke_s=41.2
        ),
        CellResult.for_tag(
            "2.9-cpu-ubuntu22.04",
            "failed",
            build_s=88.0,
            smoke_s=12.5,
            failing_check="numpy_interop",
            detail="numpy_interop: <ImportError> numpy 2 & torch",
            log_path="logs/2.9-cpu/build.log",
        ),
        CellResult.for_tag("2.13-cpu-debian12-full", "cached", size_bytes=4_200_000_000),
        CellResult.for_tag("2.14-cuda13.0-debian12", "timeout", build_s=14_400.0),
        CellResult.for_tag("2.15-cuda13.2-ubuntu24.04", "skipped", detail="no GPU runner"),
        CellResult.for_tag("2.15-cpu-ubuntu24.04", "interrupted"),
    )
    values: dict[str, Any] = {
        "started": START,
        "finished": START + dt.timedelta(hours=2, minutes=5),
        "results": results,
        "compat_diff": DIFF,
        "compat_notes": ("torch 2.16 is new: check `cuda`",),
    }
    values.update(overrides)
    return RunReport(**values)


def test_cell_result_from_tag_and_ci_outcomes() -> None:
    result = CellResult.for_tag("2.7-cuda11.8-ubuntu22.04-full", "success")
    assert (result.torch, result.accelerator, result.os, result.variant) == (
        "2.7",
        "cuda11.8",
        "ubuntu22.04",
        "full",
    )
    assert result.status == "passed"
    assert report.status_of("failure") == "failed"
    assert report.status_of("cancelled") == "interrupted"
    assert report.status_of("Skipped") == "skipped"
    with pytest.raises(ConfigError, match="unknown status 'meh'"):
        report.status_of("meh")


def test_json_report() -> None:
    doc = report.to_json(sample_run())
    assert doc["schema"] == 1
    assert doc["duration_s"] == 7500.0
    assert doc["ok"] is False
    assert doc["counts"] == {
        "passed": 1,
        "failed": 1,
        "skipped": 1,
        "cached": 1,
        "timeout": 1,
        "interrupted": 1,
    }
    assert doc["compat"] == {"current": False, "diff": DIFF, "notes": ["torch 2.16 is new: check `cuda`"]}
    failed = next(r for r in doc["results"] if r["status"] == "failed")
    assert failed["failing_check"] == "numpy_interop"
    assert failed["tag"] == "2.9-cpu-ubuntu22.04"
    assert report.from_json(json.loads(json.dumps(doc))) == sample_run(
        results=tuple(sorted(sample_run().results, key=report._order))
    )


def test_ok_when_nothing_bad() -> None:
    run = sample_run(results=(CellResult.for_tag("2.13-cpu-debian12", "passed"),), compat_diff="")
    assert run.ok
    assert report.to_json(run)["compat"]["current"] is True


class Page(HTMLParser):
    """Collects tags, attributes and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    return parser


def test_html_grid_per_os_and_variant() -> None:
    page = report.render_html(sample_run())
    parsed = parse(page)
    sections = [a["id"] for t, a in parsed.tags if t == "section"]
    assert sections == ["debian12-full", "debian12-slim", "ubuntu22_04-slim", "ubuntu24_04-slim", "compat"]
    cells = {a["id"]: a for t, a in parsed.tags if t == "td" and (a.get("id") or "").startswith("cell-")}
    assert set(cells) == {f"cell-{r.tag}" for r in sample_run().results}
    assert cells["cell-2.9-cpu-ubuntu22.04"]["class"] == "cell s-failed"
    assert cells["cell-2.13-cpu-debian12-full"]["data-status"] == "cached"
    text = " ".join(parsed.text)
    assert "6.12 GB" in text
    assert "build 8.5 min" in text
    assert "smoke 41 s" in text
    assert "failed: numpy_interop" in text
    links = [a["href"] for t, a in parsed.tags if t == "a" and (a.get("href") or "").endswith("build.log")]
    assert links == ["logs/2.9-cpu/build.log"]


def test_html_is_self_contained_and_escaped() -> None:
    page = report.render_html(sample_run())
    assert "<script" not in page.lower()
    assert "<ImportError>" not in page
    assert "&lt;ImportError&gt; numpy 2 &amp; torch" in page
    parsed = parse(page)
    for tag, attrs in parsed.tags:
        assert tag != "link"
        for name in ("src", "href"):
            assert not re.match(r"^(https?:)?//", attrs.get(name) or ""), (tag, attrs)
    assert "<style>" in page


def test_html_escapes_hostile_values_in_text_and_attributes() -> None:
    hostile = CellResult.for_tag(
        "2.13-cpu-debian12",
        "failed",
        failing_check="<script>alert(1)</script>",
        detail='x" onmouseover="alert(2)',
        log_path='logs/a"b/build.log',
    )
    page = report.render_html(sample_run(results=(hostile,), compat_diff="+<img src=x>\n"))
    assert "<script" not in page.lower() and "<img" not in page
    parsed = parse(page)
    cell = next(a for t, a in parsed.tags if t == "td" and a.get("id") == "cell-2.13-cpu-debian12")
    assert cell["title"] == 'x" onmouseover="alert(2)' and "onmouseover" not in cell
    assert any(a.get("href") == 'logs/a"b/build.log' for t, a in parsed.tags if t == "a")
    assert "failed: <script>alert(1)</script>" in " ".join(parsed.text)


def test_html_failures_and_compat_diff() -> None:
    page = report.render_html(sample_run())
    assert 'id="failures"' in page
    assert "Failures (3)" in page  # failed, timeout, interrupted
    assert '<span class="del">-    version: &#34;2.15.0&#34;</span>' in page  # Jinja2's autoescape
    assert '<span class="add">+    version: &#34;2.15.1&#34;</span>' in page
    assert "torch 2.16 is new" in page
    current = report.render_html(sample_run(compat_diff="", compat_notes=()))
    assert "compat data is current" in current
    assert 'class="diff"' not in current


def test_write_report_copies_logs(tmp_path: Path) -> None:
    log = tmp_path / "images" / "2.9-cpu-ubuntu22.04" / "build.log"
    log.parent.mkdir(parents=True)
    log.write_text("Step 1/9 : FROM debian\n")
    run = sample_run(
        results=(
            CellResult.for_tag("2.9-cpu-ubuntu22.04", "failed", log_path=str(log)),
            CellResult.for_tag("2.13-cpu-debian12", "passed", log_path="https://ci.example/logs/1"),
        )
    )
    json_path, html_path = report.write_report(run, tmp_path / "out", copy_logs=True)
    assert (json_path.name, html_path.name) == ("report.json", "index.html")
    doc = json.loads(json_path.read_text())
    logs = {r["tag"]: r["log_path"] for r in doc["results"]}
    assert logs == {
        "2.9-cpu-ubuntu22.04": "logs/2.9-cpu-ubuntu22.04/build.log",
        "2.13-cpu-debian12": "https://ci.example/logs/1",
    }
    assert (tmp_path / "out" / logs["2.9-cpu-ubuntu22.04"]).read_text() == log.read_text()
    _, html_path = report.write_report(run, tmp_path / "linked")
    assert 'href="../images/2.9-cpu-ubuntu22.04/build.log"' in html_path.read_text()


def test_load_results_newest_per_tag(tmp_path: Path) -> None:
    first = report.save_result(CellResult.for_tag("2.13-cpu-debian12", "failed"), tmp_path / "a")
    second = report.save_result(CellResult.for_tag("2.13-cpu-debian12", "passed"), tmp_path / "b" / "c")
    os.utime(first, (1, 1))
    results = report.load_results([tmp_path])
    assert [(r.tag, r.status) for r in results] == [("2.13-cpu-debian12", "passed")]
    second.write_text('{"tag": "2.13-cpu-debian12", "status": "passed", "colour": "red"}')
    with pytest.raises(ConfigError, match="unknown keys colour"):
        report.load_results([second])


def test_report_commands(cli: InProcessCli, tmp_path: Path) -> None:
    images = tmp_path / "images"
    cell_dir = images / "2.9-cpu-ubuntu22.04"
    cell_dir.mkdir(parents=True)
    (cell_dir / "build.log").write_text("built\n")
    smoke = {
        "tag": "2.9-cpu-ubuntu22.04",
        "passed": False,
        "gpu": False,
        "total_s": 9.25,
        "checks": [
            {"name": "import_torch", "status": "pass", "duration_s": 2.0, "detail": ""},
            {"name": "numpy_interop", "status": "fail", "duration_s": 0.5, "detail": "numpy missing"},
        ],
    }
    (cell_dir / "smoke-result.json").write_text(json.dumps(smoke))
    cells = tmp_path / "cells"
    common = ["--runs", str(images), "--out", str(cells)]
    recorded = cli(
        "report", "cell", "2.9-cpu-ubuntu22.04", "--status", "failure", "--build-seconds", "61", *common
    )
    assert recorded.exit_code == 0, recorded.stderr
    saved = json.loads((cells / "2.9-cpu-ubuntu22.04.json").read_text())
    assert saved["status"] == "failed"
    assert saved["failing_check"] == "numpy_interop"
    assert saved["smoke_s"] == 9.25
    assert saved["build_s"] == 61.0
    other = cli(
        "report", "cell", "2.13-cpu-debian12", "--status", "success", "--size-bytes", "1500000000", *common
    )
    assert other.exit_code == 0, other.stderr
    assert cli("report", "cell", "2.13-cpu-debian12", "--status", "meh", *common).exit_code == 2
    out = tmp_path / "site"
    rendered = cli("report", "render", str(cells), "--out", str(out), cwd=tmp_path)
    assert rendered.exit_code == 0, rendered.stderr
    assert "2 cells: 1 passed, 1 failed" in rendered.stdout
    page = (out / "index.html").read_text()
    assert "cell-2.9-cpu-ubuntu22.04" in page
    assert (out / "logs" / "2.9-cpu-ubuntu22.04" / "build.log").read_text() == "built\n"


def test_a_multi_platform_cell_shows_each_platform(cli: InProcessCli, tmp_path: Path) -> None:
    """CI records one result per (cell, platform) job; `report render` merges them into one cell whose
    every platform has its own row on the page, and the cell takes the worse status."""
    tag = "2.14-cuda13.0-debian13"  # linux/amd64 + linux/arm64 in the shipped matrix
    images = tmp_path / "images"
    arm_dir = images / tag / "linux-arm64"
    arm_dir.mkdir(parents=True)
    smoke = {"total_s": 52.0, "checks": [{"name": "torch", "status": "fail", "detail": "SIGSEGV"}]}
    (arm_dir / "smoke-result.json").write_text(json.dumps(smoke))
    (images / tag / "build.log").write_text("amd64 built\n")
    cells = tmp_path / "cells"
    common = ["--runs", str(images)]
    amd = cli(
        "report",
        "cell",
        tag,
        "--platform",
        "linux/amd64",
        "--status",
        "success",
        "--size-bytes",
        "5750000000",
        "--build-seconds",
        "136",
        *common,
        "--out",
        str(cells),
    )
    assert amd.exit_code == 0, amd.stderr
    arm = cli(
        "report",
        "cell",
        tag,
        "--platform",
        "linux/arm64",
        "--status",
        "failure",
        "--build-seconds",
        "644",
        *common,
        "--out",
        str(cells / "linux-arm64"),
    )
    assert arm.exit_code == 0, arm.stderr
    saved = json.loads((cells / "linux-arm64" / f"{tag}.json").read_text())
    assert saved["platforms"] == [
        {
            "platform": "linux/arm64",
            "status": "failed",
            "size_bytes": None,
            "build_s": 644.0,
            "smoke_s": 52.0,
            "failing_check": "torch",
        }
    ]
    bad = cli("report", "cell", tag, "--platform", "linux/s390x", "--status", "success", *common)
    assert bad.exit_code == 2 and "unknown platform" in bad.stderr

    (merged,) = report.load_results([cells])
    assert merged.status == "failed"
    assert [(p.platform, p.status) for p in merged.platforms] == [
        ("linux/amd64", "passed"),
        ("linux/arm64", "failed"),
    ]
    assert merged.failing_check == "linux/arm64: torch"
    run = RunReport(started=START, finished=START + dt.timedelta(hours=1), results=(merged,))
    assert report.from_json(json.loads(json.dumps(report.to_json(run)))).results == (merged,)
    parsed = parse(report.render_html(run))
    rows = [a["data-platform"] for t, a in parsed.tags if t == "div" and "data-platform" in a]
    assert rows == ["linux/amd64", "linux/arm64"]
    text = " ".join(parsed.text)
    assert "linux/amd64: passed" in text and "5.75 GB" in text and "build 2.3 min" in text
    assert "linux/arm64: failed" in text and "build 10.7 min" in text and "failed: torch" in text

    passed = report.merge_platforms(
        [
            CellResult.for_tag(tag, "passed", platforms=(report.PlatformResult("linux/arm64", "failed"),)),
            CellResult.for_tag(tag, "passed", platforms=(report.PlatformResult("linux/arm64", "passed"),)),
        ]
    )
    assert passed.status == "passed"  # the newer row of a platform replaces the older
