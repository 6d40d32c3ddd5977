"""A real mosquitto broker per test (plain, mutual TLS, password + ACL) and its pytest fixtures."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.slowdown import scaled

HOST = "127.0.0.1"
READY_TIMEOUT_S = scaled(10.0)
STOP_TIMEOUT_S = scaled(5.0)
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def find_binary(name: str) -> str | None:
    """mosquitto lives in /usr/sbin, which is not on every user's PATH."""
    return shutil.which(name, path=_SEARCH_PATH)


def require_binaries(*names: str) -> dict[str, str]:
    """Paths of the binaries; skip the test if one is missing, fail instead when CI demands them."""
    found = {name: find_binary(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install mosquitto mosquitto-clients)"
        if os.environ.get("EDGED_REQUIRE_MOSQUITTO") == "1":
            pytest.fail(f"EDGED_REQUIRE_MOSQUITTO=1 but {message}")
        pytest.skip(message)
    return {name: path for name, path in found.items() if path is not None}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files made at test time: a CA, the broker's certificate and one client's."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_name: str


@dataclass(frozen=True)
class BrokerUser:
    """A password-file user and the topic patterns its ACL lets it read and write."""

    name: str
    password: str
    patterns: tuple[str, ...]


def make_tls_files(directory: Path, client_name: str = "device-1") -> TlsFiles:
    """A throw-away CA (P-256, one day) signing a server cert for 127.0.0.1 and a client cert."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate("edged test CA", ca_key, None, ca_key, x509.BasicConstraints(ca=True, path_length=0))
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate(
        "localhost",
        server_key,
        ca_cert,
        ca_key,
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
        x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address(HOST))]),
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    client_cert = _certificate(client_name, client_key, ca_cert, ca_key, client_usage)
    files = TlsFiles(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / f"{client_name}.crt",
        client_key=directory / f"{client_name}.key",
        client_name=client_name,
    )
    for path, cert in ((files.ca_cert, ca_cert), (files.server_cert, server_cert), (files.client_cert, client_cert)):
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    for path, key in ((files.server_key, server_key), (files.client_key, client_key)):
        encoding, pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
        path.write_bytes(key.private_bytes(encoding, pkcs8, serialization.NoEncryption()))
        path.chmod(0o600)
    return files


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *extensions: x509.ExtensionType,
) -> x509.Certificate:
    """A certificate valid from five minutes ago for one day; self-signed when ``issuer`` is None."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    is_ca = issuer is None
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=not is_ca,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=isinstance(extension, x509.BasicConstraints))
    return builder.sign(issuer_key, hashes.SHA256())


class Mosquitto:
    """One ``mosquitto -c <conf>`` on a loopback port of its own; ``stop()`` then ``start()``
    brings it back on the same port (outage tests)."""

    def __init__(self, workdir: Path, *, tls: TlsFiles | None = None, users: Sequence[BrokerUser] = (),
                 persistence: bool = False) -> None:
        self.workdir = workdir
        self.persistence = persistence
        self.tls = tls
        self.users = tuple(users)
        self.port = free_port()
        self.log_path = workdir / "mosquitto.log"
        self.output_path = workdir / "mosquitto.out"  # stderr: config errors come before the log opens
        self.config_path = workdir / "mosquitto.conf"
        self._binaries = require_binaries("mosquitto", *(("mosquitto_passwd",) if users else ()))
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}"

    def user(self, name: str) -> BrokerUser:
        return next(user for user in self.users if user.name == name)

    def start(self) -> Mosquitto:
        """Start the broker and wait (bounded) until it accepts TCP connections."""
        with self.output_path.open("ab") as output:
            self._process = subprocess.Popen(
                [self._binaries["mosquitto"], "-c", str(self.config_path)],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}:\n{self.log_text()}")
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto not listening on port {self.port} after {READY_TIMEOUT_S} s:\n{self.log_text()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)

    def log_text(self) -> str:
        """The broker log (flushed line by line), then anything it printed itself."""
        parts = []
        for path in (self.log_path, self.output_path):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "".join(parts) or "(no log)"

    def _write_config(self) -> None:
        # Started as root, mosquitto switches to user 'mosquitto', who cannot read our tmp files.
        lines = ["user root"] if os.geteuid() == 0 else []
        lines += [
            *(["persistence true", f"persistence_location {self.workdir}/"] if self.persistence
              else ["persistence false"]),
            f"log_dest file {self.log_path}",  # stdout to a file would be block-buffered
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
            f"listener {self.port} {HOST}",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate true",
                "use_identity_as_username true",
                "allow_anonymous false",
            ]
        elif self.users:
            lines += [
                f"password_file {self._write_password_file()}",
                f"acl_file {self._write_acl_file()}",
                "allow_anonymous false",
            ]
        else:
            lines.append("allow_anonymous true")
        self.config_path.write_text("\n".join(lines) + "\n")

    def _write_password_file(self) -> Path:
        path = self.workdir / "passwords"
        for index, user in enumerate(self.users):
            create = ["-c"] if index == 0 else []
            subprocess.run(
                [self._binaries["mosquitto_passwd"], *create, "-b", str(path), user.name, user.password],
                check=True,
                capture_output=True,
                timeout=10,
            )
        path.chmod(0o600)
        return path

    def _write_acl_file(self) -> Path:
        path = self.workdir / "acl"
        lines: list[str] = []
        for user in self.users:
            lines.append(f"user {user.name}")
            lines += [f"topic readwrite {pattern}" for pattern in user.patterns]
        path.write_text("\n".join(lines) + "\n")
        return path


ACL_USERS = (
    BrokerUser("device-1", "device-1-password", ("edged/device-1/#",)),
    BrokerUser("operator", "operator-password", ("edged/#",)),
)


def _running(broker: Mosquitto) -> Iterator[Mosquitto]:
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        # pytest shows teardown output only for a failing test: exactly when the log helps.
        print(f"---- mosquitto log ({broker.config_path}) ----\n{broker.log_text()}")


@pytest.fixture
def mosquitto_plain(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous broker on a free loopback port."""
    yield from _running(Mosquitto(tmp_path / "mosquitto"))


@pytest.fixture
def mosquitto_tls(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that demands a client certificate from its test CA (``broker.tls`` has the files)."""
    require_binaries("mosquitto")
    tls = make_tls_files(tmp_path / "pki")
    yield from _running(Mosquitto(tmp_path / "mosquitto", tls=tls))


@pytest.fixture
def mosquitto_acl(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker with a password file and an ACL: see ACL_USERS for names, passwords, patterns."""
    yield from _running(Mosquitto(tmp_path / "mosquitto", users=ACL_USERS))
