#!/usr/bin/env python3
"""Benchmark: push the CPU e2e image to a fresh loopback registry, cold (empty registry) then no-op.

The registry is Debian's `docker-registry` on 127.0.0.1 with htpasswd auth behind TLS (a throw-away CA that
the engine trusts through /etc/docker/certs.d), as in tests/integration/test_registry.py. Needs the sandbox
(`make sandbox`) and root; builds 2.13-cpu-debian12 first when it is not there.

    python3 bench/push.py [--tag 2.13-cpu-debian12]

Target: the no-op push (the registry already holds the same content) takes under 1 second.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.cli_timing import timed_cli
from builder.build.engine import Engine
from builder.model import matrix
from builder.model.naming import LOCAL_REPOSITORY, immutable_tag
from builder.output import Output
from builder.publish import push as registry
from builder.publish.credentials import Credentials
from builder.publish.target import parse_target
from tests.integration.loopback_registry import LoopbackRegistry

TARGET_NOOP_SECONDS = 1.0
PINNED = "pci-bench-push:cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="2.13-cpu-debian12")
    args = parser.parse_args()
    cell = matrix.load(REPO / "matrix.yaml").cell(args.tag)
    engine = Engine.connect()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    profile_env = Path(os.environ.get("SANDBOX_DIR", "/var/tmp/pytorch-cuda-images-sandbox")) / "profile.env"
    if profile_env.exists():
        env.update(line.split("=", 1) for line in profile_env.read_text().splitlines() if "=" in line)
        env["MIRROR"] = "local"
    local = f"{LOCAL_REPOSITORY}:{immutable_tag(cell)}"
    source = local
    if not engine.image_exists(local):
        print(f"building {args.tag} first ...", file=sys.stderr)
        _, built = timed_cli("build", args.tag, env=env)
        found = re.search(r"built sha256:([0-9a-f]{12})", built.stderr)
        if built.returncode != 0 or not found:
            print(built.stderr[-3000:], file=sys.stderr)
            return 1
        source = found[1]
    engine.tag(source, PINNED)  # pinned: a concurrent rebuild or untag cannot swap it mid-benchmark
    size_gb = int(engine.image_attrs(PINNED).get("Size", 0)) / 1e9
    output = Output()
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        server = LoopbackRegistry(Path(tmp), tls=True, auth=True)
        target = parse_target(f"{server.host}/pytorch")
        creds = Credentials(server.host, server.user, server.password, source="bench")
        plan = registry.plan_push(cell, target, local=PINNED)
        server.start()
        try:
            policy = registry.RetryPolicy(attempts=3, max_seconds=30)
            started = time.perf_counter()
            cold = registry.push_cell(engine, plan, target, creds, policy=policy, output=output)
            cold_s = time.perf_counter() - started
            started = time.perf_counter()
            noop = registry.push_cell(engine, plan, target, creds, policy=policy, output=output)
            noop_s = time.perf_counter() - started
            cli_env = {
                **env,
                "REGISTRY": f"{server.host}/pytorch",
                "REGISTRY_USERNAME": server.user,
                "REGISTRY_PASSWORD": server.password,
            }
            cli_s, cli_run = timed_cli("push", args.tag, "--image", PINNED, env=cli_env)
        finally:
            server.close()
            digests = [d for d in engine.repo_digests(PINNED) if d.startswith(f"{server.host}/")]
            for reference in (plan.immutable, plan.floating, *digests, PINNED):
                engine.remove_image(reference, keep_parents=True)
    assert not cold.skipped and noop.skipped, (cold.skipped, noop.skipped)
    print(f"image       {plan.local} ({size_gb:.2f} GB), registry {server.host} (TLS + htpasswd)")
    print(f"cold push   {cold_s:8.2f} s  (empty registry, then the floating tag)")
    print(f"no-op push  {noop_s:8.3f} s  ({noop.skipped})")
    print(f"ratio       {cold_s / noop_s:8.0f} x  (cold / no-op)")
    print(
        f"no-op CLI   {cli_s:8.2f} s  (`python -m builder push`, Python start-up included; exit "
        f"{cli_run.returncode})"
    )
    ok = noop_s < TARGET_NOOP_SECONDS and cli_run.returncode == 0
    print(f"target      no-op push < {TARGET_NOOP_SECONDS:.0f} s: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
