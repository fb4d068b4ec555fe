"""A read-only PyPI client: PyPI's JSON API, or a PEP 691 simple index (a mirror), for release files and
the Requires-Dist of a release's default Linux wheel (PEP 658 metadata, else the wheel's zip directory).
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from builder.errors import MirrorError
from tools.wheel_metadata import Fetch, requires_dist_from_metadata, wheel_metadata

PYPI = "https://pypi.org"
SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
JSON_ACCEPT = {"Accept": "application/json"}


@dataclass(frozen=True)
class ReleaseFile:
    """One uploaded file of a release (JSON API `urls`/`releases` entry or a PEP 691 `files` entry)."""

    filename: str
    url: str = ""
    requires_python: str | None = None
    upload_time: str | None = None  # ISO 8601
    yanked: bool = False
    has_metadata: bool = False  # PEP 658: `<url>.metadata` serves the wheel's METADATA
    size: int = 0


@dataclass(frozen=True)
class Release:
    """A release of a project with the Requires-Dist of its default Linux wheel (None: not read)."""

    version: str
    files: tuple[ReleaseFile, ...]
    requires_dist: tuple[str, ...] | None = None


class NotFoundError(MirrorError):
    """The index has no such project, release or file (HTTP 404)."""


class NotJsonError(MirrorError):
    """The answer is not JSON (an HTML-only simple index, for one)."""


# --- wheel file names -------------------------------------------------------------------------------


def wheel_tags(filename: str) -> list[tuple[str, str, str]]:
    """(interpreter, abi, platform) of each tag of a wheel file name; [] for anything else."""
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return []
    return [(tag.interpreter, tag.abi, tag.platform) for tag in tags]


def is_linux_x86_64(filename: str) -> bool:
    return any("linux" in plat and plat.endswith("x86_64") for _, _, plat in wheel_tags(filename))


def metadata_file(files: Iterable[ReleaseFile]) -> ReleaseFile | None:
    """The wheel whose METADATA speaks for the release: cp312 Linux x86_64 first, any Linux x86_64 next."""
    linux = [f for f in files if is_linux_x86_64(f.filename) and not f.yanked]
    linux.sort(key=lambda f: ("-cp312-cp312-" not in f.filename, not f.has_metadata, f.filename))
    return linux[0] if linux else None


def _wheel_version(filename: str) -> str | None:
    try:
        return str(parse_wheel_filename(filename)[1])
    except InvalidWheelFilename:
        return None


# --- HTTP -------------------------------------------------------------------------------------------


def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    if SYSTEM_CA_BUNDLE.is_file():
        context.load_verify_locations(cafile=str(SYSTEM_CA_BUNDLE))
    return context


def http_get(url: str, headers: Mapping[str, str], timeout: float = 60.0) -> bytes:
    """GET `url`; every failure becomes a MirrorError naming the URL. A Range request must get a 206."""
    request = urllib.request.Request(
        url, headers={"User-Agent": "pytorch-cuda-images update_compat", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=_ssl_context()) as response:
            if "Range" in headers and response.status != 206:
                raise MirrorError(f"{url}: the server ignores HTTP Range requests")
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotFoundError(f"{url}: not found (HTTP 404)") from None
        raise MirrorError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MirrorError(f"{url}: unreachable: {reason}") from None


def _json(fetch: Fetch, url: str, headers: Mapping[str, str] = JSON_ACCEPT) -> Any:
    body = fetch(url, headers)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise NotJsonError(f"{url}: not a JSON answer") from None


def read_requires_dist(
    fetch: Fetch, files: Sequence[ReleaseFile], notes: list[str]
) -> tuple[str, ...] | None:
    """Requires-Dist of the release's default Linux wheel: PEP 658 metadata, else its zip directory."""
    chosen = metadata_file(files)
    if chosen is None or not chosen.url:
        return None
    if chosen.has_metadata:
        try:
            text = fetch(chosen.url + ".metadata", {"Accept": "*/*"}).decode("utf-8", "replace")
            return requires_dist_from_metadata(text)
        except MirrorError as exc:
            notes.append(f"{chosen.filename}: PEP 658 metadata unreadable ({exc}); reading the wheel")
    if not chosen.size:
        return None
    try:
        return requires_dist_from_metadata(wheel_metadata(fetch, chosen.url, chosen.size))
    except (MirrorError, zipfile.BadZipFile, OSError) as exc:
        notes.append(f"{chosen.filename}: METADATA unreadable: {exc}")
        return None


# --- the two kinds of index ---------------------------------------------------------------------------


class PypiJson:
    """PyPI's JSON API (`/pypi/<project>/json`, `/pypi/<project>/<version>/json`)."""

    def __init__(self, base: str = PYPI, fetch: Fetch = http_get) -> None:
        self.base = base.rstrip("/")
        self.fetch = fetch
        self.notes: list[str] = []
        self._info: dict[str, Mapping[str, Any]] = {}
        self._files: dict[str, dict[str, list[ReleaseFile]]] = {}

    def releases(self, project: str) -> dict[str, list[ReleaseFile]]:
        url = f"{self.base}/pypi/{project}/json"
        payload = _json(self.fetch, url)
        self._info[project] = payload.get("info") or {}
        self._files[project] = {
            version: [_json_file(url, f) for f in files]
            for version, files in (payload.get("releases") or {}).items()
        }
        return self._files[project]

    def release(self, project: str, version: str) -> Release:
        files = tuple(self._files.get(project, {}).get(version, ()))
        url = f"{self.base}/pypi/{project}/{version}/json"
        try:
            payload = _json(self.fetch, url)
        except NotFoundError:
            info = self._info.get(project, {})
            if info.get("version") == version and info.get("requires_dist") is not None:
                return Release(version, files, tuple(info["requires_dist"]))
            return Release(version, files, read_requires_dist(self.fetch, files, self.notes))
        files = files or tuple(_json_file(url, f) for f in payload.get("urls") or ())
        requires = (payload.get("info") or {}).get("requires_dist")
        if requires is None:
            return Release(version, files, read_requires_dist(self.fetch, files, self.notes))
        return Release(version=version, files=files, requires_dist=tuple(requires))


def _json_file(page: str, item: Mapping[str, Any]) -> ReleaseFile:
    return ReleaseFile(
        filename=str(item.get("filename", "")),
        url=urljoin(page, str(item.get("url", ""))),
        requires_python=item.get("requires_python") or None,
        upload_time=item.get("upload_time_iso_8601") or item.get("upload_time"),
        yanked=bool(item.get("yanked")),
        has_metadata=bool(item.get("core_metadata") or item.get("core-metadata")),
        size=int(item.get("size") or 0),
    )


def _simple_file(page: str, item: Mapping[str, Any]) -> ReleaseFile:
    return ReleaseFile(
        filename=str(item.get("filename", "")),
        url=urljoin(page, str(item.get("url", ""))),
        requires_python=item.get("requires-python") or None,
        upload_time=item.get("upload-time"),
        yanked=bool(item.get("yanked")),
        has_metadata=bool(item.get("core-metadata") or item.get("dist-info-metadata")),
        size=int(item.get("size") or 0),
    )


class SimpleIndex:
    """A PEP 691 (JSON) simple index, such as a mirror; Requires-Dist from PEP 658 metadata or the wheel.

    A mirror that answers only HTML is left for PyPI's JSON API (the fallback); one that does not answer
    at all is an error (MirrorError), not a reason to ask someone else.
    """

    def __init__(self, url: str, fetch: Fetch = http_get, fallback: PypiJson | None = None) -> None:
        self.url = url.rstrip("/")
        self.fetch = fetch
        self.fallback = fallback or PypiJson(fetch=fetch)
        self.notes: list[str] = []
        self._files: dict[str, dict[str, list[ReleaseFile]]] = {}
        self._fell_back: set[str] = set()

    def releases(self, project: str) -> dict[str, list[ReleaseFile]]:
        page = f"{self.url}/{project}/"
        try:
            payload = _json(self.fetch, page, {"Accept": f"{SIMPLE_JSON}, text/html;q=0.01"})
        except NotJsonError:
            payload = None
        if not isinstance(payload, dict) or "files" not in payload:
            self.notes.append(
                f"{page}: not a PEP 691 JSON project page; used {self.fallback.base}'s JSON API"
            )
            self._fell_back.add(project)
            return self.fallback.releases(project)
        by_version: dict[str, list[ReleaseFile]] = {str(v): [] for v in payload.get("versions") or ()}
        for item in payload["files"]:
            entry = _simple_file(page, item)
            version = _wheel_version(entry.filename)
            if version is not None:
                by_version.setdefault(version, []).append(entry)
        self._files[project] = by_version
        return by_version

    def release(self, project: str, version: str) -> Release:
        if project in self._fell_back:
            return self.fallback.release(project, version)
        files = tuple(self._files.get(project, {}).get(version, ()))
        return Release(version, files, read_requires_dist(self.fetch, files, self.notes))

    def all_notes(self) -> list[str]:
        return self.notes + self.fallback.notes
