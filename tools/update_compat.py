"""Maintainer tool: what PyPI released that builder/resources/compat.yaml lacks, as a diff to review.

    python -m tools.update_compat [--index-url URL | --mirror NAME] [--fail-on-drift] [--json]

Prints the diff (apply it with `git apply`), notes for the reviewer on stderr; never edits the data.
`--json` prints {"current", "diff", "notes"} instead, the file `nightly`/`report render --compat` read.
Pieces: tools.pypi (the index client), tools.wheel_metadata (Range reads), tools.compat_proposal (the edit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from builder.cli import run_cli
from builder.errors import MirrorError
from builder.model import matrix as matrix_mod
from builder.model import profiles
from tools.compat_proposal import (
    DATA_PATH,
    Proposal,
    newer_torch,
    newer_torchvision,
    parse_data,
    propose,
    shipped_data_text,
)
from tools.pypi import PypiJson, SimpleIndex, http_get
from tools.wheel_metadata import Fetch


def check(index_url: str | None = None, data_text: str | None = None, fetch: Fetch = http_get) -> Proposal:
    """Ask PyPI (or the PEP 691 index at `index_url`) what is newer than the data; never writes anything."""
    text = shipped_data_text() if data_text is None else data_text
    data = parse_data(text)
    source: PypiJson | SimpleIndex = (
        SimpleIndex(index_url, fetch=fetch) if index_url else PypiJson(fetch=fetch)
    )
    torch_files = source.releases("torch")
    torch = [source.release("torch", v) for v in newer_torch(data, torch_files)]
    vision_files = source.releases("torchvision")
    vision = [source.release("torchvision", v) for v in newer_torchvision(data, vision_files)]
    proposal = propose(text, torch, vision)
    notes = source.all_notes() if isinstance(source, SimpleIndex) else source.notes
    proposal.notes = notes + proposal.notes
    return proposal


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help=__doc__.splitlines()[0])


@app.command()
def update_compat(
    index_url: Annotated[
        str | None, typer.Option("--index-url", help="A PEP 691 simple index (a mirror) instead of PyPI.")
    ] = None,
    mirror: Annotated[str | None, typer.Option("--mirror", help="Use this mirror profile's PyPI.")] = None,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit 1 when the data lacks a release.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document: current, diff, notes.")] = False,
    matrix: Annotated[
        Path, typer.Option("--matrix", "-m", help="The matrix file (for --mirror).", envvar="MATRIX")
    ] = matrix_mod.DEFAULT_MATRIX,
) -> None:
    """Print what PyPI released that the compat data lacks, as a diff to review; never edits the data."""
    url = index_url or (profiles.resolve(matrix_mod.load(matrix), mirror).pypi if mirror else None)
    try:
        proposal = check(url)
    except MirrorError as exc:
        if as_json:  # the report still shows why there is no diff
            typer.echo(
                json.dumps({"current": False, "diff": "", "notes": [f"compat check could not run: {exc}"]})
            )
        raise
    for note in proposal.notes:
        typer.echo(f"note: {note}", err=True)
    if as_json:
        typer.echo(json.dumps(proposal.to_json(), indent=2))
    elif proposal.current:
        typer.echo("compat data is current")
    else:
        typer.echo(proposal.diff, nl=False)
    if not proposal.current:
        changed = sorted({c.minor for c in proposal.changes}, key=lambda v: tuple(map(int, v.split("."))))
        typer.echo(
            f"{len(proposal.changes)} changes (torch {', '.join(changed)}): review the diff, then apply it "
            f"with `git apply` to {DATA_PATH}",
            err=True,
        )
        if fail_on_drift:
            raise typer.Exit(1)


def main() -> None:
    run_cli(app)


if __name__ == "__main__":
    main()
