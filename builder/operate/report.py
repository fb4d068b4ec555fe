"""A run's results as a JSON report and a static HTML page (inline CSS, no scripts, no external assets).

The page shows one table per OS and variant (torch down, accelerator across), each cell coloured by
status with its size, build and smoke times, the failing check and a link to its build log, plus the
compat data diff (`python -m tools.update_compat --json`). Everything here is pure except
`write_report`, which writes the two files.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

from builder.errors import ConfigError
from builder.model.tags import parse_tag, version_tuple

Status = Literal["passed", "failed", "skipped", "cached", "timeout", "interrupted"]
STATUSES: tuple[Status, ...] = get_args(Status)
BAD: frozenset[str] = frozenset({"failed", "timeout", "interrupted"})
JSON_NAME = "report.json"
HTML_NAME = "index.html"
SCHEMA_VERSION = 1
FAILURES_OPEN = 20  # the failure list starts folded when longer

# CI outcome words (GitHub's steps.<id>.outcome, GitLab's CI_JOB_STATUS) -> report statuses
OUTCOMES: Mapping[str, Status] = {
    "success": "passed",
    "failure": "failed",
    "failed": "failed",
    "cancelled": "interrupted",
    "canceled": "interrupted",
    "skipped": "skipped",
    "timedout": "timeout",
}


@dataclass(frozen=True)
class CellResult:
    """How one cell fared in a run."""

    tag: str
    torch: str
    accelerator: str
    os: str
    variant: str
    status: Status
    size_bytes: int | None = None
    build_s: float | None = None
    smoke_s: float | None = None
    failing_check: str | None = None
    log_path: str | None = None  # relative to the report folder, absolute, or a URL
    detail: str = ""

    @classmethod
    def for_tag(cls, tag: str, status: str, **values: Any) -> CellResult:
        """A result whose coordinates come from the tag; `status` may be a CI outcome word."""
        key = parse_tag(tag)
        return cls(
            tag=key.tag,
            torch=key.torch,
            accelerator=key.accelerator,
            os=key.os,
            variant=key.variant,
            status=status_of(status),
            **values,
        )

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CellResult:
        names = set(cls.__dataclass_fields__)
        unknown = set(raw) - names
        if unknown:
            raise ConfigError(f"cell result {raw.get('tag', '?')}: unknown keys {', '.join(sorted(unknown))}")
        values = dict(raw)
        values["status"] = status_of(str(values.get("status", "")))
        return cls(**values)

    @property
    def bad(self) -> bool:
        return self.status in BAD


def status_of(word: str) -> Status:
    """A report status from itself or from a CI outcome word (`success`, `failure`, `cancelled`, ...)."""
    lowered = word.strip().lower()
    for status in STATUSES:
        if status == lowered:
            return status
    if lowered in OUTCOMES:
        return OUTCOMES[lowered]
    raise ConfigError(
        f"unknown status {word!r}; allowed: {', '.join(STATUSES)} (or CI outcomes {', '.join(OUTCOMES)})"
    )


def smoke_facts(smoke: Mapping[str, Any] | None) -> dict[str, Any]:
    """`smoke_s`, `failing_check` and `detail` from the in-image suite's JSON (smoke-result.json)."""
    if not smoke:
        return {}
    failed = [c for c in smoke.get("checks", []) if c.get("status") == "fail"]
    facts: dict[str, Any] = {}
    if smoke.get("total_s") is not None:
        facts["smoke_s"] = float(smoke["total_s"])
    if failed:
        facts["failing_check"] = ", ".join(str(c.get("name")) for c in failed)
        facts["detail"] = "; ".join(f"{c.get('name')}: {c.get('detail', '')}" for c in failed)
    return facts


@dataclass(frozen=True)
class RunReport:
    """One run: when it started and finished, every cell's result, and the compat-check diff."""

    started: dt.datetime
    finished: dt.datetime
    results: tuple[CellResult, ...]
    compat_diff: str = ""
    compat_notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def counts(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.results) for status in STATUSES}

    @property
    def ok(self) -> bool:
        return not any(r.bad for r in self.results)


def to_json(run: RunReport) -> dict[str, Any]:
    """The JSON form of a run (stable keys; `schema` bumps when they change)."""
    return {
        "schema": SCHEMA_VERSION,
        "started": run.started.isoformat(),
        "finished": run.finished.isoformat(),
        "duration_s": round((run.finished - run.started).total_seconds(), 3),
        "ok": run.ok,
        "counts": run.counts,
        "results": [asdict(r) for r in sorted(run.results, key=_order)],
        "compat": {
            "current": not run.compat_diff,
            "diff": run.compat_diff,
            "notes": list(run.compat_notes),
        },
    }


def from_json(raw: Mapping[str, Any]) -> RunReport:
    """The inverse of `to_json`."""
    compat = raw.get("compat") or {}
    return RunReport(
        started=dt.datetime.fromisoformat(raw["started"]),
        finished=dt.datetime.fromisoformat(raw["finished"]),
        results=tuple(CellResult.from_dict(r) for r in raw.get("results", [])),
        compat_diff=str(compat.get("diff", "")),
        compat_notes=tuple(compat.get("notes", [])),
    )


def _order(result: CellResult) -> tuple[Any, ...]:
    return (result.os, result.variant, version_tuple(result.torch), _accel_key(result.accelerator))


def _accel_key(accelerator: str) -> tuple[int, ...]:
    return (0,) if accelerator == "cpu" else (1, *version_tuple(accelerator.removeprefix("cuda")))


def groups(results: Iterable[CellResult]) -> dict[tuple[str, str], list[CellResult]]:
    """Results by (os, variant), in a stable order."""
    out: dict[tuple[str, str], list[CellResult]] = {}
    for result in sorted(results, key=_order):
        out.setdefault((result.os, result.variant), []).append(result)
    return out


CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;color:#1b1f24}
h1{font-size:1.5rem;margin:0 0 .25rem} h2{font-size:1.15rem;margin:2rem 0 .5rem}
.meta{color:#57606a} nav a{margin-right:.75rem}
table.grid{border-collapse:collapse;margin:.5rem 0}
table.grid th,table.grid td{border:1px solid #d0d7de;padding:.3rem .45rem;vertical-align:top}
table.grid th{background:#f6f8fa;text-align:left}
td.empty{background:#fafbfc}
td.cell{min-width:9rem} td.cell .tag{font-family:ui-monospace,monospace;font-size:.8rem;display:block}
td.cell .st{font-weight:600;text-transform:uppercase;font-size:.75rem}
td.cell .nums{font-size:.8rem;color:#333} td.cell .check{font-size:.8rem;color:#8b0000}
.s-passed{background:#dafbe1} .s-failed{background:#ffd7d5} .s-timeout{background:#ffe3b3}
.s-interrupted{background:#e6dcff} .s-skipped{background:#eaeef2} .s-cached{background:#ddf4ff}
.legend span{display:inline-block;padding:.1rem .5rem;margin-right:.35rem;border:1px solid #d0d7de}
ul.failures li{margin:.15rem 0} details{margin:1rem 0} summary{cursor:pointer}
pre.diff{background:#f6f8fa;border:1px solid #d0d7de;padding:.75rem;overflow:auto;font-size:.8rem}
pre.diff .add{color:#116329;background:#dafbe1} pre.diff .del{color:#82071e;background:#ffebe9}
pre.diff .hunk{color:#0550ae}
"""


def _fmt_size(size: int | None) -> str:
    return "" if size is None else f"{size / 1e9:.2f} GB"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds >= 5400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 / 60:02.0f} min"
    if seconds >= 90:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def _href(path: str) -> str:
    return html.escape(path.replace(os.sep, "/"), quote=True)


def _cell_html(result: CellResult) -> str:
    e = html.escape
    nums = [
        f"size {_fmt_size(result.size_bytes)}" if result.size_bytes is not None else "",
        f"build {_fmt_s(result.build_s)}" if result.build_s is not None else "",
        f"smoke {_fmt_s(result.smoke_s)}" if result.smoke_s is not None else "",
    ]
    parts = [
        f'<span class="tag">{e(result.tag)}</span>',
        f'<span class="st">{e(result.status)}</span>',
    ]
    shown = " · ".join(n for n in nums if n)
    if shown:
        parts.append(f'<div class="nums">{e(shown)}</div>')
    if result.failing_check:
        parts.append(f'<div class="check">failed: {e(result.failing_check)}</div>')
    if result.log_path:
        parts.append(f'<a href="{_href(result.log_path)}">build log</a>')
    title = f' title="{e(result.detail, quote=True)}"' if result.detail else ""
    return (
        f'<td class="cell s-{e(result.status)}" id="cell-{e(result.tag, quote=True)}" '
        f'data-status="{e(result.status)}"{title}>{"".join(parts)}</td>'
    )


def _group_id(os_name: str, variant: str) -> str:
    return f"{os_name}-{variant}".replace(".", "_")


def _table(results: Sequence[CellResult]) -> str:
    accelerators = sorted({r.accelerator for r in results}, key=_accel_key)
    torches = sorted({r.torch for r in results}, key=version_tuple, reverse=True)
    by_pos = {(r.torch, r.accelerator): r for r in results}
    head = "".join(f"<th>{html.escape(a)}</th>" for a in accelerators)
    rows = []
    for torch in torches:
        cells = []
        for accelerator in accelerators:
            result = by_pos.get((torch, accelerator))
            cells.append(_cell_html(result) if result else '<td class="empty"></td>')
        rows.append(f"<tr><th>torch {html.escape(torch)}</th>{''.join(cells)}</tr>")
    return (
        f'<table class="grid"><thead><tr><th></th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        css = ""
        if line.startswith(("+++", "---")):
            css = "hunk"
        elif line.startswith("+"):
            css = "add"
        elif line.startswith("-"):
            css = "del"
        elif line.startswith("@@"):
            css = "hunk"
        text = html.escape(line)
        lines.append(f'<span class="{css}">{text}</span>' if css else text)
    return '<pre class="diff">' + "\n".join(lines) + "</pre>"


def render_html(run: RunReport, title: str = "pytorch-cuda-images nightly") -> str:
    """The static HTML page of a run."""
    e = html.escape
    counts = run.counts
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no cells"
    verdict = "all cells passed" if run.ok else "failures"
    by_group = groups(run.results)
    nav = " ".join(
        f'<a href="#{_group_id(o, v)}">{e(o)} {e(v)} ({len(rs)})</a>' for (o, v), rs in by_group.items()
    )
    legend = "".join(f'<span class="s-{s}">{s}</span>' for s in STATUSES)
    body = [
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">started {e(run.started.isoformat(timespec="seconds"))}, finished '
        f"{e(run.finished.isoformat(timespec='seconds'))} "
        f"({_fmt_s((run.finished - run.started).total_seconds())}); {len(run.results)} cells: "
        f"{e(summary)}: <strong>{verdict}</strong></p>",
        f'<p class="legend">{legend}</p>',
        f'<nav>{nav} <a href="#compat">compat data</a></nav>',
    ]
    bad = [r for r in sorted(run.results, key=_order) if r.bad]
    if bad:
        items = "".join(
            f'<li><a href="#cell-{e(r.tag, quote=True)}">{e(r.tag)}</a>: {e(r.status)}'
            + (f" ({e(r.failing_check)})" if r.failing_check else "")
            + (f" - {e(r.detail)}" if r.detail else "")
            + "</li>"
            for r in bad
        )
        opened = " open" if len(bad) <= FAILURES_OPEN else ""
        body.append(
            f'<details id="failures"{opened}><summary><strong>Failures ({len(bad)})</strong></summary>'
            f'<ul class="failures">{items}</ul></details>'
        )
    for (os_name, variant), results in by_group.items():
        body.append(
            f'<section id="{_group_id(os_name, variant)}"><h2>{e(os_name)} · {e(variant)}</h2>'
            f"{_table(results)}</section>"
        )
    body.append('<section id="compat"><h2>Compatibility data</h2>')
    if run.compat_diff:
        body.append(
            "<p>PyPI has releases that <code>builder/resources/compat.yaml</code> does not know yet. "
            "Review this diff and apply it with <code>git apply</code>:</p>"
        )
        body.append(_diff_html(run.compat_diff))
    else:
        body.append("<p>compat data is current</p>")
    if run.compat_notes:
        body.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in run.compat_notes) + "</ul>")
    body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _placed_logs(run: RunReport, out_dir: Path, copy_logs: bool) -> RunReport:
    """Log paths that work from the report folder: copied into `logs/<tag>/` or made relative to it.

    URLs and paths that do not exist are left as they are.
    """
    fixed = []
    for result in run.results:
        path = result.log_path
        if path and "://" not in path and Path(path).is_file():
            if copy_logs:
                target = out_dir / "logs" / result.tag / Path(path).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                path = target.relative_to(out_dir).as_posix()
            else:
                path = Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
        fixed.append(result if path == result.log_path else replace(result, log_path=path))
    return replace(run, results=tuple(fixed))


def write_report(run: RunReport, out_dir: Path, *, copy_logs: bool = False) -> tuple[Path, Path]:
    """Write `report.json` and `index.html` into out_dir (copy_logs: the build logs too); their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _placed_logs(run, out_dir, copy_logs)
    json_path, html_path = out_dir / JSON_NAME, out_dir / HTML_NAME
    json_path.write_text(json.dumps(to_json(run), indent=2) + "\n", encoding="utf-8")
    html_path.write_text(render_html(run), encoding="utf-8")
    return json_path, html_path


def save_result(result: CellResult, out_dir: Path) -> Path:
    """Write one cell's result as `<out_dir>/<tag>.json` (what each CI job leaves for the report job)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.tag}.json"
    path.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return path


def load_results(paths: Iterable[Path]) -> list[CellResult]:
    """Cell results from JSON files and folders of them (recursively); the newest file per tag wins."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.rglob("*.json")) if path.is_dir() else [path]
    newest: dict[str, tuple[float, CellResult]] = {}
    for file in files:
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{file}: not a readable cell result: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: not a cell result (expected a JSON object)")
        result = CellResult.from_dict(raw)
        mtime = file.stat().st_mtime
        if result.tag not in newest or newest[result.tag][0] <= mtime:
            newest[result.tag] = (mtime, result)
    return sorted((r for _, r in newest.values()), key=_order)
