"""matrix.lock: deterministic text, stale detection, base digests kept when a base cannot be resolved."""

from __future__ import annotations

from pathlib import Path

from builder.build import lock
from builder.model import matrix
from tests.conftest import REPO


def test_shipped_lock_is_current(default_matrix: matrix.Matrix) -> None:
    assert lock.stale_cells(REPO / "matrix.lock", list(default_matrix.cells)) == []


def test_render_is_deterministic(default_matrix: matrix.Matrix) -> None:
    cells = list(default_matrix.cells)
    bases = {"official": {"docker.io/library/debian:12": "sha256:" + "a" * 64}}
    assert lock.render_lock(cells, bases) == lock.render_lock(cells, dict(bases))


def test_stale_cells_name_what_changed(tmp_path: Path, default_matrix: matrix.Matrix) -> None:
    cells = list(default_matrix.cells)
    path = tmp_path / "matrix.lock"
    path.write_text(lock.render_lock(cells[1:], {}).replace("torch: 2.14.1", "torch: 2.14.0"))
    problems = lock.stale_cells(path, cells)
    assert f"{cells[0].tag}: not locked" in problems
    assert any(p.startswith("2.14-cuda13.0-debian12: locked") for p in problems)
    assert lock.stale_cells(path, cells[1:]) != []


def test_update_resolves_bases_and_keeps_unresolvable_ones(
    tmp_path: Path, default_matrix: matrix.Matrix
) -> None:
    cells = list(default_matrix.cells)[:3]
    path = tmp_path / "matrix.lock"
    old = "sha256:" + "1" * 64
    path.write_text(lock.render_lock(cells, {"team": {"reg/library/ubuntu:22.04": old}}))
    new = "sha256:" + "2" * 64
    refs = {"a": "reg/library/debian:12", "b": "reg/library/ubuntu:22.04"}
    text, diff = lock.updated_text(path, cells, "team", refs, lambda ref: new if "debian" in ref else None)
    path.write_text(text)
    data = lock.read(path)
    assert lock.base_digest(data, "team", "reg/library/debian:12") == new
    assert lock.base_digest(data, "team", "reg/library/ubuntu:22.04") == old
    assert "+    reg/library/debian:12: " + new in diff


def test_update_keeps_comments_in_the_lock(tmp_path: Path, default_matrix: matrix.Matrix) -> None:
    cells = list(default_matrix.cells)[:2]
    path = tmp_path / "matrix.lock"
    digest = "sha256:" + "3" * 64
    text = lock.render_lock(cells, {"team": {"reg/library/debian:12": digest}})
    assert text.startswith(lock.HEADER)
    path.write_text(text.replace(f"debian:12: {digest}\n", f"debian:12: {digest}  # pinned for INC-42\n"))
    refs = {"a": "reg/library/debian:12", "b": "reg/library/ubuntu:22.04"}
    new = "sha256:" + "4" * 64
    updated, _ = lock.updated_text(path, cells, "team", refs, lambda ref: None if "debian" in ref else new)
    assert f"    reg/library/debian:12: {digest}  # pinned for INC-42\n" in updated
    assert f"    reg/library/ubuntu:22.04: {new}\n" in updated
    assert updated.startswith(lock.HEADER)
