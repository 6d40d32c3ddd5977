"""Device identity file handling and the RAM-only prekey ring."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edged.crypto import wire
from edged.crypto.keys import (
    DeviceIdentity,
    PrekeyRing,
    PrekeySchedule,
    load_private_key_file,
    write_private_key_file,
)
from edged.crypto.prekey import verify_prekey_record
from edged.errors import ConfigError

NOW = 1_800_000_000.0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_is_created_with_mode_0600_and_reloaded(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = DeviceIdentity.load_or_create(state)
    path = DeviceIdentity.path_in(state)
    assert _mode(path) == 0o600
    assert _mode(state) == 0o700
    again = DeviceIdentity.load_or_create(state)
    assert again.public_bytes == first.public_bytes
    assert DeviceIdentity.load(state).fingerprint == first.fingerprint == wire.fingerprint(first.public_bytes)
    assert len(first.fingerprint) == 32


def test_identity_signs_verifiably(tmp_path: Path) -> None:
    identity = DeviceIdentity.load_or_create(tmp_path)
    signature = identity.sign(b"message")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(identity.public_bytes).verify(signature, b"message")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_readable_identity_file_is_refused(tmp_path: Path, mode: int) -> None:
    DeviceIdentity.load_or_create(tmp_path)
    os.chmod(DeviceIdentity.path_in(tmp_path), mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        DeviceIdentity.load_or_create(tmp_path)


def test_symlinked_identity_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    write_private_key_file(real, Ed25519PrivateKey.generate())
    (tmp_path / "identity.key").symlink_to(real)
    with pytest.raises(ConfigError, match="regular file"):
        DeviceIdentity.load_or_create(tmp_path)


def test_garbage_identity_file_is_refused(tmp_path: Path) -> None:
    path = DeviceIdentity.path_in(tmp_path)
    path.write_bytes(b"not a key")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="PEM"):
        DeviceIdentity.load(tmp_path)


def test_missing_identity_tells_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="edged keys init"):
        DeviceIdentity.load(tmp_path)


def test_client_key_file_is_0600_and_never_silently_replaced(tmp_path: Path) -> None:
    path = tmp_path / "client.key"
    key = Ed25519PrivateKey.generate()
    write_private_key_file(path, key)
    assert _mode(path) == 0o600
    with pytest.raises(FileExistsError):
        write_private_key_file(path, Ed25519PrivateKey.generate())
    assert load_private_key_file(path).public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    write_private_key_file(path, Ed25519PrivateKey.generate(), overwrite=True)
    assert load_private_key_file(path).public_key().public_bytes_raw() != key.public_key().public_bytes_raw()
    assert [p.name for p in tmp_path.iterdir()] == ["client.key"]  # no temp files left behind


def _ring(schedule: PrekeySchedule | None = None) -> tuple[DeviceIdentity, PrekeyRing]:
    identity = DeviceIdentity(Ed25519PrivateKey.generate())
    return identity, PrekeyRing(identity, "device-1", now=NOW, schedule=schedule)


def test_prekey_record_verifies_and_not_before_is_in_the_past() -> None:
    identity, ring = _ring()
    info = verify_prekey_record(ring.current_record(), identity_pub=identity.public_bytes, device_id="device-1",
                                now=NOW)
    assert info == ring.current_info()
    assert info.not_before == NOW - 60
    assert info.not_after == NOW + 24 * 3600
    assert ring.lookup(info.prekey_id, NOW) is not None


def test_every_start_makes_a_new_prekey() -> None:
    identity, first = _ring()
    second = PrekeyRing(identity, "device-1", now=NOW)
    assert first.current_info().prekey_id != second.current_info().prekey_id
    assert second.lookup(first.current_info().prekey_id, NOW) is None


def test_rotation_schedule_and_deletion() -> None:
    _, ring = _ring()
    old = ring.current_info()
    assert not ring.rotate_if_due(NOW + 12 * 3600 - 1)
    assert ring.rotate_if_due(NOW + 12 * 3600)
    new = ring.current_info()
    assert new.prekey_id != old.prekey_id and len(ring) == 2
    assert ring.lookup(old.prekey_id, NOW + 13 * 3600) is not None  # overlap: old key still opens requests
    delete_at = old.not_after + ring.schedule.keep_after_expiry_s
    assert ring.lookup(old.prekey_id, delete_at - 1) is not None
    assert ring.lookup(old.prekey_id, delete_at) is None
    assert len(ring) == 1
    assert ring.lookup(new.prekey_id, delete_at) is not None


def test_clock_stepping_back_makes_a_new_prekey() -> None:
    _, ring = _ring()
    old = ring.current_info()
    assert ring.rotate_if_due(NOW - 3600)
    assert ring.current_info().not_before < old.not_before


def test_custom_schedule_and_retention() -> None:
    schedule = PrekeySchedule(rotate_every_s=600, valid_for_s=1200, not_before_skew_s=0, keep_after_expiry_s=30)
    _, ring = _ring(schedule)
    assert ring.current_info().not_before == NOW
    assert ring.retention_s == 1230
    assert ring.rotate_if_due(NOW + 600)


def test_schedule_without_overlap_is_refused() -> None:
    with pytest.raises(ValidationError):
        PrekeySchedule(rotate_every_s=3600, valid_for_s=3600)
    with pytest.raises(ValidationError):
        PrekeySchedule(rotate_every_s=3600.5)  # type: ignore[arg-type]


def test_ring_is_safe_under_concurrent_rotation_and_lookup() -> None:
    schedule = PrekeySchedule(rotate_every_s=60, valid_for_s=120, keep_after_expiry_s=0)
    _, ring = _ring(schedule)
    errors: list[BaseException] = []

    def rotate() -> None:
        for step in range(200):
            ring.rotate_if_due(NOW + step * 60)

    def look() -> None:
        try:
            for step in range(200):
                info = ring.current_info()
                ring.lookup(info.prekey_id, NOW + step * 60)
        except BaseException as exc:  # noqa: BLE001 - surface anything to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=rotate), threading.Thread(target=look)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(ring) <= 3
