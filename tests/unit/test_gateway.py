"""The gateway that both transports use: open, admit (rate, body), commands permission, padded chunks."""

import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.crypto.client import SealedRequest
from edged.crypto.gateway import SealedGateway
from edged.crypto.settings import E2ESettings
from edged.errors import BadRequest, Busy, EnvelopeRejected

BODY = {"messages": [{"role": "user", "content": "hi"}]}


def make(tmp_path: Path, pad: bool = False, rpm: int | None = None, commands: bool = False):
    key = Ed25519PrivateKey.generate()
    entry = (f'[[clients]]\nlabel = "c"\npublic_key = "{key.public_key().public_bytes_raw().hex()}"\n'
             f'response_prefix = "local"\n' + (f"requests_per_minute = {rpm}\n" if rpm else "")
             + ("commands = true\n" if commands else ""))
    (tmp_path / "clients.toml").write_text(entry)
    gateway = SealedGateway(E2ESettings(), tmp_path, "dev-1", pad_responses=pad)
    return gateway, key


def seal(gateway: SealedGateway, key, body=BODY) -> SealedRequest:
    return SealedRequest.build(client_key=key, prekey=gateway.prekeys.current_info(),
                               identity_pub=gateway.identity.public_bytes, request_topic="local",
                               resp_topic="local", body=json.dumps(body).encode())


def test_open_admit_and_padded_chunks(tmp_path):
    gateway, key = make(tmp_path, pad=True)
    sealed = seal(gateway, key)
    exchange = gateway.open(sealed.data, "local")
    assert gateway.admit(exchange).messages[0].content == "hi"
    assert not gateway.may_command(exchange)
    sizes = []
    for text in ("a", "a much longer piece of text than the first one"):
        chunk = exchange.seal({"choices": [{"delta": {"content": text}}]}, final=False)
        sizes.append(len(chunk))
        opened = sealed.opener.open(chunk)
        assert json.loads(opened.plaintext)["choices"][0]["delta"]["content"] == text
    assert sizes[0] == sizes[1]  # both fill the same 128-byte bucket: the broker cannot tell them apart
    with pytest.raises(EnvelopeRejected, match="replay"):
        gateway.open(sealed.data, "local")
    assert gateway.rejects == {"replay": 1}


def test_rate_limit_and_bad_body_are_request_errors(tmp_path):
    gateway, key = make(tmp_path, rpm=1, commands=True)
    first = gateway.open(seal(gateway, key).data, "local")
    assert gateway.may_command(first)
    gateway.admit(first)
    with pytest.raises(Busy, match="requests/minute"):
        gateway.admit(gateway.open(seal(gateway, key).data, "local"))
    (tmp_path / "other").mkdir()
    gateway2, key2 = make(tmp_path / "other")
    with pytest.raises(BadRequest):
        gateway2.admit(gateway2.open(seal(gateway2, key2, body={"messages": "nope"}).data, "local"))


def test_maintain_rotates_when_due(tmp_path, monkeypatch):
    gateway, _ = make(tmp_path)
    before = gateway.prekeys.current_record()
    assert gateway.maintain() is False
    later = time.time() + gateway.settings.prekeys.rotate_every_s + 1
    monkeypatch.setattr(time, "time", lambda: later)
    assert gateway.maintain() is True and gateway.prekeys.current_record() != before
