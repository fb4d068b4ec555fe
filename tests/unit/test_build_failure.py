"""A failed build's one line names the failing tool's own error (pip's, apt's), not only the exit code."""

from __future__ import annotations

from builder.build.engine import failure_summary, step_output, tool_error

PIP_STEP = "Step 9/14 : RUN pip install --no-cache-dir torchvision==0.28.0+cpu"
PIP_LOG = [
    "Step 8/14 : ENV PATH=/opt/venv/bin:$PATH",
    " ---> Using cache",
    PIP_STEP,
    " ---> Running in 5e1c0a3d9b2f",
    "Looking in indexes: http://127.0.0.1:8080/simple/",
    "ERROR: Could not find a version that satisfies the requirement torchvision==0.28.0+cpu "
    "(from versions: none)",
    "ERROR: No matching distribution found for torchvision==0.28.0+cpu",
    "The command '/bin/sh -c pip install --no-cache-dir torchvision==0.28.0+cpu' returned a non-zero code: 1",
]
APT_LOG = [
    "Step 4/14 : RUN apt-get update && apt-get install -y --no-install-recommends libfoo9",
    "Reading package lists...",
    "Building dependency tree...",
    "E: Unable to locate package libfoo9",
    "E: Couldn't find any package by glob 'libfoo9'",
    "The command '/bin/sh -c apt-get install -y libfoo9' returned a non-zero code: 100",
]


def test_pip_cause_is_its_last_error_line() -> None:
    assert tool_error(step_output(PIP_LOG)) == "No matching distribution found for torchvision==0.28.0+cpu"


def test_apt_cause_is_the_first_line_of_its_error_run() -> None:
    assert tool_error(step_output(APT_LOG)) == "Unable to locate package libfoo9"


def test_the_last_tool_to_fail_wins() -> None:
    mixed = [*APT_LOG[1:4], "W: apt warning", "ERROR: No matching distribution found for einops==9"]
    assert tool_error(mixed) == "No matching distribution found for einops==9"
    assert tool_error([*mixed, "E: Unable to locate package libbar1"]) == "Unable to locate package libbar1"


def test_colours_are_read_through() -> None:
    """The classic builder wraps a step's stderr in red: `ESC[91mERROR: ...` then `ESC[0m`."""
    coloured = [
        "\x1b[91mERROR: No matching distribution found for pci-no-such-package==0.0.1",
        "\x1b[0m",
        "Removing intermediate container 28adfd198657",
    ]
    assert tool_error(coloured) == "No matching distribution found for pci-no-such-package==0.0.1"


def test_buildkit_prefixes_are_read_through() -> None:
    assert tool_error(["#9 3.412 ERROR: No matching distribution found for x==1"]) == (
        "No matching distribution found for x==1"
    )


def test_no_tool_line_no_cause() -> None:
    assert tool_error(["about-to-fail", "error: something else", "EERROR: not one"]) is None
    assert tool_error([]) is None


def test_only_the_failing_step_is_searched() -> None:
    earlier = ["Step 3/9 : RUN pip install a || true", "ERROR: No matching distribution found for a"]
    assert tool_error(step_output([*earlier, "Step 4/9 : RUN exit 3", "boom"])) is None


def test_summary_quotes_the_tool_and_keeps_step_and_exit_code() -> None:
    error = PIP_LOG[-1]
    line = failure_summary(PIP_STEP, error, step_output(PIP_LOG))
    assert line == (
        f"build failed at {PIP_STEP}: No matching distribution found for torchvision==0.28.0+cpu (exit 1)"
    )
    plain = failure_summary(
        "Step 12/12 : RUN echo about-to-fail && exit 7", "returned a non-zero code: 7", []
    )
    assert plain.endswith(": the command returned a non-zero code: 7")
    assert failure_summary("", "", []) == "build failed at the start: no image produced"
    long_step = "Step 1/2 : RUN " + "x" * 200
    assert len(failure_summary(long_step, "", ["ERROR: boom"]).split(": ", 1)[1]) < 130


def test_a_hash_mismatch_is_the_lock_installers_one_line() -> None:
    """install_lock.py prints one `ERROR: hash mismatch: ...` line after pip's report; nightly quotes it."""
    mismatch = (
        f"ERROR: hash mismatch: torch==2.13.0: expected sha256:{'a' * 64} got sha256:{'c' * 64} (t.whl)"
    )
    output = [
        "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated ...",
        "    torch==2.13.0 from http://127.0.0.1:8080/packages/t.whl (from -r r.txt (line 1)):",
        f"        Expected sha256 {'a' * 64}",
        f"             Got        {'c' * 64}",
        mismatch,
    ]
    assert tool_error(output) == mismatch.removeprefix("ERROR: ")
