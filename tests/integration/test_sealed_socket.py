"""Sealed requests (e2e-v1) over the real Unix socket against the in-process daemon with the real model (issue 3)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from edged.clients.socket import RemoteError
from edged.crypto.client import SealedRequest
from edged.crypto.keys import load_private_key_file
from edged.errors import StreamError
from edged.transports.framing import KIND_SEALED, encode_frame
from tests.e2e_keys import device_identity, new_client

pytestmark = pytest.mark.slow  # starts a daemon or loads a model

BODY = {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 16, "stream": True}


@pytest.fixture(scope="module")
def sealed_daemon(tmp_path_factory):
    from tests.inprocess import InProcessDaemon

    work = tmp_path_factory.mktemp("sealed")
    d = InProcessDaemon(work / "daemon")
    fingerprint, identity_hex = device_identity(d.state_dir)
    client = new_client(work, d.state_dir, "tester", "local")
    mqtt_only = new_client(work, d.state_dir, "mqtt-only", "edged/clients/m")
    stranger = new_client(work, d.state_dir, "stranger", "local", allow=False)
    d.start()
    d.keys = {"fingerprint": fingerprint, "identity": bytes.fromhex(identity_hex), "client": client,
              "mqtt_only": mqtt_only, "stranger": stranger, "work": work}
    yield d
    d.kill()


def seal(d, key_file, body=BODY, **kwargs):
    with d.client() as c:
        prekey, identity = c.fetch_prekey(device_identity=d.keys["identity"])
    return SealedRequest.build(client_key=load_private_key_file(key_file), prekey=prekey, identity_pub=identity,
                               request_topic="local", resp_topic=kwargs.pop("resp_topic", "local"),
                               body=json.dumps(body).encode(), **kwargs)


def test_sealed_request_answered(sealed_daemon):
    d = sealed_daemon
    sealed = seal(d, d.keys["client"].key_file)
    with d.client() as c:
        events = list(c.ask_sealed(sealed.data, sealed.opener))
    assert sealed.opener.complete
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events).strip()
    assert events[-1]["edged"]["profile"]
    line = d.wait_for_log(lambda line: line.get("event") == "request" and line.get("client") == "tester")
    assert line["outcome"] == "ok"
    assert "What is 2+2" not in d.log_text()  # no prompt text in logs


def test_cli_ask_sealed_with_pinned_fingerprint(sealed_daemon):
    d = sealed_daemon
    done = subprocess.run([sys.executable, "-m", "edged", "ask", "--socket", str(d.socket), "--sealed", "--pad",
                           "--client-key", str(d.keys["client"].key_file), "--fingerprint", d.keys["fingerprint"],
                           "--max-tokens", "12", "Say hi"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    wrong = subprocess.run([sys.executable, "-m", "edged", "ask", "--socket", str(d.socket), "--sealed",
                            "--client-key", str(d.keys["client"].key_file), "--fingerprint", "00" * 16, "hi"],
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode != 0 and "fingerprint" in wrong.stderr.lower()


@pytest.mark.parametrize("case, check", [
    ("stranger", "client"),
    ("replay", "replay"),
    ("tampered", "decrypt"),
    ("truncated", "size"),
    ("mqtt_prefix_on_socket", "response_topic"),
    ("stale", "timestamp"),
])
def test_rejected_sealed_request_names_the_check(sealed_daemon, case, check):
    d = sealed_daemon
    keys = d.keys
    if case == "stranger":
        data = seal(d, keys["stranger"].key_file).data
    elif case == "replay":
        sealed = seal(d, keys["client"].key_file)
        with d.client() as c:
            list(c.ask_sealed(sealed.data, sealed.opener))
        data = sealed.data
    elif case == "tampered":
        raw = bytearray(seal(d, keys["client"].key_file).data)
        raw[80] ^= 0x01
        data = bytes(raw)
    elif case == "truncated":
        data = seal(d, keys["client"].key_file).data[:100]
    elif case == "mqtt_prefix_on_socket":
        data = seal(d, keys["mqtt_only"].key_file, resp_topic="edged/clients/m/r1").data
    else:
        data = seal(d, keys["client"].key_file, ts_ms=int((time.time() - 3600) * 1000)).data
    with d.client() as c:
        c.send_raw(encode_frame(KIND_SEALED, data))
        kind, payload = c.read_frame()
        error = json.loads(payload)["error"]
        assert error["code"] == "unauthorized" and error["message"].startswith(check + ":")
        assert c.control("status")["queue"]["running"] == 0  # the connection and the daemon carry on


def test_tampered_response_chunk_is_refused_by_the_client(sealed_daemon):
    d = sealed_daemon
    sealed = seal(d, d.keys["client"].key_file)
    with d.client() as c:
        c.send_raw(encode_frame(KIND_SEALED, sealed.data))
        kind, chunk = c.read_frame()
    flipped = bytearray(chunk)
    flipped[-1] ^= 1
    with pytest.raises(StreamError):
        sealed.opener.open(bytes(flipped))
    assert not sealed.opener.complete


def test_allow_list_reload_on_sighup_keeps_previous_on_error(sealed_daemon):
    from tests.e2e_keys import edged as run_edged

    d = sealed_daemon
    late = new_client(d.keys["work"], d.state_dir, "late", "local", allow=False)
    run_edged("keys", "allow", "add", "--state-dir", str(d.state_dir), "--label", "late", "--public-key",
              late.public_hex, "--response-prefix", "local")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log(lambda line: line.get("event") == "client allow-list loaded" and line.get("clients") == 3)
    sealed = seal(d, late.key_file)
    with d.client() as c:
        assert list(c.ask_sealed(sealed.data, sealed.opener))[-1]["edged"]
    clients = d.state_dir / "clients.toml"
    good = clients.read_text()
    clients.write_text(good + "\n[[clients]]\nlabel = 'broken'\npublic_key = 'zz'\n")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log(lambda line: line.get("event") == "client allow-list reload failed, keeping the previous list")
    sealed = seal(d, late.key_file)
    with d.client() as c:
        assert list(c.ask_sealed(sealed.data, sealed.opener))[-1]["edged"]
    clients.write_text(good)


def test_plaintext_and_sealed_error_answer_for_bad_body(sealed_daemon):
    d = sealed_daemon
    sealed = seal(d, d.keys["client"].key_file, body={"messages": "not a list"})
    with d.client() as c:
        with pytest.raises(RemoteError) as err:
            list(c.ask_sealed(sealed.data, sealed.opener))
    assert err.value.code == "bad_request" and sealed.opener.complete  # the error itself came sealed and FINAL
