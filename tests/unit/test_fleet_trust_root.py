"""Trust root: provisioning, N to N+1 rotation rules, expiry clock policy, atomic persistence."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from edged.errors import ConfigError, UpdateError
from edged import atomic
from edged.fleet import dsse, trust
from edged.fleet.trust import (
    ROOT_PAYLOAD_TYPE,
    ExpiryClock,
    RoleKeys,
    TrustRoot,
    TrustStore,
    encode_root,
    public_key_hex,
    sign_root,
)

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
CLOCK = ExpiryClock(now=lambda: NOW, synced=lambda: True)


def _keys(count: int) -> list[Ed25519PrivateKey]:
    return [Ed25519PrivateKey.generate() for _ in range(count)]


def _role(keys: list[Ed25519PrivateKey], threshold: int) -> RoleKeys:
    return RoleKeys(threshold=threshold, keys=[public_key_hex(key.public_key()) for key in keys])


def _root(
    version: int,
    root_keys: list[Ed25519PrivateKey],
    release_keys: list[Ed25519PrivateKey],
    *,
    expires: datetime = NOW + timedelta(days=365),
    threshold: int = 2,
) -> TrustRoot:
    return TrustRoot(version=version, expires=expires, root=_role(root_keys, threshold), release=_role(release_keys, 1))


@pytest.fixture()
def old_keys() -> list[Ed25519PrivateKey]:
    return _keys(3)


@pytest.fixture()
def store(tmp_path: Path, old_keys: list[Ed25519PrivateKey]) -> TrustStore:
    trust = TrustStore(tmp_path, CLOCK)
    trust.provision(sign_root(_root(1, old_keys, _keys(1)), old_keys[:2]))
    return trust


def _rejected(store: TrustStore, envelope: bytes) -> str:
    before = store.path.read_bytes()
    with pytest.raises(UpdateError) as caught:
        store.rotate(envelope)
    assert store.path.read_bytes() == before, "a rejected root must not be persisted"
    assert TrustStore(store.path.parent.parent, CLOCK).current().version == store.current().version
    return caught.value.reason


def test_provisioned_root_is_persisted_as_the_signed_envelope(store: TrustStore, tmp_path: Path) -> None:
    assert store.path == tmp_path / "trust" / "root.json"
    reloaded = TrustStore(tmp_path, CLOCK).current()
    assert reloaded.version == 1
    assert dsse.parse_envelope(store.path.read_bytes()).payload_type == ROOT_PAYLOAD_TYPE


def test_provisioning_needs_a_threshold_of_its_own_root_keys(tmp_path: Path) -> None:
    keys = _keys(3)
    with pytest.raises(UpdateError) as caught:
        TrustStore(tmp_path, CLOCK).provision(sign_root(_root(1, keys, _keys(1)), keys[:1]))
    assert caught.value.reason == "signature"
    assert not (tmp_path / "trust" / "root.json").exists()


def test_provisioning_again_is_idempotent_but_a_different_root_needs_replace(
    store: TrustStore, old_keys: list[Ed25519PrivateKey]
) -> None:
    same = store.path.read_bytes()
    assert store.provision(same).version == 1
    other_keys = _keys(2)
    other = sign_root(_root(1, other_keys, _keys(1)), other_keys)
    with pytest.raises(UpdateError) as caught:
        store.provision(other)
    assert caught.value.reason == "provisioned"
    assert store.path.read_bytes() == same
    assert store.provision(other, replace=True).root.keys == _role(other_keys, 2).keys


def test_rotation_to_n_plus_one_signed_by_old_and_new_thresholds(
    store: TrustStore, old_keys: list[Ed25519PrivateKey]
) -> None:
    new_keys = _keys(3)
    envelope = sign_root(_root(2, new_keys, _keys(1)), old_keys[:2] + new_keys[1:])
    assert store.rotate(envelope).version == 2
    assert TrustStore(store.path.parent.parent, CLOCK).current().root == _role(new_keys, 2)


def test_rotation_signed_only_by_the_old_root_is_refused(store: TrustStore, old_keys: list[Ed25519PrivateKey]) -> None:
    assert _rejected(store, sign_root(_root(2, _keys(3), _keys(1)), old_keys)) == "signature"


def test_rotation_signed_only_by_the_new_root_is_refused(store: TrustStore) -> None:
    new_keys = _keys(3)
    assert _rejected(store, sign_root(_root(2, new_keys, _keys(1)), new_keys)) == "signature"


def test_rotation_with_one_old_signature_below_threshold_is_refused(
    store: TrustStore, old_keys: list[Ed25519PrivateKey]
) -> None:
    new_keys = _keys(3)
    assert _rejected(store, sign_root(_root(2, new_keys, _keys(1)), old_keys[:1] + new_keys)) == "signature"


@pytest.mark.parametrize("version", [3, 10])
def test_a_version_skip_is_refused(store: TrustStore, old_keys: list[Ed25519PrivateKey], version: int) -> None:
    assert _rejected(store, sign_root(_root(version, old_keys, _keys(1)), old_keys)) == "version"


def test_rollback_to_an_older_or_equal_root_is_refused(store: TrustStore, old_keys: list[Ed25519PrivateKey]) -> None:
    first = store.path.read_bytes()
    store.rotate(sign_root(_root(2, old_keys, _keys(1)), old_keys))
    assert _rejected(store, first) == "version"
    assert _rejected(store, sign_root(_root(2, old_keys, _keys(2)), old_keys)) == "version"


def test_an_expired_new_root_is_refused(store: TrustStore, old_keys: list[Ed25519PrivateKey]) -> None:
    stale = _root(2, old_keys, _keys(1), expires=NOW - timedelta(seconds=1))
    assert _rejected(store, sign_root(stale, old_keys)) == "expired"


def test_a_release_document_is_not_a_root(store: TrustStore, old_keys: list[Ed25519PrivateKey]) -> None:
    relabelled = dsse.sign("application/vnd.edged.release+json", encode_root(_root(2, old_keys, _keys(1))), old_keys)
    assert _rejected(store, relabelled) == "payload_type"


def test_an_expired_current_root_can_still_be_rotated_away(tmp_path: Path) -> None:
    keys = _keys(2)
    store = TrustStore(tmp_path, CLOCK)
    store.provision(sign_root(_root(1, keys, _keys(1), expires=NOW + timedelta(days=1)), keys))
    later = TrustStore(tmp_path, ExpiryClock(now=lambda: NOW + timedelta(days=30), synced=lambda: True))
    renewed = _root(2, keys, _keys(1), expires=NOW + timedelta(days=400))
    assert later.rotate(sign_root(renewed, keys)).version == 2


def test_roots_are_chained_one_version_at_a_time(store: TrustStore, old_keys: list[Ed25519PrivateKey]) -> None:
    keys_2, keys_3 = _keys(2), _keys(2)
    second = sign_root(_root(2, keys_2, _keys(1)), old_keys[:2] + keys_2)
    third = sign_root(_root(3, keys_3, _keys(1)), keys_2 + keys_3)
    assert _rejected(store, third) == "signature"
    assert store.rotate_chain([second, third]).version == 3


def test_unsynced_clock_policy_reject_refuses_and_persists_nothing(
    store: TrustStore, old_keys: list[Ed25519PrivateKey]
) -> None:
    store.clock = ExpiryClock(policy="reject", now=lambda: NOW, synced=lambda: False)
    assert _rejected(store, sign_root(_root(2, old_keys, _keys(1)), old_keys)) == "clock"


def test_unsynced_clock_policy_trust_system_clock_checks_anyway_and_warns(
    store: TrustStore, old_keys: list[Ed25519PrivateKey]
) -> None:
    store.clock = ExpiryClock(policy="trust-system-clock", now=lambda: NOW, synced=lambda: False)
    with capture_logs() as logs:
        assert store.rotate(sign_root(_root(2, old_keys, _keys(1)), old_keys)).version == 2
    assert any(entry["event"] == "expiry checked against unsynced clock" for entry in logs)


def test_the_timesyncd_flag_file_counts_as_a_synced_clock(tmp_path: Path) -> None:
    flag = tmp_path / "run/systemd/timesync/synchronized"
    flag.parent.mkdir(parents=True)
    flag.touch()
    assert trust.system_clock_synced(tmp_path) is True


def test_root_documents_reject_unreachable_thresholds_and_shared_keys() -> None:
    keys = _keys(2)
    with pytest.raises(ValueError, match="threshold"):
        _role(keys, 3)
    with pytest.raises(ValueError, match="both a root key and a release key"):
        TrustRoot(version=1, expires=NOW, root=_role(keys, 1), release=_role(keys[:1], 1))
    with pytest.raises(ValueError, match="timezone"):
        TrustRoot(version=1, expires=datetime(2030, 1, 1), root=_role(keys[:1], 1), release=_role(keys[1:], 1))


def test_a_missing_or_corrupt_root_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no trust root"):
        TrustStore(tmp_path, CLOCK).current()
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "root.json").write_bytes(b'{"payloadType": "x"')
    with pytest.raises(ConfigError, match="invalid"):
        TrustStore(tmp_path, CLOCK).current()


def test_a_temp_file_left_by_a_crash_is_ignored_then_cleaned(
    store: TrustStore, old_keys: list[Ed25519PrivateKey]
) -> None:
    leftover = store.path.parent / ".root.json.k3j2h1.tmp"
    leftover.write_bytes(b"half a root from a crash")
    assert TrustStore(store.path.parent.parent, CLOCK).current().version == 1
    store.rotate(sign_root(_root(2, old_keys, _keys(1)), old_keys))
    assert not leftover.exists()
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["root.json"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temp(
    store: TrustStore, old_keys: list[Ed25519PrivateKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = store.path.read_bytes()

    def power_cut(src: str, dst: str) -> None:
        raise OSError("simulated power cut before rename")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError):
        store.rotate(sign_root(_root(2, old_keys, _keys(1)), old_keys))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["root.json"]


def test_write_atomic_sets_the_requested_mode(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "secret.pem"
    atomic.write_new(target, b"k", mode=0o600)
    assert target.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        atomic.write_new(target, b"other", mode=0o600)
    assert target.read_bytes() == b"k"
