"""The ten device checks of e2e-v1 section 3: round trips and every way a request must be refused."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.crypto import envelope, wire
from edged.crypto.allowlist import AllowList
from edged.crypto.envelope import (
    OpenedRequest,
    TimestampWindow,
    open_request,
    seal_request,
)
from edged.crypto.keys import DeviceIdentity, PrekeyRing, PrekeySchedule
from edged.crypto.replay import ReplayCache
from edged.errors import EnvelopeRejected

NOW = 1_800_000_000.0
DEVICE_ID = "device-1"
REQ_TOPIC = "edged/device-1/req"
RESP_TOPIC = "edged/clients/a/resp"
BODY = b'{"messages":[{"role":"user","content":"What is 2+2?"}],"max_tokens":16}'


@dataclass
class Device:
    """A device with a real identity, prekey ring, allow-list and replay cache."""

    tmp: Path
    identity: DeviceIdentity = field(default_factory=lambda: DeviceIdentity(Ed25519PrivateKey.generate()))
    client: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    replay: ReplayCache = field(default_factory=ReplayCache)

    def __post_init__(self) -> None:
        self.prekeys = PrekeyRing(self.identity, DEVICE_ID, now=NOW)
        self.allow([("a", self.client, "edged/clients/a", None)])

    def allow(self, entries: list[tuple[str, Ed25519PrivateKey, str, str | None]]) -> None:
        lines = []
        for label, key, prefix, expires in entries:
            lines += ["[[clients]]", f'label = "{label}"',
                      f'public_key = "{key.public_key().public_bytes_raw().hex()}"',
                      f'response_prefix = "{prefix}"']
            if expires:
                lines.append(f"expires = {expires}")
        path = self.tmp / "clients.toml"
        path.write_text("\n".join(lines) + "\n")
        self.allow_list = AllowList.load(path)

    def seal(self, *, client: Ed25519PrivateKey | None = None, request_topic: str = REQ_TOPIC,
             resp_topic: str = RESP_TOPIC, body: bytes = BODY, ts_ms: int | None = None,
             identity_pub: bytes | None = None, device_id: str = DEVICE_ID, req_id: bytes | None = None) -> bytes:
        return seal_request(
            client_key=client or self.client, prekey_pub=self.prekeys.current_info().prekey_pub,
            identity_pub=identity_pub or self.identity.public_bytes, device_id=device_id,
            request_topic=request_topic, resp_topic=resp_topic, body=body,
            ts_ms=int(NOW * 1000) if ts_ms is None else ts_ms, req_id=req_id,
        ).request

    def open(self, data: bytes, *, request_topic: str = REQ_TOPIC, now: float = NOW, **kwargs: Any) -> OpenedRequest:
        return open_request(data, device_id=DEVICE_ID, request_topic=request_topic,
                            identity_pub=self.identity.public_bytes, prekeys=self.prekeys,
                            allow_list=self.allow_list, replay=self.replay, now=now, **kwargs)

    def rejected(self, data: bytes, **kwargs: Any) -> str:
        with pytest.raises(EnvelopeRejected) as info:
            self.open(data, **kwargs)
        return info.value.check


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path)


def _forge(device: Device, *, client_pub: bytes, signer: Ed25519PrivateKey, inner_tail: bytes = b"",
           topic_bytes: bytes = RESP_TOPIC.encode(), body: bytes = BODY, raw_inner: bytes | None = None) -> bytes:
    """Hand-build a request, as an attacker may: anyone can HPKE-encrypt to the public prekey."""
    header = wire.RequestHeader(1, 1, 1, device.prekeys.current_info().prekey_id, int(NOW * 1000),
                                b"\x42" * 16).pack()
    info = wire.request_info(DEVICE_ID, REQ_TOPIC, header)
    if raw_inner is None:
        unsigned = client_pub + b"\x07" * 32 + wire.lp16(topic_bytes) + len(body).to_bytes(4, "big") + body
        signature = signer.sign(wire.signature_message(device.identity.public_bytes, info, unsigned))
        raw_inner = unsigned + signature + inner_tail
    prekey_pub = X25519PublicKey.from_public_bytes(device.prekeys.current_info().prekey_pub)
    return header + wire.HPKE_SUITE.encrypt(raw_inner, prekey_pub, info=info)


def test_round_trip_recovers_every_field(device: Device) -> None:
    opened = device.open(device.seal(req_id=b"\x01" * 16))
    assert (opened.body, opened.resp_topic, opened.req_id, opened.client_label) == (BODY, RESP_TOPIC, b"\x01" * 16, "a")
    assert opened.client_pub == device.client.public_key().public_bytes_raw()
    assert opened.ts_ms == int(NOW * 1000)
    assert "What is" not in repr(opened)


def test_local_round_trip(device: Device) -> None:
    device.allow([("a", device.client, "local", None)])
    opened = device.open(device.seal(request_topic="local", resp_topic="local"), request_topic="local")
    assert opened.resp_topic == "local"


def test_every_single_bit_flip_is_rejected_with_a_plausible_check(device: Device) -> None:
    data = device.seal()
    for index in range(len(data)):
        if index < 4:
            allowed = {"version"}
        elif index < 12:
            allowed = {"prekey"}
        elif index < 20:
            allowed = {"timestamp", "decrypt"}
        else:
            allowed = {"decrypt"}
        for bit in range(8):
            mutated = bytearray(data)
            mutated[index] ^= 1 << bit
            assert device.rejected(bytes(mutated)) in allowed, (index, bit)
    assert device.open(data).body == BODY  # the untouched request still works after all that


def test_every_truncation_is_rejected(device: Device) -> None:
    data = device.seal()
    for length in range(len(data)):
        expected = "size" if length < wire.MIN_REQUEST_LEN else "decrypt"
        assert device.rejected(data[:length]) == expected, length


@pytest.mark.parametrize("tail", [b"\x00", b"\x00" * 16, b"garbage"])
def test_trailing_bytes_are_rejected(device: Device, tail: bytes) -> None:
    assert device.rejected(device.seal() + tail) == "decrypt"


def test_minimum_size_boundary(device: Device) -> None:
    assert device.rejected(b"\x01" * (wire.MIN_REQUEST_LEN - 1)) == "size"
    assert device.rejected(b"\x01\x01\x00\x01" + b"\x00" * (wire.MIN_REQUEST_LEN - 4)) == "prekey"


def test_oversize_is_rejected_before_any_cryptography(device: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    class NoCrypto:
        def decrypt(self, *args: Any, **kwargs: Any) -> bytes:
            raise AssertionError("HPKE must not run for an oversized request")

    def no_lookup(*args: Any) -> None:
        raise AssertionError("prekey lookup must not run for an oversized request")

    big = device.seal(body=b"x" * 2000)
    monkeypatch.setattr(envelope, "_SUITE", NoCrypto())
    monkeypatch.setattr(device.prekeys, "lookup", no_lookup)
    assert device.rejected(big, max_size=1024) == "size"
    assert device.rejected(b"\x01\x01\x00\x01" + b"\x00" * (256 * 1024)) == "size"


@pytest.mark.parametrize("offset,value", [(0, 0x00), (0, 0x02), (1, 0x02), (1, 0x00), (3, 0x02), (2, 0x01)])
def test_version_type_and_suite_downgrades_are_rejected(device: Device, offset: int, value: int) -> None:
    data = bytearray(device.seal())
    data[offset] = value
    assert device.rejected(bytes(data)) == "version"


def test_unknown_prekey(device: Device) -> None:
    other = PrekeyRing(device.identity, DEVICE_ID, now=NOW)
    data = seal_request(client_key=device.client, prekey_pub=other.current_info().prekey_pub,
                        identity_pub=device.identity.public_bytes, device_id=DEVICE_ID, request_topic=REQ_TOPIC,
                        resp_topic=RESP_TOPIC, body=BODY, ts_ms=int(NOW * 1000)).request
    assert device.rejected(data) == "prekey"


def test_expired_prekey_is_gone_after_not_after_plus_window(device: Device) -> None:
    schedule = PrekeySchedule()
    data = device.seal()
    late = device.prekeys.current_info().not_after + schedule.keep_after_expiry_s
    window = TimestampWindow(past_s=3600, future_s=600)
    assert device.rejected(data, now=late, window=window) == "prekey"
    assert device.prekeys.rotate_if_due(late)
    assert device.rejected(data, now=late, window=window) == "prekey"


@pytest.mark.parametrize("age_s,accepted", [(0, True), (120, True), (120.001, False), (-30, True), (-30.001, False),
                                            (3600, False), (-3600, False)])
def test_timestamp_window_edges(device: Device, age_s: float, accepted: bool) -> None:
    data = device.seal(ts_ms=round((NOW - age_s) * 1000))
    if accepted:
        assert device.open(data).body == BODY
    else:
        assert device.rejected(data) == "timestamp"


def test_topic_rerouted_by_the_broker(device: Device) -> None:
    assert device.rejected(device.seal(), request_topic="edged/device-2/req") == "decrypt"


def test_sealed_for_another_device_id(device: Device) -> None:
    assert device.rejected(device.seal(device_id="device-2")) == "decrypt"


def test_unknown_client(device: Device) -> None:
    assert device.rejected(device.seal(client=Ed25519PrivateKey.generate())) == "client"


def test_expired_client(device: Device) -> None:
    device.allow([("a", device.client, "edged/clients/a", "2027-01-15T08:00:00Z")])
    assert device.rejected(device.seal()) == "client"


def test_signature_by_another_key_than_the_claimed_client(device: Device) -> None:
    forged = _forge(device, client_pub=device.client.public_key().public_bytes_raw(),
                    signer=Ed25519PrivateKey.generate())
    assert device.rejected(forged) == "signature"


def test_signature_made_for_another_device_identity(device: Device) -> None:
    other_identity = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert device.rejected(device.seal(identity_pub=other_identity)) == "signature"


@pytest.mark.parametrize("inner_tail,topic", [
    (b"\x00", RESP_TOPIC.encode()),        # trailing byte after the signature
    (b"", b"\xff\xfe/resp"),                # topic not UTF-8
    (b"", b"t" * 513),                      # topic longer than 512 bytes
])
def test_strict_inner_parse(device: Device, inner_tail: bytes, topic: bytes) -> None:
    forged = _forge(device, client_pub=device.client.public_key().public_bytes_raw(), signer=device.client,
                    inner_tail=inner_tail, topic_bytes=topic)
    assert device.rejected(forged) == "parse"


@pytest.mark.parametrize("declared", [len(BODY) - 1, len(BODY) + 1, 0xFFFFFFFF])
def test_inner_body_length_must_be_exact(device: Device, declared: int) -> None:
    pub = device.client.public_key().public_bytes_raw()
    inner = pub + bytes(32) + wire.lp16(RESP_TOPIC.encode()) + declared.to_bytes(4, "big") + BODY + bytes(64)
    assert device.rejected(_forge(device, client_pub=pub, signer=device.client, raw_inner=inner)) == "parse"


def test_inner_topic_length_running_past_the_end(device: Device) -> None:
    pub = device.client.public_key().public_bytes_raw()
    inner = pub + bytes(32) + (100).to_bytes(2, "big") + bytes(4) + bytes(64)
    assert device.rejected(_forge(device, client_pub=pub, signer=device.client, raw_inner=inner)) == "parse"


def test_parser_refuses_an_inner_shorter_than_its_fixed_fields() -> None:
    with pytest.raises(wire.InnerParseError):
        wire.parse_inner(bytes(wire.MIN_INNER_LEN - 1))


@pytest.mark.parametrize("resp_topic", [
    "edged/clients/b/resp", "edged/clients/ab", "edged/clients", "edged/clients/a/+", "edged/clients/a/#",
    "edged/clients/a/", "edged/clients/a//x", "edged/clients/a/\u0000", "local", "", "/edged/clients/a",
])
def test_response_topic_outside_the_clients_prefix(device: Device, resp_topic: str) -> None:
    assert device.rejected(device.seal(resp_topic=resp_topic)) == "response_topic"


def test_response_topic_equal_to_the_prefix_is_allowed(device: Device) -> None:
    assert device.open(device.seal(resp_topic="edged/clients/a")).resp_topic == "edged/clients/a"


def test_socket_request_must_answer_locally(device: Device) -> None:
    device.allow([("a", device.client, "local", None)])
    data = device.seal(request_topic="local", resp_topic="edged/clients/a/resp")
    assert device.rejected(data, request_topic="local") == "response_topic"


def test_mqtt_client_cannot_use_the_socket(device: Device) -> None:
    data = device.seal(request_topic="local", resp_topic="local")
    assert device.rejected(data, request_topic="local") == "response_topic"


def test_exact_replay_is_rejected(device: Device) -> None:
    data = device.seal()
    device.open(data)
    assert device.rejected(data) == "replay"
    assert device.rejected(data, now=NOW + 100) == "replay"


def test_replay_after_cache_expiry_is_still_stopped_by_the_timestamp(device: Device) -> None:
    data = device.seal()
    device.open(data)
    assert device.rejected(data, now=NOW + 200) == "timestamp"


def test_rejected_requests_never_enter_the_replay_cache(device: Device) -> None:
    data = device.seal(resp_topic="edged/clients/b/x")
    device.rejected(data)
    assert len(device.replay) == 0


def test_full_replay_cache_fails_closed(tmp_path: Path) -> None:
    device = Device(tmp_path, replay=ReplayCache(max_entries=2))
    device.open(device.seal())
    device.open(device.seal())
    assert device.rejected(device.seal()) == "replay"
    assert device.open(device.seal(ts_ms=int((NOW + 200) * 1000)), now=NOW + 200).body == BODY


def _open_concurrently(device: Device, data: bytes, threads: int) -> list[str]:
    barrier = threading.Barrier(threads)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            device.open(data)
            outcomes.append("accepted")
        except EnvelopeRejected as exc:
            outcomes.append(exc.check)

    workers = [threading.Thread(target=attempt) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes


def test_same_request_from_two_threads_is_admitted_once(device: Device) -> None:
    for _ in range(20):
        assert sorted(_open_concurrently(device, device.seal(), 2)) == ["accepted", "replay"]


def test_unsynchronised_clock_with_reject_policy(device: Device) -> None:
    assert device.rejected(device.seal(), clock_synchronised=False, clock_policy="reject") == "timestamp"


def test_unsynchronised_clock_still_checks_socket_requests_normally(device: Device) -> None:
    device.allow([("a", device.client, "local", None)])
    fresh = device.seal(request_topic="local", resp_topic="local")
    assert device.open(fresh, request_topic="local", clock_synchronised=False).resp_topic == "local"
    stale = device.seal(request_topic="local", resp_topic="local", ts_ms=int((NOW - 500) * 1000))
    assert device.rejected(stale, request_topic="local", clock_synchronised=False) == "timestamp"


def test_unsynchronised_clock_with_accept_policy_bounds_replay_by_prekey_retention(device: Device) -> None:
    data = device.seal(ts_ms=int((NOW - 10_000) * 1000))
    kwargs: dict[str, Any] = {"clock_synchronised": False, "clock_policy": "accept-unsynced"}
    assert device.open(data, **kwargs).body == BODY
    later = NOW + 3 * 3600  # far beyond the timestamp window, within the prekey's life
    assert device.rejected(data, now=later, **kwargs) == "replay"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_envelope_rejected(device: Device, data: bytes) -> None:
    with pytest.raises(EnvelopeRejected):
        device.open(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.integers(0, 400), extra=st.binary(max_size=8))
def test_mutated_valid_requests_only_raise_envelope_rejected(device: Device, edits: list[tuple[int, int]],
                                                             cut: int, extra: bytes) -> None:
    original = device.seal(req_id=b"\x99" * 16)
    mutated = bytearray(original[:max(cut, 1)] + extra)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    if bytes(mutated) == original:
        return
    with pytest.raises(EnvelopeRejected):
        device.open(bytes(mutated))
