"""A run's results as a JSON report and a static HTML page (inline CSS, no scripts, no external assets).

The page shows one table per OS and variant (torch down, accelerator across), each cell coloured by
status with its size, build and smoke times, the failing check and a link to its build log, plus the
compat data diff (`python -m tools.update_compat --json`). Pure except the functions that read and write
files: `write_report`, `save_result`, `load_results`, `record_cell`, `render_results`, `read_compat`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import jinja2

from builder.errors import ConfigError
from builder.model.naming import parse_tag, version_tuple

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
class PlatformResult:
    """How one platform's image of a multi-platform cell fared, with its numbers."""

    platform: str
    status: Status
    size_bytes: int | None = None
    build_s: float | None = None
    smoke_s: float | None = None
    failing_check: str | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PlatformResult:
        return cls(
            **_known_values(raw, set(cls.__dataclass_fields__), f"platform result {raw.get('platform', '?')}")
        )


@dataclass(frozen=True)
class CellResult:
    """How one cell fared in a run (a multi-platform cell: also each platform, in `platforms`)."""

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
    platforms: tuple[PlatformResult, ...] = ()

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
        values = _known_values(raw, set(cls.__dataclass_fields__), f"cell result {raw.get('tag', '?')}")
        values["platforms"] = tuple(PlatformResult.from_dict(p) for p in raw.get("platforms") or ())
        return cls(**values)

    @property
    def bad(self) -> bool:
        return self.status in BAD


def _known_values(raw: Mapping[str, Any], names: set[str], what: str) -> dict[str, Any]:
    """A result's values read from JSON: only known keys (ConfigError names the others), status checked."""
    unknown = set(raw) - names
    if unknown:
        raise ConfigError(f"{what}: unknown keys {', '.join(sorted(unknown))}")
    return {**raw, "status": status_of(str(raw.get("status", "")))}


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


#: Which status a cell of several platforms gets: the first of these that one of its platforms has.
_CELL_STATUS_ORDER: tuple[Status, ...] = ("failed", "timeout", "interrupted", "passed", "cached", "skipped")


def merge_platforms(results: Sequence[CellResult]) -> CellResult:
    """One cell's per-platform results (oldest first; CI records one per (cell, platform) job) as one: every
    platform's row (the newest per platform), the worst status, the failing checks named by platform."""
    rows = {row.platform: row for result in results for row in result.platforms}
    statuses = {row.status for row in rows.values()}
    status = next(s for s in _CELL_STATUS_ORDER if s in statuses)
    failing = [f"{row.platform}: {row.failing_check}" for row in rows.values() if row.failing_check]
    kept = [r for r in results if any(rows[row.platform] is row for row in r.platforms)]
    details = [r.detail for r in kept if r.detail]
    return replace(
        results[-1],
        status=status,
        failing_check="; ".join(failing) or None,
        detail="; ".join(dict.fromkeys(details)),
        platforms=tuple(sorted(rows.values(), key=lambda row: row.platform)),
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


REPORT_TEMPLATE = "report.html.j2"  # in builder/resources/
_PAGES = jinja2.Environment(
    loader=jinja2.PackageLoader("builder", "resources"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


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


_PAGES.filters["size"] = _fmt_size
_PAGES.filters["seconds"] = _fmt_s


@dataclass(frozen=True)
class _Grid:
    """One table of the page: an OS and variant, torch down, accelerator across."""

    os: str
    variant: str
    accelerators: list[str]
    rows: list[tuple[str, list[CellResult | None]]]

    @property
    def id(self) -> str:
        return f"{self.os}-{self.variant}".replace(".", "_")

    @property
    def count(self) -> int:
        return sum(r is not None for _, row in self.rows for r in row)


def _grid(os_name: str, variant: str, results: Sequence[CellResult]) -> _Grid:
    accelerators = sorted({r.accelerator for r in results}, key=_accel_key)
    torches = sorted({r.torch for r in results}, key=version_tuple, reverse=True)
    by_pos = {(r.torch, r.accelerator): r for r in results}
    rows = [(torch, [by_pos.get((torch, a)) for a in accelerators]) for torch in torches]
    return _Grid(os_name, variant, accelerators, rows)


def _diff_lines(diff: str) -> list[tuple[str, str]]:
    """(css class, line) for a unified diff: headers and hunks, additions, removals."""
    lines = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---", "@@")):
            css = "hunk"
        elif line.startswith("+"):
            css = "add"
        elif line.startswith("-"):
            css = "del"
        else:
            css = ""
        lines.append((css, line))
    return lines


def render_html(run: RunReport, title: str = "pytorch-cuda-images nightly") -> str:
    """The static HTML page of a run (builder/resources/report.html.j2, every value escaped)."""
    return _PAGES.get_template(REPORT_TEMPLATE).render(
        title=title,
        started=run.started.isoformat(timespec="seconds"),
        finished=run.finished.isoformat(timespec="seconds"),
        duration_s=(run.finished - run.started).total_seconds(),
        results=run.results,
        summary=", ".join(f"{n} {s}" for s, n in run.counts.items() if n) or "no cells",
        ok=run.ok,
        statuses=STATUSES,
        groups=[_grid(o, v, rs) for (o, v), rs in groups(run.results).items()],
        failures=[r for r in sorted(run.results, key=_order) if r.bad],
        failures_open=FAILURES_OPEN,
        diff_lines=_diff_lines(run.compat_diff),
        notes=run.compat_notes,
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
    found: dict[str, list[tuple[float, CellResult]]] = {}
    for file in files:
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{file}: not a readable cell result: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: not a cell result (expected a JSON object)")
        result = CellResult.from_dict(raw)
        found.setdefault(result.tag, []).append((file.stat().st_mtime, result))
    return sorted((_newest(entries) for entries in found.values()), key=_order)


def _newest(entries: list[tuple[float, CellResult]]) -> CellResult:
    """A tag's result from its files: the newest, or, when the newest has platform rows, every platform's
    newest row merged (the jobs of a multi-platform cell each record one platform)."""
    entries = sorted(entries, key=lambda entry: entry[0])
    newest = entries[-1][1]
    if not newest.platforms:
        return newest
    return merge_platforms([result for _, result in entries if result.platforms])


def record_cell(
    tag: str,
    status: str,
    *,
    build_s: float | None,
    size_bytes: int | None,
    log: Path | None,
    detail: str | None,
    run_folder: Path,
    out_dir: Path,
    platform: str | None = None,
) -> tuple[Path, CellResult]:
    """`report cell`: one cell's result, its failing check read from the build's run folder
    (`run_folder/smoke-result.json`), saved as `out_dir/<tag>.json`; (the file, the result). With
    `platform` (one job of a multi-platform cell) it is also that platform's row."""
    tag = parse_tag(tag).tag
    smoke_file = run_folder / "smoke-result.json"
    facts = smoke_facts(json.loads(smoke_file.read_text()) if smoke_file.is_file() else None)
    if detail is not None:
        facts["detail"] = detail
    log_path = log or run_folder / "build.log"
    result = CellResult.for_tag(
        tag,
        status,
        size_bytes=size_bytes,
        build_s=build_s,
        log_path=str(log_path) if log_path.is_file() else None,
        **facts,
    )
    if platform is not None:
        row = PlatformResult(
            platform,
            result.status,
            size_bytes=size_bytes,
            build_s=build_s,
            smoke_s=result.smoke_s,
            failing_check=result.failing_check,
        )
        result = replace(result, platforms=(row,))
    return save_result(result, out_dir), result


def render_results(
    paths: list[Path],
    out_dir: Path,
    *,
    started: str | None = None,
    compat: Path | None = None,
) -> tuple[RunReport, Path]:
    """`report render`: cell result files (or folders of them) as OUT/report.json and OUT/index.html, the
    build logs copied into OUT/logs/; the run starts at `started` (ISO) or at the oldest result file."""
    cells = load_results(paths)
    now = dt.datetime.now(dt.UTC)
    begin = dt.datetime.fromisoformat(started) if started else now
    if not started:
        files = [p for r in paths for p in ([r] if r.is_file() else r.rglob("*.json"))]
        if files:
            begin = dt.datetime.fromtimestamp(min(p.stat().st_mtime for p in files), dt.UTC)
    diff, notes = read_compat(compat)
    run = RunReport(begin, now, tuple(cells), compat_diff=diff, compat_notes=tuple(notes))
    _, html_path = write_report(run, out_dir, copy_logs=True)
    return run, html_path


def read_compat(path: Path | None) -> tuple[str, list[str]]:
    """The compat check's diff and notes from its JSON file (`python -m tools.update_compat --json`);
    no file: nothing to show."""
    if path is None:
        return "", []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return str(raw["diff"]), [str(note) for note in raw["notes"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{path}: not the JSON of `python -m tools.update_compat --json` (keys: current, diff, notes)"
        ) from None
