"""Sealed clients cannot starve each other (issue 12 item 4): rate before replay, a bounded share each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.crypto.client import SealedRequest
from edged.crypto.gateway import REPLAY_SHARES, SealedGateway
from edged.crypto.replay import ReplayCache, ReplayVerdict
from edged.crypto.settings import E2ESettings
from edged.errors import Busy, EnvelopeRejected

BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()


def two_clients(tmp_path: Path, rpm: int | None, replay_max_entries: int):
    hog, victim = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    lines = []
    for label, key, limit in (("hog", hog, rpm), ("victim", victim, None)):
        lines.append(f'[[clients]]\nlabel = "{label}"\npublic_key = "{key.public_key().public_bytes_raw().hex()}"\n'
                     f'response_prefix = "local"\n' + (f"requests_per_minute = {limit}\n" if limit else ""))
    (tmp_path / "clients.toml").write_text("\n".join(lines))
    gateway = SealedGateway(E2ESettings(replay_max_entries=replay_max_entries), tmp_path, "dev-1")
    return gateway, hog, victim


def seal(gateway: SealedGateway, key: Ed25519PrivateKey) -> bytes:
    return SealedRequest.build(client_key=key, prekey=gateway.prekeys.current_info(),
                               identity_pub=gateway.identity.public_bytes, request_topic="local",
                               resp_topic="local", body=BODY).data


def test_a_client_over_its_rate_takes_no_replay_entries(tmp_path: Path) -> None:
    gateway, hog, victim = two_clients(tmp_path, rpm=2, replay_max_entries=16)
    for index in range(40):  # far beyond its 2 per minute, and beyond the whole cache
        exchange = gateway.open(seal(gateway, hog), "local")
        if index < 2:
            gateway.admit(exchange)
        else:
            with pytest.raises(Busy):
                gateway.admit(exchange)
    assert len(gateway.replay) == 2
    gateway.admit(gateway.open(seal(gateway, victim), "local"))  # the next client is not refused


def test_a_client_without_a_rate_limit_holds_only_its_share(tmp_path: Path) -> None:
    gateway, hog, victim = two_clients(tmp_path, rpm=None, replay_max_entries=64)
    share = 64 // REPLAY_SHARES
    for _ in range(share):
        gateway.admit(gateway.open(seal(gateway, hog), "local"))
    with pytest.raises(EnvelopeRejected, match="share of the replay cache"):
        gateway.open(seal(gateway, hog), "local")
    for _ in range(share):
        gateway.admit(gateway.open(seal(gateway, victim), "local"))


def test_replay_cache_share_is_released_when_entries_expire() -> None:
    cache = ReplayCache(max_entries=100, max_per_client=2)
    assert cache.check_and_insert(b"a", b"1", now=0.0, ttl_s=10.0) is ReplayVerdict.FRESH
    assert cache.check_and_insert(b"a", b"2", now=0.0, ttl_s=10.0) is ReplayVerdict.FRESH
    assert cache.check_and_insert(b"a", b"3", now=0.0, ttl_s=10.0) is ReplayVerdict.CLIENT_FULL
    assert cache.check_and_insert(b"b", b"1", now=0.0, ttl_s=10.0) is ReplayVerdict.FRESH
    assert cache.check_and_insert(b"a", b"3", now=11.0, ttl_s=10.0) is ReplayVerdict.FRESH
    assert cache.check_and_insert(b"a", b"1", now=11.0, ttl_s=10.0) is ReplayVerdict.FRESH  # expired: new again
