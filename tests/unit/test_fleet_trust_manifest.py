"""ReleaseVerifier: each trust fault refused with its reason and nothing persisted; the happy path persists first."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.errors import UpdateError
from edged import atomic
from edged.fleet import dsse
from edged.fleet.manifest import (
    RELEASE_PAYLOAD_TYPE,
    AlreadyAccepted,
    ArtifactLimits,
    FleetMembership,
    ReleaseVerifier,
)
from edged.fleet.trust import ExpiryClock, RoleKeys, TrustRoot, TrustStore, public_key_hex, sign_root

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
CLOCK = ExpiryClock(now=lambda: NOW, synced=lambda: True)
ME = FleetMembership(fleet="acme", device_id="pi-07", groups=frozenset({"lab"}), hardware=frozenset({"rpi5"}))
SHA = "ab" * 32


def _keys(count: int) -> list[Ed25519PrivateKey]:
    return [Ed25519PrivateKey.generate() for _ in range(count)]


def _role(keys: list[Ed25519PrivateKey], threshold: int) -> RoleKeys:
    return RoleKeys(threshold=threshold, keys=[public_key_hex(key.public_key()) for key in keys])


class Fleet:
    """A provisioned device state dir plus the operator's keys, for building signed manifests."""

    def __init__(self, state_dir: Path) -> None:
        self.root_keys, self.release_keys = _keys(1), _keys(3)
        root = TrustRoot(
            version=1,
            expires=NOW + timedelta(days=365),
            root=_role(self.root_keys, 1),
            release=_role(self.release_keys, 2),
        )
        self.trust = TrustStore(state_dir, CLOCK)
        self.trust.provision(sign_root(root, self.root_keys))
        self.limits = ArtifactLimits(max_artifact_bytes=1000, max_total_bytes=1500, allowed_formats=["gguf"])
        self.verifier = ReleaseVerifier(self.trust, ME, self.limits)

    def document(self, **changes: Any) -> dict[str, Any]:
        document: dict[str, Any] = {
            "fleet": "acme",
            "channel": "stable",
            "version": 5,
            "expires": "2026-07-01T00:00:00Z",
            "targets": {"devices": [], "groups": [], "hardware": []},
            "artifacts": [{"name": "model.gguf", "size": 900, "sha256": SHA, "format": "gguf"}],
            "chunk_size": 65536,
            "health_check": {"prompt": "Say OK.", "max_tokens": 4, "timeout_s": 30, "expect_nonempty": True},
        }
        document.update(changes)
        return document

    def signed(self, keys: list[Ed25519PrivateKey] | None = None, **changes: Any) -> bytes:
        payload = json.dumps(self.document(**changes)).encode()
        return dsse.sign(RELEASE_PAYLOAD_TYPE, payload, keys if keys is not None else self.release_keys[:2])

    def rejected(self, envelope: bytes) -> str:
        versions_before = self.versions_file()
        with pytest.raises(UpdateError) as caught:
            self.verifier.verify(envelope)
        assert self.versions_file() == versions_before, "a rejected manifest must not change persisted versions"
        return caught.value.reason

    def versions_file(self) -> bytes | None:
        path = self.verifier.versions_path
        return path.read_bytes() if path.exists() else None


@pytest.fixture()
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


def test_happy_path_returns_the_typed_manifest_and_persists_the_version(fleet: Fleet, tmp_path: Path) -> None:
    manifest = fleet.verifier.verify(fleet.signed())
    assert (manifest.channel, manifest.version, manifest.artifacts[0].size) == ("stable", 5, 900)
    assert manifest.health_check is not None and manifest.health_check.max_tokens == 4
    assert fleet.verifier.versions_path == tmp_path / "trust" / "versions.json"
    assert ReleaseVerifier(fleet.trust, ME).highest_versions() == {"stable": 5}


def test_the_version_is_persisted_before_the_manifest_is_returned(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(path: Path, data: bytes, mode: int = 0o644) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(atomic, "write_atomic", disk_full)
    with pytest.raises(OSError):
        fleet.verifier.verify(fleet.signed())  # no manifest, so no download can start unrecorded
    monkeypatch.undo()
    assert fleet.versions_file() is None


def test_channels_count_versions_separately(fleet: Fleet) -> None:
    fleet.verifier.verify(fleet.signed(version=9))
    assert fleet.verifier.verify(fleet.signed(channel="beta", version=1)).version == 1
    assert fleet.verifier.highest_versions() == {"stable": 9, "beta": 1}


@pytest.mark.parametrize("version", [4, 5])
def test_equal_and_lower_versions_are_refused(fleet: Fleet, version: int) -> None:
    fleet.verifier.verify(fleet.signed(version=5, health_check=None))
    assert fleet.rejected(fleet.signed(version=version)) == "version"


def test_the_same_manifest_again_is_refused_as_already_accepted(fleet: Fleet) -> None:
    envelope = fleet.signed()
    fleet.verifier.verify(envelope)
    with pytest.raises(AlreadyAccepted) as caught:
        fleet.verifier.verify(envelope)
    assert caught.value.reason == "version"
    assert fleet.verifier.recheck_accepted(envelope).version == 5
    with pytest.raises(UpdateError):
        fleet.verifier.recheck_accepted(fleet.signed(version=6))


def _with_signatures(envelope: bytes, edit: Callable[[list[Any]], list[Any]]) -> bytes:
    document = json.loads(envelope)
    document["signatures"] = edit(document["signatures"])
    return json.dumps(document).encode()


SIGNATURE_FAULTS: dict[str, Callable[[Fleet], bytes]] = {
    "bad-signature": lambda f: _with_signatures(f.signed(), lambda sigs: [{**sigs[0], "sig": sigs[1]["sig"]}, sigs[1]]),
    "missing-signatures": lambda f: _with_signatures(f.signed(), lambda sigs: []),
    "too-few-distinct": lambda f: f.signed(keys=f.release_keys[:1]),
    "same-key-twice": lambda f: _with_signatures(f.signed(keys=f.release_keys[:1]), lambda sigs: sigs * 3),
    "unknown-keys": lambda f: f.signed(keys=_keys(2)),
    "root-key-is-not-a-release-key": lambda f: f.signed(keys=f.release_keys[:1] + f.root_keys),
}


@pytest.mark.parametrize("fault", SIGNATURE_FAULTS)
def test_signature_faults_are_refused(fleet: Fleet, fault: str) -> None:
    assert fleet.rejected(SIGNATURE_FAULTS[fault](fleet)) == "signature"


def test_a_root_document_is_not_a_release(fleet: Fleet) -> None:
    relabelled = dsse.sign("application/vnd.edged.root+json", json.dumps(fleet.document()).encode(), fleet.release_keys)
    assert fleet.rejected(relabelled) == "payload_type"


@pytest.mark.parametrize("cut", [2, 40, 200])  # 1 would only drop the final newline
def test_a_truncated_envelope_is_malformed(fleet: Fleet, cut: int) -> None:
    assert fleet.rejected(fleet.signed()[:-cut]) == "malformed"


def test_an_oversized_envelope_is_refused(fleet: Fleet) -> None:
    assert fleet.rejected(b" " * (dsse.MAX_ENVELOPE_BYTES + 1)) == "oversize"


@pytest.mark.parametrize(
    "changes",
    [{"version": "6"}, {"expires": "2026-07-01 00:00:00"}, {"surprise": 1}],
)
def test_a_signed_but_malformed_manifest_is_refused(fleet: Fleet, changes: dict[str, Any]) -> None:
    assert fleet.rejected(fleet.signed(**changes)) == "malformed"


def test_malformed_errors_do_not_echo_the_health_prompt(fleet: Fleet) -> None:
    secret = "x" * 2001
    with pytest.raises(UpdateError) as caught:
        fleet.verifier.verify(fleet.signed(health_check={"prompt": secret, "max_tokens": 4, "timeout_s": 30}))
    assert "xxxxxxxx" not in str(caught.value)


@pytest.mark.parametrize(
    "changes",
    [{"targets": {"devices": ["pi-08"]}}, {"targets": {"hardware": ["rpi4"]}}, {"fleet": "globex"}],
)
def test_a_release_for_someone_else_is_refused(fleet: Fleet, changes: dict[str, Any]) -> None:
    assert fleet.rejected(fleet.signed(**changes)) == "target"


def test_an_expired_manifest_is_refused(fleet: Fleet) -> None:
    assert fleet.rejected(fleet.signed(expires="2026-06-01T12:00:00Z")) == "expired"


def test_an_expired_trust_root_refuses_releases(fleet: Fleet) -> None:
    fleet.verifier.clock = ExpiryClock(now=lambda: NOW + timedelta(days=400), synced=lambda: True)
    assert fleet.rejected(fleet.signed(expires="2028-01-01T00:00:00Z")) == "root_expired"


def test_an_unsynced_clock_refuses_by_default_and_nothing_is_persisted(fleet: Fleet) -> None:
    fleet.verifier.clock = ExpiryClock(now=lambda: NOW, synced=lambda: False)
    assert fleet.rejected(fleet.signed()) == "clock"
    fleet.verifier.clock = CLOCK
    assert fleet.verifier.verify(fleet.signed()).version == 5  # the same manifest once time is synced


def test_the_check_order_puts_target_before_version_and_version_before_expiry(fleet: Fleet) -> None:
    fleet.verifier.verify(fleet.signed(version=5))
    stale_and_old = fleet.signed(version=3, expires="2020-01-01T00:00:00Z")
    assert fleet.rejected(stale_and_old) == "version"
    assert fleet.rejected(fleet.signed(version=3, targets={"devices": ["other"]})) == "target"


@pytest.mark.parametrize(
    "artifact",
    [
        {"name": "model.gguf", "size": 1001, "sha256": SHA, "format": "gguf"},
        {"name": "../model.gguf", "size": 10, "sha256": SHA, "format": "gguf"},
        {"name": "model.bin", "size": 10, "sha256": SHA, "format": "pickle"},
    ],
    ids=["over-size-cap", "unsafe-name", "unknown-format"],
)
def test_artifact_limits_are_enforced(fleet: Fleet, artifact: dict[str, Any]) -> None:
    assert fleet.rejected(fleet.signed(artifacts=[artifact])) == "artifact"


def test_a_damaged_versions_file_fails_closed(fleet: Fleet) -> None:
    fleet.verifier.versions_path.write_bytes(b'{"channels": {"stable": {"version": "x"}}}')
    assert fleet.rejected(fleet.signed()) == "state"


def test_a_temp_file_left_by_a_crash_is_ignored(fleet: Fleet) -> None:
    fleet.verifier.verify(fleet.signed(version=5))
    leftover = fleet.verifier.versions_path.parent / ".versions.json.a1b2c3.tmp"
    leftover.write_bytes(b'{"channels": {}}')  # a half-written "reset" must not reopen rollbacks
    assert fleet.rejected(fleet.signed(version=4)) == "version"
    fleet.verifier.verify(fleet.signed(version=6))
    assert not leftover.exists()


def test_release_keys_revoked_by_root_rotation_no_longer_count(fleet: Fleet) -> None:
    new_release = _keys(1)
    root_2 = TrustRoot(
        version=2, expires=NOW + timedelta(days=365), root=_role(fleet.root_keys, 1), release=_role(new_release, 1)
    )
    fleet.trust.rotate(sign_root(root_2, fleet.root_keys))
    assert fleet.rejected(fleet.signed(version=6)) == "signature"
    assert fleet.verifier.verify(fleet.signed(keys=new_release, version=6)).version == 6


def test_no_trust_root_means_no_release(tmp_path: Path) -> None:
    verifier = ReleaseVerifier(TrustStore(tmp_path, CLOCK), ME)
    with pytest.raises(UpdateError) as caught:
        verifier.verify(b"{}")
    assert caught.value.reason == "trust_root"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_the_verifier_only_ever_raises_update_error(fleet: Fleet, data: bytes) -> None:
    with pytest.raises(UpdateError):
        fleet.verifier.verify(data)
    assert fleet.versions_file() is None
