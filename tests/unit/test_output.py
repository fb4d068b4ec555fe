"""The output object: results on stdout, people's text on stderr, one JSON document with --json."""

from __future__ import annotations

import io
import json
import re
import threading

import pytest

from builder.output import Output


def streams() -> tuple[io.StringIO, io.StringIO]:
    return io.StringIO(), io.StringIO()


def test_results_go_to_stdout_and_progress_to_stderr() -> None:
    stdout, stderr = streams()
    out = Output(stdout=stdout, stderr=stderr)
    out.result("2.13-cpu-debian12")
    out.info("pulling base")
    out.warning("old driver")
    out.error("no engine")
    assert stdout.getvalue() == "2.13-cpu-debian12\n"
    assert stderr.getvalue().splitlines() == ["pulling base", "warning: old driver", "error: no engine"]


def test_json_mode_keeps_stdout_to_one_document() -> None:
    stdout, stderr = streams()
    out = Output(json_mode=True, stdout=stdout, stderr=stderr)
    out.result("image: smoke tests passed in 3.0 s")
    out.document({"passed": True, "checks": [{"name": "python", "status": "pass"}]})
    assert json.loads(stdout.getvalue()) == {"passed": True, "checks": [{"name": "python", "status": "pass"}]}
    assert "smoke tests passed" in stderr.getvalue()
    with pytest.raises(RuntimeError, match="one JSON document"):
        out.document({"again": True})
    with pytest.raises(RuntimeError, match="JSON document"):
        out.raw("text\n")
    assert json.loads(stdout.getvalue())["passed"] is True


def test_markup_is_printed_as_text() -> None:
    stdout, stderr = streams()
    Output(stdout=stdout, stderr=stderr).info("[bold]RUN pip install 'torch[cuda]'[/]")
    assert stderr.getvalue() == "[bold]RUN pip install 'torch[cuda]'[/]\n"


def test_steps_are_timed_and_failures_marked() -> None:
    stdout, stderr = streams()
    out = Output(stdout=stdout, stderr=stderr)
    with out.step("pull base"):
        pass
    with pytest.raises(ValueError), out.step("build"):
        raise ValueError("boom")
    assert [(s.title, s.ok) for s in out.steps] == [("pull base", True), ("build", False)]
    assert all(s.seconds >= 0 for s in out.steps)
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[0].endswith("pull base") and re.search(r"pull base \(\d+\.\d s\)$", lines[1])
    assert lines[1].split()[0] != lines[3].split()[0]  # done and failed look different
    assert stdout.getvalue() == ""


def test_progress_without_a_terminal_shows_nothing() -> None:
    stdout, stderr = streams()
    out = Output(stdout=stdout, stderr=stderr)
    assert not out.live
    with out.progress("2.13-cpu-debian12") as update:
        update(3, 9, "RUN pip install torch")
    assert stderr.getvalue() == "" and stdout.getvalue() == ""


def test_background_output_shares_streams_without_live_displays() -> None:
    stdout, stderr = streams()
    out = Output(stdout=stdout, stderr=stderr, live=True)
    quiet = out.background()
    assert out.live and not quiet.live
    quiet.info("from a worker")
    assert stderr.getvalue() == "from a worker\n"


def test_lines_from_threads_stay_whole() -> None:
    stdout, stderr = streams()
    out = Output(stdout=stdout, stderr=stderr)

    def talk(name: str) -> None:
        for index in range(200):
            out.info(f"{name} line {index} " + "x" * 50)

    workers = [threading.Thread(target=talk, args=(f"cell{n}",)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 800
    assert all(re.fullmatch(r"cell\d line \d+ x{50}", line) for line in lines)
