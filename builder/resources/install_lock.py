"""Install exactly a cell's hash lock into the running Python's environment (stdlib only).

Runs INSIDE the image build (copied to /opt/pytorch-cuda-images/install_lock.py) and is imported by the
builder on the host for the same parsing (`parse`): one home for the lock format.

    python -B install_lock.py [--lock FILE] [--only GLOB ...]

installs the lock's pins (those whose name matches a GLOB), less what is installed already at the locked
version, with `pip install --require-hashes --no-deps --no-compile`: no resolver, and a file whose sha256
is not in the lock fails the step with one line, `ERROR: hash mismatch: NAME==VERSION: expected sha256:...
got sha256:... (FILE)`, exit 1. Each call is one image layer: the Dockerfiles put the large CUDA runtime
wheels (`nvidia-*`) in layers of their own beneath torch. Afterwards every file the step wrote gets the
time SOURCE_DATE_EPOCH and no `.pyc` exists, so the same pins give the same layer bytes on any machine.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>\S+?)\s*(?:;[^\\]*)?\\?$"
)
_HASH = re.compile(r"--hash=(sha256:[0-9a-f]{64})")
_VIA_ROOT = re.compile(r"^-r |\(pyproject\.toml\)$")
DEFAULT_LOCK = "/opt/pytorch-cuda-images/requirements.txt"  # where the Dockerfiles COPY the cell's lock
DEFAULT_EPOCH = 315532800  # 1980-01-01, the earliest time a zip file can hold


def normalize(name: str) -> str:
    """PEP 503 name: `Nvidia_CUBLAS` -> `nvidia-cublas`."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Pin:
    """One locked distribution: exact version, allowed sha256 hashes, and who requires it (`via`)."""

    name: str
    version: str
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)
    root: bool = False

    def requirement(self) -> str:
        """The requirements-file entry pip reads in hash-checking mode."""
        return " ".join([f"{self.name}=={self.version}", *(f"--hash={h}" for h in self.hashes)])


class LockError(Exception):
    """A lock file that cannot be read as `uv pip compile --generate-hashes` output."""


def parse(text: str) -> dict[str, Pin]:
    """The pins of a lock file by normalized name (`# via` annotations give who needs each)."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not raw.startswith((" ", "\t")) and not line.startswith("#"):
            match = _PIN.match(line)
            if not match:
                raise LockError(f"line {number}: expected NAME==VERSION, got {line!r}")
            current = Pin(normalize(match["name"]), match["version"])
            pins[current.name] = current
            in_via = False
        elif current is not None and line.startswith("--hash="):
            current.hashes += _HASH.findall(line)
        elif current is not None and line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                _add_via(current, rest)
        elif current is not None and in_via and line.startswith("#   "):
            _add_via(current, line.removeprefix("#").strip())
    for pin in pins.values():
        if not pin.hashes:
            raise LockError(
                f"{pin.name}=={pin.version} has no --hash (the lock must pin every file's sha256)"
            )
    return pins


def _add_via(pin: Pin, text: str) -> None:
    if _VIA_ROOT.search(text):
        pin.root = True
    else:
        pin.via.append(normalize(text.split()[0]))


def installed() -> dict[str, str]:
    """Distributions present in this environment: normalized name -> version."""
    return {normalize(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def mismatch_line(output: str) -> str | None:
    """pip's hash-mismatch report (several lines) as one line naming the package and both hashes."""
    match = re.search(
        r"^\s+(?P<req>\S+==\S+) from (?P<url>\S+)[^\n]*\n\s+Expected sha256 (?P<want>[0-9a-f]+)"
        r"(?:\n\s+Expected\s+or [0-9a-f]+)*\n\s+Got\s+(?P<got>[0-9a-f]+)",
        output,
        re.MULTILINE,
    )
    if not match:
        return None
    filename = urllib.parse.unquote(match["url"].split("#", 1)[0].rsplit("/", 1)[-1])
    return (
        f"ERROR: hash mismatch: {match['req']}: expected sha256:{match['want']} "
        f"got sha256:{match['got']} ({filename})"
    )


def pip_command(python: str) -> list[str]:
    """How to run pip for `python`: its own, or (a venv made --without-pip) the OS's bundled pip wheel."""
    if subprocess.run([python, "-c", "import pip"], capture_output=True, check=False).returncode == 0:
        return [python, "-m", "pip"]
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    bundled = sorted(glob.glob("/usr/share/python-wheels/pip-*.whl"))
    bundled += sorted(glob.glob(f"{sys.base_prefix}/lib/python{version}/ensurepip/_bundled/pip-*.whl"))
    if not bundled:
        raise LockError("no pip in this environment and no bundled pip wheel (python3-venv) to run")
    return [python, f"{bundled[-1]}/pip"]


def install(pins: Sequence[Pin], *, python: str = sys.executable) -> int:
    """pip install exactly these pins (hashes required, no dependencies, no .pyc); 0 or 1."""
    if not pins:
        print("install_lock: nothing to install", flush=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="lock-") as folder:
        requirements = os.path.join(folder, "requirements.txt")
        with open(requirements, "w", encoding="utf-8") as handle:
            handle.write("".join(pin.requirement() + "\n" for pin in pins))
        command = [*pip_command(python), "install", "--no-cache-dir", "--require-hashes", "--no-deps"]
        command += ["--no-compile", "--disable-pip-version-check", "--progress-bar", "off"]
        if os.environ.get("PIP_BUILD_INDEX_URL"):
            command += ["--index-url", os.environ["PIP_BUILD_INDEX_URL"]]
        if os.environ.get("TORCH_INDEX_URL"):  # torch-family wheels; a file not in the lock still fails
            command += ["--extra-index-url", os.environ["TORCH_INDEX_URL"]]
        if os.environ.get("TORCH_FIND_LINKS"):
            command += ["--find-links", os.environ["TORCH_FIND_LINKS"]]
        command += ["-r", requirements]
        print(
            f"install_lock: {len(pins)} pinned distributions: " + " ".join(p.name for p in pins), flush=True
        )
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    sys.stdout.write(done.stdout)
    if done.returncode:
        line = mismatch_line(done.stdout)
        print(line or f"ERROR: pip install of the locked pins failed (exit {done.returncode})", flush=True)
        return 1
    return 0


def settle(root: str, since: float) -> None:
    """Give every file and folder under `root` written since `since` the time SOURCE_DATE_EPOCH (and the
    temp folder too): equal pins give equal layer bytes."""
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", DEFAULT_EPOCH))
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            path = os.path.join(folder, name)
            if os.lstat(path).st_mtime >= since - 1:
                os.utime(path, (epoch, epoch), follow_symlinks=False)
    for path in (root, tempfile.gettempdir()):
        os.utime(path, (epoch, epoch))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install exactly a hash lock (pip, hashes required).")
    parser.add_argument("--lock", default=DEFAULT_LOCK, help="a hash lock (uv pip compile --generate-hashes)")
    parser.add_argument("--only", nargs="*", default=[], help="only the pins whose name matches a glob")
    args = parser.parse_args(argv)
    started = time.time()
    try:
        with open(args.lock, encoding="utf-8") as handle:
            pins = parse(handle.read())
    except (LockError, OSError) as exc:
        print(f"ERROR: {args.lock}: {exc}", flush=True)
        return 1
    chosen = [
        p for p in pins.values() if not args.only or any(fnmatch.fnmatchcase(p.name, g) for g in args.only)
    ]
    present = installed()
    try:
        status = install([pin for pin in chosen if present.get(pin.name) != pin.version])
    except LockError as exc:
        print(f"ERROR: {exc}", flush=True)
        status = 1
    settle(sys.prefix, started)
    return status


if __name__ == "__main__":
    sys.exit(main())
