"""The sandbox's QEMU comes from Debian 13 through the signed chain InRelease -> Packages.xz -> .deb, and is
registered with Debian's own binfmt.d line, its interpreter moved to where the sandbox extracted it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import sandbox

# Excerpts of trixie's InRelease (after gpgv) and main/binary-amd64/Packages (2026-11-21).
RELEASE = """Origin: Debian
Codename: trixie
MD5Sum:
 203e1451a4c2e0edf3646a5da3cec2d8  9679304 main/binary-amd64/Packages.xz
SHA256:
 4967137e99422deb3b08e4eab8d6e756abfc826ef2c3744f50c1ab8ed053bf7e 13335627 main/binary-amd64/Packages.gz
 be3d7d96a040eda0505c1808cccc67f183bbc05dff0842c50f88e6c396557412  9679304 main/binary-amd64/Packages.xz
"""
PACKAGES = """Package: qemu-system-x86
Version: 1:10.0.13+ds-0+deb13u1
Filename: pool/main/q/qemu/qemu-system-x86_10.0.13+ds-0+deb13u1_amd64.deb

Package: qemu-user
Source: qemu
Version: 1:10.0.13+ds-0+deb13u1
Filename: pool/main/q/qemu/qemu-user_10.0.13+ds-0+deb13u1_amd64.deb
Size: 71089852
SHA256: ca6ede739327a20ae5a3498230c8a3a9a072c586e131bc6bcc1201eb1725e336
Description: QEMU user mode emulation (static binaries)
 QEMU is a fast processor emulator: currently the package supports Alpha, ARM,
"""
CONF = (
    r":qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
    r":\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
    ":/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF\n"
)


def test_the_signed_release_gives_the_packages_index_sha256() -> None:
    digest = sandbox.release_sha256(RELEASE, "main/binary-amd64/Packages.xz")
    assert digest == "be3d7d96a040eda0505c1808cccc67f183bbc05dff0842c50f88e6c396557412"  # not the MD5
    with pytest.raises(sandbox.SandboxError, match=r"no SHA256 for main/binary-arm64/Packages\.xz"):
        sandbox.release_sha256(RELEASE, "main/binary-arm64/Packages.xz")


def test_the_packages_index_gives_the_deb_and_its_sha256() -> None:
    stanza = sandbox.package_stanza(PACKAGES, "qemu-user")
    assert stanza["Filename"] == "pool/main/q/qemu/qemu-user_10.0.13+ds-0+deb13u1_amd64.deb"
    assert stanza["SHA256"].startswith("ca6ede73")
    with pytest.raises(sandbox.SandboxError, match="lists no qemu-user-static"):
        sandbox.package_stanza(PACKAGES, "qemu-user-static")


def test_debians_binfmt_line_is_registered_with_the_extracted_interpreter() -> None:
    root = Path("/var/tmp/sandbox/qemu/qemu-user_10.0.13+ds-0+deb13u1_amd64")
    line = sandbox.binfmt_line(CONF, root)
    fields = line.split(":")
    assert fields[1] == "qemu-aarch64" and fields[-1] == "OPF"  # F: containers use it without having it
    assert fields[-2] == f"{root}/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
    assert line.startswith(r":qemu-aarch64:M::\x7f\x45\x4c\x46") and "\n" not in line
    with pytest.raises(sandbox.SandboxError, match=r"unexpected binfmt\.d line"):
        sandbox.binfmt_line(":qemu-aarch64:M::magic:mask:relative/path:F", root)
