"""The HTTP API of the daemon (in-process), asked by the official `openai` package over the Unix socket and
TLS; a refused start (its exit code) against an `edged serve` subprocess."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import REPO, DaemonBase
from tests.inprocess import InProcessDaemon

try:  # openai 3.x is built on httpx2; earlier releases on httpx (the same API)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx  # type: ignore[no-redef]

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Name a colour."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edged-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def edged_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=60, check=False)


class Served:
    def __init__(self, daemon: DaemonBase, port: int, cert: Path, key: str) -> None:
        self.daemon, self.port, self.cert, self.key = daemon, port, cert, key
        self.http_socket = daemon.workdir / "http.sock"

    def unix_client(self) -> openai.OpenAI:
        transport = httpx.HTTPTransport(uds=str(self.http_socket))
        return openai.OpenAI(base_url="http://edged/v1", api_key="unused-on-the-unix-socket", max_retries=0,
                             timeout=300, http_client=httpx.Client(transport=transport, timeout=300))

    def tls_client(self, key: str | None = None) -> openai.OpenAI:
        verify = ssl.create_default_context(cafile=str(self.cert))
        return openai.OpenAI(base_url=f"https://127.0.0.1:{self.port}/v1", api_key=key or self.key, max_retries=0,
                             timeout=300, http_client=httpx.Client(verify=verify, timeout=300))

    def raw(self) -> Any:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.http_socket)), base_url="http://edged",
                            timeout=300)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("http")
    cert, tls_key = self_signed(workdir)
    made = edged_cli("keys", "api-key", "new", "tests", "--state-dir", str(workdir / "state"))
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    port = free_port()
    daemon = InProcessDaemon(workdir, "--profile", "balanced", env={
        "EDGED_HTTP__LISTEN": f"127.0.0.1:{port}", "EDGED_HTTP__TLS_CERT": str(cert),
        "EDGED_HTTP__TLS_KEY": str(tls_key)}).start()
    yield Served(daemon, port, cert, key)
    daemon.kill()


def check_chat(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model="edged", messages=MESSAGES, max_tokens=4, temperature=0,
                                            extra_body={"priority": "interactive", "deadline_ms": 240_000})
    assert answer.object == "chat.completion" and answer.choices[0].message.content
    assert answer.usage is not None and 1 <= answer.usage.completion_tokens <= 4
    assert answer.model_extra is not None and answer.model_extra["edged"]["profile"] == "balanced"

    chunks = list(client.chat.completions.create(model="edged", messages=MESSAGES, max_tokens=4, temperature=0,
                                                 stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and len(chunks) >= 2
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.usage is not None and last.model_extra is not None and "ttft_ms" in last.model_extra["edged"]

    models = client.models.list()
    assert len(models.data) == 1 and models.data[0].owned_by == "edged"

    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="edged", messages=MESSAGES, max_tokens=4,
                                       extra_body={"temperature_boost": 3})
    assert refused.value.status_code == 400 and refused.value.code == "bad_request"
    assert "temperature_boost" in refused.value.message


def test_openai_client_over_the_unix_socket(served: Served) -> None:
    check_chat(served.unix_client())


def test_openai_client_over_tls_with_an_api_key(served: Served) -> None:
    check_chat(served.tls_client())
    with pytest.raises(openai.AuthenticationError) as refused:
        served.tls_client("edk_not-a-key").models.list()
    assert refused.value.status_code == 401


def test_health_and_metrics(served: Served) -> None:
    with served.raw() as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ready"
        client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2})
        page = client.get("/metrics")
    assert page.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(page.text) for s in family.samples}
    assert samples[("edged_requests_total", (("outcome", "ok"), ("transport", "http")))] >= 1
    assert samples[("edged_time_to_first_token_seconds_count", ())] >= 1
    assert samples[("edged_model_state", (("state", "ready"),))] == 1
    assert samples[("edged_profile_active", (("profile", "balanced"),))] == 1
    assert any(name == "edged_energy_joules_total" for name, _ in samples)
    assert any(name == "edged_model_info" for name, _ in samples)


def test_hanging_up_mid_stream_cancels_the_request(served: Served) -> None:
    with served.raw() as client:
        with client.stream("POST", "/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "Write a long story about the sea."}],
                "max_tokens": 200, "stream": True}) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    break  # one chunk in: hang up
    logged = served.daemon.wait_for_log(lambda line: line.get("event") == "request" and line.get("transport") == "http"
                                        and line.get("outcome") == "cancelled", timeout=120)
    assert logged["output_tokens"] < 200


def reloads(daemon: DaemonBase, count: int) -> int:
    return sum(1 for line in daemon.log_lines() if line.get("event") == "api keys loaded" and line.get("count") == count)


def wait_reloaded(daemon: DaemonBase, count: int, before: int) -> None:
    deadline = time.monotonic() + 60
    while reloads(daemon, count) <= before:
        assert time.monotonic() < deadline, f"no reload to {count} keys:\n{daemon.log_text()[-3000:]}"
        time.sleep(0.05)


def test_revoked_key_is_refused_after_sighup(served: Served) -> None:
    daemon = served.daemon
    made = edged_cli("keys", "api-key", "new", "short-lived", "--state-dir", str(daemon.state_dir))
    key = made.stdout.strip()
    before = reloads(daemon, 2)
    daemon.send_signal(signal.SIGHUP)
    wait_reloaded(daemon, 2, before)
    assert len(served.tls_client(key).models.list().data) == 1
    listed = edged_cli("keys", "api-key", "list", "--state-dir", str(daemon.state_dir)).stdout
    assert "short-lived" in listed and key not in listed
    before = reloads(daemon, 1)
    assert edged_cli("keys", "api-key", "revoke", "short-lived", "--state-dir", str(daemon.state_dir)).returncode == 0
    daemon.send_signal(signal.SIGHUP)
    wait_reloaded(daemon, 1, before)
    with pytest.raises(openai.AuthenticationError):
        served.tls_client(key).models.list()


def test_non_loopback_listen_without_tls_refuses_to_start(make_daemon: Any) -> None:
    daemon = make_daemon(env={"EDGED_HTTP__LISTEN": f"0.0.0.0:{free_port()}"})
    daemon.start(wait_ready=False)
    assert daemon.proc is not None and daemon.proc.wait(120) == 1
    refusal = daemon.wait_for_log(lambda line: line.get("event") == "cannot start")
    assert "tls_cert" in refusal["error"] and "0.0.0.0" in refusal["error"]
    assert not (daemon.workdir / "http.sock").exists()


def test_http_can_be_switched_off(make_inprocess_daemon: Any) -> None:
    daemon = make_inprocess_daemon(env={"EDGED_HTTP__ENABLED": "false"}).start()
    assert not (daemon.workdir / "http.sock").exists()
    assert not any(line.get("transport") == "http" for line in daemon.log_lines())
    assert daemon.stop() == 0
