"""Base images copied by digest into the team registry (`mirror-bases`; the caller records them in
matrix.lock)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import ConfigError, RegistryError
from builder.model.naming import DOCKER_HUB, is_registry_host, parse_reference
from builder.model.secrets import looks_secret
from builder.output import Output
from builder.publish.credentials import auth_config, lookup_credentials
from builder.publish.push import RetryPolicy, push_verified, with_retries
from builder.publish.target import resolve_target

if TYPE_CHECKING:
    from builder.build.engine import Engine
    from builder.model.cell import Cell
    from builder.model.matrix import Matrix
    from builder.model.profiles import ResolvedProfile


@dataclass
class MirroredBase:
    base: str  # `library/debian:12`
    source: str
    digest: str
    mirror: str
    mirror_digest: str
    copied: bool


def mirror_bases(
    engine: Engine,
    bases: Mapping[str, str],
    to: str,
    *,
    policy: RetryPolicy,
    output: Output,
    recorded: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[MirroredBase]:
    """Copy each base (`library/debian:12` -> its source reference) by digest to `<to>/<same path>`.

    Skips a base the target already holds with the source's digest (or with the digest `recorded` for
    its mirror reference, as in matrix.lock); the caller records the results in the lock data.
    """
    say = output.info
    prefix = to.strip().rstrip("/")
    if prefix.startswith(("http://", "https://")) or looks_secret(prefix) or "@" in prefix:
        raise ConfigError(f"--to {to!r}: expected host[:port][/prefix] without scheme or credentials")
    host = prefix.split("/", 1)[0]
    if not is_registry_host(host):
        raise ConfigError(f"--to {to!r}: {host!r} is not a registry host")
    target_auth = auth_config(lookup_credentials(host, env=env))
    done: list[MirroredBase] = []
    for base, source in sorted(bases.items()):
        source_ref = parse_reference(source)
        source_host = source_ref.registry or DOCKER_HUB
        source_auth = auth_config(lookup_credentials(source_host, env=env, use_env=False))
        digest = with_retries(
            policy,
            f"checking {source}",
            functools.partial(engine.registry_digest, source, auth=source_auth),
            say,
        )
        if digest is None:
            raise RegistryError(f"base image {source} is not in the source registry")
        mirror = f"{prefix}/{base}"
        present = with_retries(
            policy,
            f"checking {mirror}",
            functools.partial(engine.registry_digest, mirror, auth=target_auth),
            say,
        )
        if present is not None and present in (digest, (recorded or {}).get(mirror)):
            say(f"{mirror}: already holds {present}; skipped")
            done.append(MirroredBase(base, source, digest, mirror, present, copied=False))
            continue
        say(f"copying {source}@{digest} -> {mirror}")
        image_id = with_retries(
            policy,
            f"pull of {source_ref.name}@{digest}",
            functools.partial(engine.pull_by_digest, source_ref.name, digest, auth=source_auth),
            say,
        )
        engine.tag(image_id, mirror)
        mirror_digest = push_verified(engine, mirror, mirror, target_auth, policy, output)
        if mirror_digest != digest:
            say(
                f"note: {mirror} has digest {mirror_digest}, the source {digest} "
                "(the engine re-compressed its layers); the mirror's digest is recorded"
            )
        done.append(MirroredBase(base, source, digest, mirror, mirror_digest, copied=True))
    return done


def select_bases(cells: list[Cell], source_for: Callable[[Cell], str]) -> dict[str, str]:
    """{base path: source reference} for the cells' base images."""
    return {cell.base_image: source_for(cell) for cell in cells}


@dataclass(frozen=True)
class MirroredSet:
    """What `mirror-bases` did: every base copied or found, where, and the lock it recorded them in."""

    done: list[MirroredBase]
    destination: str
    lock_file: Path
    recorded_profile: str | None


def mirror_matrix_bases(
    matrix: Matrix,
    cells: list[Cell],
    *,
    source: ResolvedProfile,
    to: str | None,
    registry: str | None,
    record_profile: str | None,
    policy: RetryPolicy,
    output: Output,
) -> MirroredSet:
    """`mirror-bases`: copy the cells' bases from the `source` profile's registry to `to` (default: the
    target registry's host); with `record_profile`, record the copies' digests in matrix.lock."""
    from builder.build import lock
    from builder.build.engine import Engine

    if record_profile is not None and record_profile not in matrix.spec.mirrors.profiles:
        raise ConfigError(
            f"--profile {record_profile!r}: unknown mirror profile; "
            f"allowed: {', '.join(matrix.spec.mirrors.profiles)}"
        )
    destination = to or resolve_target(matrix.spec.registry.target, registry).host
    path = lock.lock_path(matrix.path)
    recorded = lock.read(path)["bases"].get(record_profile or "", {}) or {}
    done = mirror_bases(
        Engine.connect(),
        select_bases(cells, source.base_image),
        destination,
        policy=policy,
        output=output,
        recorded=recorded,
    )
    if record_profile is not None:
        digests = {item.mirror: item.mirror_digest for item in done}
        refs = {ref: ref for ref in [*recorded, *digests]}
        text, _ = lock.updated_text(path, list(matrix.cells), record_profile, refs, digests.get)
        path.write_text(text, encoding="utf-8")
    return MirroredSet(done, destination, path, record_profile)
