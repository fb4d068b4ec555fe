"""Pushing a cell: the immutable tag first, its digest verified, then the floating tag; retries throughout.

Skipped when the registry already holds the same content (same digest, or the same content-hash label).
Every docker-py call goes through `builder.build.engine.Engine`; a floating tag that only needs to move is
moved registry-side through `builder.publish.http`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from builder.errors import ConfigError, RegistryError
from builder.model.naming import (
    CONTENT_HASH_LABEL,
    LOCAL_REPOSITORY,
    floating_tag,
    immutable_tag,
    local_references,
    parse_reference,
    platform_tag,
)
from builder.output import Output
from builder.publish import referrers
from builder.publish.credentials import Credentials, auth_config, lookup_credentials
from builder.publish.harbor import ensure_harbor_project
from builder.publish.http import RegistryHttp, remote_content_hash
from builder.publish.index import platforms_of, put_index
from builder.publish.target import Target, resolve_target

if TYPE_CHECKING:
    from builder.build.engine import Engine
    from builder.model.cell import Cell

T = TypeVar("T")
Say = Callable[[str], None]


# --- retries ------------------------------------------------------------------------------------

_TRANSIENT = re.compile(
    r"connection refused|connection reset|broken pipe|\bEOF\b|i/o timeout|timeout exceeded|timed out|"
    r"no route to host|network is unreachable|TLS handshake timeout|server misbehaving|"
    r"(?:HTTP status|status code|status:)\s*5\d\d|\b5\d\d (?:Internal Server Error|Bad Gateway|"
    r"Service Unavailable|Gateway Time-?out)|\b(?:500|502|503|504)\b.*Server Error|"
    r"unexpected end of JSON|engine stopped answering",
    re.IGNORECASE,
)
_AUTH = re.compile(
    r"unauthorized|authentication required|denied|no basic auth credentials|\b401\b|\b403\b", re.IGNORECASE
)


def is_transient(message: str) -> bool:
    """A connection error or a 5xx answer (worth retrying); never an auth, TLS or not-found error."""
    return bool(_TRANSIENT.search(message)) and not _AUTH.search(message)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff (tenacity) on connection errors and 5xx: `attempts` tries within `max_seconds`."""

    attempts: int = 6
    max_seconds: float = 300.0
    first_wait: float = 0.5
    max_wait: float = 30.0

    @classmethod
    def from_env(
        cls,
        attempts: int | None = None,
        max_seconds: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RetryPolicy:
        """Options win over `PUSH_RETRIES` / `PUSH_RETRY_MAX_S`, which win over the defaults."""
        env = os.environ if env is None else env
        try:
            tries = attempts if attempts is not None else int(env.get("PUSH_RETRIES", cls.attempts))
            window = (
                max_seconds
                if max_seconds is not None
                else float(env.get("PUSH_RETRY_MAX_S", cls.max_seconds))
            )
        except ValueError:
            raise ConfigError(
                "PUSH_RETRIES must be an integer and PUSH_RETRY_MAX_S a number of seconds"
            ) from None
        if tries < 1 or window < 0:
            raise ConfigError("--retries must be at least 1 and --retry-max-s not negative")
        return cls(attempts=tries, max_seconds=window)


def with_retries(policy: RetryPolicy, what: str, action: Callable[[], T], say: Say) -> T:
    """Run `action`, retrying transient RegistryErrors; after the last try one clear RegistryError."""
    started = time.monotonic()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        say(
            f"{what}: {error} - retrying in {wait:.1f} s "
            f"(attempt {state.attempt_number + 1}/{policy.attempts})"
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts) | tenacity.stop_after_delay(policy.max_seconds),
        wait=tenacity.wait_exponential(multiplier=policy.first_wait, max=policy.max_wait),
        retry=tenacity.retry_if_exception(
            lambda exc: isinstance(exc, RegistryError) and is_transient(str(exc))
        ),
        before_sleep=before_sleep,
        reraise=False,
    )
    try:
        return retrying(action)
    except tenacity.RetryError as exc:
        last = exc.last_attempt
        error = last.exception()
        raise RegistryError(
            f"{what}: gave up after {last.attempt_number} attempts in {time.monotonic() - started:.1f} s "
            f"(retry window {policy.max_seconds:g} s): {error}"
        ) from None


# --- push ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PushPlan:
    """The local image and the remote tags of one cell, in push order: immutable, then floating."""

    local: str
    immutable: str
    floating: str

    @property
    def repository(self) -> str:
        return parse_reference(self.immutable).name


def plan_push(cell: Cell, target: Target, *, local: str | None = None) -> PushPlan:
    """Push `local` (default: the cell's local immutable tag) as the cell's immutable and floating tags."""
    return PushPlan(
        local=local or f"{LOCAL_REPOSITORY}:{immutable_tag(cell)}",
        immutable=target.reference(immutable_tag(cell)),
        floating=target.reference(floating_tag(cell)),
    )


@dataclass
class PushResult:
    plan: PushPlan
    digest: str
    skipped: str = ""  # why nothing was pushed ("" when pushed)
    floating_moved: bool = False  # False: the floating tag already pointed at `digest`
    seconds: float = 0.0
    sbom: str = ""  # what happened to the image's SBOM referrer, timed apart ("" when none was attached)

    def lines(self) -> list[str]:
        """What happened, for stdout."""
        if self.skipped:
            out = [f"unchanged {self.plan.immutable}@{self.digest}: {self.skipped}"]
        else:
            out = [f"pushed {self.plan.immutable}@{self.digest} (digest verified)"]
        floating = self.plan.floating
        if self.floating_moved:
            out.append(f"moved {floating} -> {self.digest}")
        else:
            out.append(f"unchanged {floating} (already {self.digest})")
        out.append(f"done in {self.seconds:.2f} s")
        if self.sbom:
            out.append(self.sbom)
        return out


class LayerProgress:
    """Per-layer push progress: live bars on a terminal, one line per finished layer otherwise."""

    DONE = ("Pushed", "Layer already exists", "Mounted from")

    def __init__(self, output: Output, reference: str) -> None:
        self.output = output
        self.reference = reference
        self._seen: dict[str, str] = {}
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    @contextlib.contextmanager
    def live(self) -> Iterator[LayerProgress]:
        if self.output.live:
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                console=self.output.console,
                transient=True,
            ) as progress:
                self._progress = progress
                yield self
            self._progress = None
        else:
            yield self

    def __call__(self, layer: str, status: str, current: int, total: int) -> None:
        if self._progress is not None:
            if layer not in self._tasks:
                self._tasks[layer] = self._progress.add_task(layer, total=total or None)
            self._progress.update(
                self._tasks[layer], description=f"{layer} {status}", completed=current, total=total or None
            )
        state = "Retrying" if status.startswith("Retrying") else status  # one line per countdown
        if status.startswith((*self.DONE, "Retrying")) and self._seen.get(layer) != state:
            self._seen[layer] = state
            self.output.info(f"  layer {layer}: {status}")


def push_cell(
    engine: Engine,
    plan: PushPlan,
    target: Target,
    creds: Credentials | None,
    *,
    policy: RetryPolicy,
    output: Output,
    force: bool = False,
) -> PushResult:
    """Push a cell's image: skip when the registry has its content, else push and verify the immutable tag,
    then move the floating tag. A failure before the immutable tag is verified leaves the floating tag
    alone."""
    with _auth_errors_explained(creds):
        started = time.perf_counter()
        auth = auth_config(creds)
        say = output.info
        if not engine.image_exists(plan.local):
            raise RegistryError(
                f"no local image {plan.local}: build it first (`python -m builder build ...`)"
            )
        attrs = engine.image_attrs(plan.local)
        local_hash = ((attrs.get("Config") or {}).get("Labels") or {}).get(CONTENT_HASH_LABEL, "")
        http = RegistryHttp(target.host, creds, insecure=target.insecure)

        def check() -> tuple[str | None, str]:
            remote = engine.registry_digest(plan.immutable, auth=auth)
            if remote is None or force:
                return remote, ""
            if f"{plan.repository}@{remote}" in (attrs.get("RepoDigests") or []):
                return remote, "the registry already holds this image (same digest)"
            if local_hash and remote_content_hash(http, plan.immutable) == local_hash:
                return remote, f"the registry already holds the same content (content hash {local_hash[:12]})"
            return remote, ""

        remote, skipped = with_retries(policy, f"checking {plan.immutable}", check, say)
        if skipped:
            digest = remote or ""
            say(f"{plan.immutable}: {skipped}; nothing to push")
        else:
            digest = push_verified(engine, plan.local, plan.immutable, auth, policy, output)
        result = PushResult(plan=plan, digest=digest, skipped=skipped)
        floating = plan.floating
        current = with_retries(
            policy,
            f"checking {floating}",
            functools.partial(engine.registry_digest, floating, auth=auth),
            say,
        )
        if current != digest:
            if skipped and f"{plan.repository}@{digest}" not in (attrs.get("RepoDigests") or []):
                _copy_manifest(http, plan.immutable, floating, digest, policy, say)
            else:
                moved = push_verified(engine, plan.local, floating, auth, policy, output)
                if moved != digest:
                    raise RegistryError(f"{floating} got {moved}, not the immutable tag's {digest}")
            if engine.registry_digest(floating, auth=auth) != digest:
                raise RegistryError(f"{floating} does not point at {digest} after moving it")
            result.floating_moved = True
        result.seconds = time.perf_counter() - started
        return result


@contextlib.contextmanager
def _auth_errors_explained(creds: Credentials | None) -> Iterator[None]:
    """An authentication error names where the credentials came from (or that none were found)."""
    try:
        yield
    except RegistryError as exc:
        if _AUTH.search(str(exc)):
            where = (
                f"credentials from {creds.source}"
                if creds is not None
                else ("no credentials found: set REGISTRY_USERNAME/REGISTRY_PASSWORD or run `docker login`")
            )
            raise RegistryError(f"{exc} ({where})") from None
        raise


def push_verified(
    engine: Engine,
    local: str,
    reference: str,
    auth: dict[str, str] | None,
    policy: RetryPolicy,
    output: Output,
) -> str:
    """Tag, push (with retries and per-layer progress) and check the registry's digest for `reference`."""
    say = output.info
    engine.tag(local, reference)
    say(f"pushing {reference}")
    progress = LayerProgress(output, reference)

    def attempt() -> str:
        with progress.live():
            return engine.push(reference, auth=auth, on_layer=progress)

    digest = with_retries(policy, f"push of {reference}", attempt, say)
    remote = with_retries(
        policy, f"verifying {reference}", lambda: engine.registry_digest(reference, auth=auth), say
    )
    repository = parse_reference(reference).name
    local_digests = engine.repo_digests(reference)  # this push's own tag: the local one may move meanwhile
    if remote != digest or f"{repository}@{digest}" not in local_digests:
        raise RegistryError(
            f"digest mismatch for {reference}: the registry has {remote or 'nothing'}, the push reported "
            f"{digest}, the local image knows {', '.join(local_digests) or 'no repo digest'}"
        )
    return digest


def attach_sbom(
    engine: Engine,
    plan: PushPlan,
    target: Target,
    http: RegistryHttp,
    digest: str,
    *,
    policy: RetryPolicy,
    output: Output,
) -> str:
    """Push the SBOM the local image carries as a referrer of the pushed manifest; what happened, as a
    line. A manifest that lists an SBOM already is left alone (the SBOM is a layer of that manifest's
    image, so it is the same document). A registry that refuses it gets a warning: the image push stands."""
    from builder.build import sbom

    if not digest:
        return ""
    started = time.perf_counter()

    def attach() -> referrers.Attached | None:
        listed, via = referrers.referrers(http, target.repository, digest, sbom.MEDIA_TYPE)
        if listed:
            return referrers.Attached(str(listed[0].get("digest")), via, new=False)
        document = sbom.read(engine, plan.local)
        if document is None:
            return None
        title = Path(sbom.SBOM_PATH).name
        return referrers.attach(http, target.repository, digest, sbom.MEDIA_TYPE, document, title)

    try:
        attached = with_retries(policy, f"attaching the SBOM to {plan.immutable}", attach, output.info)
    except RegistryError as exc:
        output.warning(f"SBOM not attached to {plan.immutable}@{digest} (the image push stands): {exc}")
        return ""
    if attached is None:
        return ""
    action = "attached" if attached.new else "unchanged"
    seconds = time.perf_counter() - started
    return f"{action} SBOM {attached.digest} to {plan.immutable}@{digest} ({attached.via}, {seconds:.2f} s)"


def _copy_manifest(
    http: RegistryHttp, source: str, destination: str, digest: str, policy: RetryPolicy, say: Say
) -> None:
    """Point `destination` at the manifest `source` holds, without pushing (registry-side retag)."""
    repository = parse_reference(source).repository
    tag = parse_reference(destination).tag

    def copy() -> None:
        found = http.manifest(repository, digest)
        if found is None:
            raise RegistryError(f"{source}: manifest {digest} vanished from the registry")
        http.put_manifest(repository, tag, found[1], found[2])

    say(f"moving {destination} to {digest} (registry-side, nothing to upload)")
    with_retries(policy, f"moving {destination}", copy, say)


@dataclass(frozen=True)
class Publisher:
    """Where pushes go and how: the target registry, its credentials and the retry policy."""

    target: Target
    creds: Credentials | None
    policy: RetryPolicy

    @classmethod
    def resolve(
        cls,
        configured: str,
        override: str | None,
        *,
        retries: int | None = None,
        retry_max_s: float | None = None,
    ) -> Publisher:
        """From matrix.yaml's `registry.target` (or `--registry`), credentials from the environment."""
        target = resolve_target(configured, override)
        return cls(target, lookup_credentials(target.host), RetryPolicy.from_env(retries, retry_max_s))

    def push(
        self, engine: Engine, cell: Cell, output: Output, *, image: str | None = None, force: bool = False
    ) -> PushResult:
        """Push one built cell (`image`: another local image instead of its local immutable tag)."""
        plan = plan_push(cell, self.target, local=image)
        result = push_cell(
            engine, plan, self.target, self.creds, policy=self.policy, output=output, force=force
        )
        result.sbom = attach_sbom(
            engine, plan, self.target, self.http(), result.digest, policy=self.policy, output=output
        )
        return result

    def http(self) -> RegistryHttp:
        return RegistryHttp(self.target.host, self.creds, insecure=self.target.insecure)

    def push_platforms(self, engine: Engine, cell: Cell, platforms: list[str], output: Output) -> list[str]:
        """A multi-platform cell: push each built platform's image by digest under its platform tag;
        when every platform of the cell is among them, put the index under the immutable and then the
        floating tag (`merge`). Returns what happened, one line each."""
        auth = auth_config(self.creds)
        lines = []
        for platform in platforms:
            local = local_references(cell, platform)[1]
            if not engine.image_exists(local):
                raise RegistryError(
                    f"no local image {local}: build it first "
                    f"(`python -m builder build {cell.tag} --platform {platform}`)"
                )
            reference = self.target.reference(platform_tag(immutable_tag(cell), platform))
            digest = push_verified(engine, local, reference, auth, self.policy, output)
            lines.append(f"pushed {reference}@{digest} ({platform}, digest verified)")
            plan = PushPlan(local=local, immutable=reference, floating=reference)
            sbom = attach_sbom(
                engine, plan, self.target, self.http(), digest, policy=self.policy, output=output
            )
            lines.extend([sbom] if sbom else [])  # each platform's image carries its own SBOM
        missing = [p for p in cell.platforms if p not in platforms]
        if missing:
            lines.append(
                f"no index yet: {', '.join(missing)} not built here (`python -m builder merge {cell.tag}`)"
            )
            return lines
        return lines + self.merge(cell, output)

    def merge(self, cell: Cell, output: Output) -> list[str]:
        """Put one OCI image index over the cell's per-platform images (each must be in the registry)
        under its immutable tag, read it back (every platform's digest verified), then the same under
        the floating tag. A missing platform leaves both tags alone."""
        http = self.http()
        repository = parse_reference(self.target.reference("x")).repository
        children = [(p, platform_tag(immutable_tag(cell), p)) for p in cell.platforms]
        missing = [p for p, tag in children if http.manifest(repository, tag) is None]
        if missing:
            raise RegistryError(
                f"{cell.tag}: no index: {', '.join(missing)} not in {self.target.reference('')[:-1]} "
                "(that platform failed or was not pushed); the floating tag stays where it was"
            )
        lines = []
        for tag in (immutable_tag(cell), floating_tag(cell)):
            digest = with_retries(
                self.policy,
                f"index {tag}",
                functools.partial(put_index, http, repository, children, [tag]),
                output.info,
            )
            found = platforms_of(http, repository, tag)
            expected = {p: http.manifest(repository, child) for p, child in children}
            if set(found) != set(cell.platforms) or any(
                found[p] != (entry[0] if entry else None) for p, entry in expected.items()
            ):
                raise RegistryError(
                    f"{self.target.reference(tag)}: the index lists {found}, not every platform's digest"
                )
            listed = ", ".join(f"{p} {found[p][:19]}" for p in cell.platforms)
            lines.append(f"index {self.target.reference(tag)}@{digest}: {listed} (digests verified)")
        return lines


def push_cells(
    publisher: Publisher,
    cells: list[Cell],
    output: Output,
    *,
    image: str | None = None,
    force: bool = False,
    create_project: bool = False,
) -> list[tuple[Cell, PushResult]]:
    """`push`: optionally create the Harbor project, then push each cell; stops at the first failure."""
    from builder.build.engine import Engine

    if image and len(cells) != 1:
        raise ConfigError(f"--image {image} needs exactly one TAG ({len(cells)} selected)")
    if create_project:
        created = ensure_harbor_project(publisher.target, publisher.creds)
        target = publisher.target
        output.result(
            f"Harbor project {target.project!r} on {target.host}: {'created' if created else 'exists'}"
        )
    engine = Engine.connect()
    return [(cell, publisher.push(engine, cell, output, image=image, force=force)) for cell in cells]
