"""The verification run's pure parts: which cells this machine serves, and what a record reads."""

from __future__ import annotations

from builder.model import matrix
from tools import verify


def test_servable_cells_are_debian12_pypi_cells_and_the_folder_cpu_cell(
    default_matrix: matrix.Matrix,
) -> None:
    tags = [cell.tag for cell in verify.select(default_matrix.cells, [])]
    defaults = {"2.5": "12.4", "2.6": "12.4", "2.7": "12.6", "2.8": "12.8", "2.9": "12.8", "2.10": "12.8"}
    defaults |= {"2.11": "13.0", "2.12": "13.0", "2.13": "13.0", "2.14": "13.0", "2.15": "13.2"}
    for torch, cuda in defaults.items():
        assert f"{torch}-cuda{cuda}-debian12" in tags
    assert "2.14-cuda13.0-debian12-full" in tags and "2.13-cpu-debian12" in tags
    assert "2.9-cuda12.6-debian12" not in tags  # its wheel lives on download.pytorch.org only
    assert not [tag for tag in tags if "ubuntu" in tag]
    assert tags[0].startswith("2.5-") and tags[-1].startswith("2.15-")  # oldest torch first
    assert verify.select(default_matrix.cells, ["2.14-*"]) == [
        default_matrix.cell("2.14-cuda13.0-debian12"),
        default_matrix.cell("2.14-cuda13.0-debian12-full"),
    ]


def test_pip_downloaded_bytes_sums_the_build_log() -> None:
    log = (
        "  Downloading http://127.0.0.1:3141/root/x/%2Bf/1/torch-2.9.1-cp311.whl (899.7 MB)\n"
        "Step 7/12 : RUN pip install\n"
        "  Downloading numpy-2.4.6-cp311.whl (16.9 MB)\n"
        "  Downloading six-1.17.0-py2.py3-none-any.whl (11 kB)\n"
    )
    assert verify.pip_downloaded_bytes(log) == 899_700_000 + 16_900_000 + 11_000
    assert verify.pip_downloaded_bytes("nothing fetched") == 0


def test_smoke_versions_read_what_the_gate_measured() -> None:
    smoke = {
        "checks": [
            {"name": "torch", "detail": "torch 2.14.1"},
            {"name": "cuda_version", "detail": "torch.version.cuda '13.0'"},
            {"name": "cudnn", "detail": "cuDNN 9.24.0; /opt/venv/.../libcudnn.so.9 reports 9.24.0"},
            {"name": "nccl_version", "detail": "NCCL 2.28.9 (/opt/venv/.../libnccl.so.2)"},
        ]
    }
    assert verify.smoke_versions(smoke) == {
        "torch": "2.14.1",
        "cuda": "13.0",
        "cudnn": "9.24.0",
        "nccl": "2.28.9",
    }
    cpu = {
        "checks": [{"name": "torch", "detail": "torch 2.13.0+cpu"}, {"name": "cudnn", "detail": "cpu cell"}]
    }
    assert verify.smoke_versions(cpu) == {"torch": "2.13.0+cpu"}


def test_reports_show_every_column_and_the_failure_reason(tmp_path) -> None:  # type: ignore[no-untyped-def]
    records = [
        verify.Record(
            "2.14-cuda13.0-debian12", "passed", torch="2.14.1", size_bytes=6_900_000_000, budget_gb=7
        ),
        verify.Record("2.9-cuda12.8-debian12", "passed", size_bytes=7_500_000_000, budget_gb=7.0),
        verify.Record("2.5-cuda12.4-debian12", "failed", torch="2.5.1", detail="smoke: arch_list | x"),
    ]
    table = verify.markdown_table(records)
    assert table.splitlines()[0].startswith(
        "| cell | torch | CUDA | cuDNN | NCCL | size | build time | gate |"
    )
    assert "| 6.90 GB |" in table and "| 7.50 GB (over 7 GB) |" in table
    assert "failed: smoke: arch_list \\| x" in table
    page = verify.write_reports(records, {"cells": 2}, tmp_path)
    text = page.read_text()
    assert "2 of 3 cells passed" in text and 'class="bad"' in text
    assert (tmp_path / "verify.json").exists() and (tmp_path / "table.md").read_text() == table
