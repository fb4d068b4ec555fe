#!/usr/bin/env python3
"""Regenerate the golden files of tests/unit/test_render.py.

For every tag in tests/golden/tags.txt, render the cell from the default matrix.yaml with templates/ and
write its Dockerfile and cell.json into tests/golden/<tag>/. Golden folders of tags no longer listed are
removed. Run it after an intended change to templates/, builder/render.py or the compat data, then read
the diff (`git diff tests/golden`) before committing it.

    python3 scripts/update-golden.py           rewrite the golden files
    python3 scripts/update-golden.py --check   exit 1 naming each golden file that differs
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from builder.build.render import SHIPPED_TEMPLATES

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
TAGS_FILE = GOLDEN / "tags.txt"
GOLDEN_FILES = ("Dockerfile", "cell.json")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def golden_tags() -> list[str]:
    """The tags listed in tests/golden/tags.txt (comments and blank lines skipped)."""
    lines = TAGS_FILE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def render_golden() -> dict[str, dict[str, bytes]]:
    """tag -> {name: bytes} for every golden tag, rendered from the default matrix and templates/."""
    from builder.build.render import Renderer
    from builder.model import matrix

    m = matrix.load(REPO / "matrix.yaml")
    renderer = Renderer(SHIPPED_TEMPLATES)
    out: dict[str, dict[str, bytes]] = {}
    for tag in golden_tags():
        files = renderer.files(m.cell(tag))
        out[tag] = {name: files[name] for name in GOLDEN_FILES}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="Only report golden files that differ.")
    args = parser.parse_args(argv)

    from builder.errors import BuilderError

    try:
        rendered = render_golden()
    except BuilderError as exc:
        for line in exc.lines:
            print(f"error: {line}", file=sys.stderr)
        return exc.exit_code

    differing: list[Path] = []
    for tag, files in rendered.items():
        for name, content in files.items():
            path = GOLDEN / tag / name
            if path.exists() and path.read_bytes() == content:
                continue
            differing.append(path)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
    orphans = [p for p in sorted(GOLDEN.iterdir()) if p.is_dir() and p.name not in rendered]
    for orphan in orphans:
        differing.append(orphan)
        if not args.check:
            shutil.rmtree(orphan)

    for path in differing:
        verb = "differs" if args.check else ("removed" if path in orphans else "updated")
        print(f"{verb}: {path.relative_to(REPO)}")
    if args.check:
        return 1 if differing else 0
    print(f"{len(rendered)} golden cells in {GOLDEN.relative_to(REPO)}/ ({len(differing)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
