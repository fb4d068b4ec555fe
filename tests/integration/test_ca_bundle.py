"""A profile's `ca_bundle` is what the build trusts: pip inside the image fetches every package over TLS
from a PyPI mirror on 127.0.0.1 whose certificate is signed by a CA made here, which nothing but the
profile's bundle knows.

- With the bundle (the sandbox's CA bundle plus the test CA), the cell builds, passes its smoke suite and
  is tagged, and the mirror served the torch wheel.
- With the sandbox's bundle alone, the host trusts the test CA (SSL_CERT_FILE, so the preflight passes)
  but the image does not, and the build fails on pip's certificate check.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from tests.integration.conftest import Cli
from tools.sandbox import SandboxInfo

pytestmark = pytest.mark.integration

TAG = "2.13-cpu-debian12"
PROFILE = "test-ca"


@dataclass(frozen=True)
class CaFiles:
    ca_pem: bytes
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(folder: Path) -> CaFiles:
    """A CA and a certificate for 127.0.0.1 signed by it (EC P-256, valid for a day)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("pytorch-cuda-images test CA"))
        .issuer_name(_name("pytorch-cuda-images test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_cert, server_key = folder / "server.crt", folder / "server.key"
    server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return CaFiles(ca_cert.public_bytes(serialization.Encoding.PEM), server_cert, server_key)


def _project(filename: str) -> str | None:
    try:
        return canonicalize_name(parse_wheel_filename(filename)[0])
    except InvalidWheelFilename:
        pass
    try:
        return canonicalize_name(parse_sdist_filename(filename)[0])
    except InvalidSdistFilename:
        return None


def write_simple_index(root: Path, wheels: Path) -> None:
    """A static PEP 503 index of the sandbox's wheel folder: /simple/<project>/ links to /files/<file>."""
    (root / "files").symlink_to(wheels, target_is_directory=True)
    projects: dict[str, list[str]] = {}
    for path in sorted(wheels.iterdir()):
        project = _project(path.name)
        if project:
            projects.setdefault(project, []).append(path.name)
    for project, files in projects.items():
        page = root / "simple" / project / "index.html"
        page.parent.mkdir(parents=True)
        links = "".join(f'<a href="../../files/{name}">{name}</a>\n' for name in files)
        page.write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")


@dataclass
class TlsIndex:
    url: str
    requested: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> CaFiles:
    return make_ca(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture(scope="module")
def tls_index(
    test_ca: CaFiles, sandbox_info: SandboxInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsIndex]:
    """The sandbox's wheels as a PyPI index over HTTPS on 127.0.0.1, its certificate from the test CA."""
    root = tmp_path_factory.mktemp("tls-index")
    write_simple_index(root, sandbox_info.state_dir / "wheels")
    index = TlsIndex(url="")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            index.requested.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(test_ca.server_cert, test_ca.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    index.url = f"https://127.0.0.1:{server.server_address[1]}/simple"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield index
    server.shutdown()
    server.server_close()


def project_with_profile(project: Path, index_url: str, ca_bundle: Path) -> Path:
    """The project's matrix.yaml with a profile whose PyPI and PyTorch index is the TLS mirror."""
    path = project / "matrix.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["mirrors"]["profiles"][PROFILE] = {
        "description": "TLS mirror on 127.0.0.1 signed by a test CA",
        "registry": "${SANDBOX_REGISTRY}",
        "pypi": index_url,
        "pytorch": index_url,
        "ca_bundle": str(ca_bundle),
        "lock_bases": False,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def sandbox_bundle(local_env: dict[str, str]) -> bytes:
    """The CA bundle the `local` profile injects (the host's: TLS may be intercepted here), if any."""
    bundle = local_env.get("SANDBOX_CA_BUNDLE", "")
    return Path(bundle).read_bytes() if bundle else b""


def build_with_profile(
    cli: Cli, project: Path, matrix: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`build TAG` through the test profile, rendered into and logged under the project copy."""
    out = project / "images"
    args = ("--matrix", str(matrix), "--mirror", PROFILE, "--out", str(out), "--runs", str(project / "runs"))
    return cli("build", TAG, *args, extra_env=extra_env)


def test_the_profile_bundle_makes_the_build_trust_the_mirror(
    cli: Cli, local_env: dict[str, str], tls_index: TlsIndex, test_ca: CaFiles, project_copy: Path
) -> None:
    bundle = project_copy / "bundle.pem"
    bundle.write_bytes(sandbox_bundle(local_env) + b"\n" + test_ca.ca_pem)
    matrix = project_with_profile(project_copy, tls_index.url, bundle)
    result = build_with_profile(cli, project_copy, matrix)
    assert result.returncode == 0, result.stderr[-3000:]  # built, smoke-tested and tagged
    fetched = [path for path in tls_index.requested if path.startswith("/files/torch-2.13.0")]
    assert fetched, f"the torch wheel did not come from the TLS mirror: {tls_index.requested[-20:]}"
    assert any(path.startswith("/simple/pip/") for path in tls_index.requested)


def test_without_the_test_ca_the_build_fails_on_the_certificate(
    cli: Cli, local_env: dict[str, str], tls_index: TlsIndex, test_ca: CaFiles, project_copy: Path
) -> None:
    bundle = project_copy / "bundle.pem"
    bundle.write_bytes(sandbox_bundle(local_env) or b"\n")
    matrix = project_with_profile(project_copy, tls_index.url, bundle)
    host_trust = project_copy / "host-trust.pem"
    host_trust.write_bytes(test_ca.ca_pem)
    served_before = len(tls_index.requested)
    # the host trusts the CA, so the preflight passes
    result = build_with_profile(cli, project_copy, matrix, {"SSL_CERT_FILE": str(host_trust)})
    log = project_copy / "runs" / TAG / "build.log"
    text = result.stderr + (log.read_text() if log.is_file() else "")
    assert result.returncode == 1, text[-3000:]
    assert "unreachable" not in result.stderr  # not the host's preflight: pip inside the build
    assert "CERTIFICATE_VERIFY_FAILED" in text, text[-3000:]
    # The host's preflight probe got its page; pip never did (every handshake from the build failed).
    assert tls_index.requested[served_before:] == ["/simple/"]
