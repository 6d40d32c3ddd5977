"""Replay cache: atomic check-and-insert, expiry, bounded size that fails closed."""

from __future__ import annotations

import threading

import pytest

from edged.crypto.replay import ReplayCache, ReplayVerdict

CLIENT = b"c" * 32


def test_first_sight_is_fresh_then_replay_until_expiry() -> None:
    cache = ReplayCache()
    assert cache.check_and_insert(CLIENT, b"r" * 16, now=100.0, ttl_s=10.0) is ReplayVerdict.FRESH
    assert cache.check_and_insert(CLIENT, b"r" * 16, now=110.0, ttl_s=10.0) is ReplayVerdict.REPLAY
    assert cache.check_and_insert(CLIENT, b"r" * 16, now=110.001, ttl_s=10.0) is ReplayVerdict.FRESH


def test_key_is_client_and_request_id() -> None:
    cache = ReplayCache()
    assert cache.check_and_insert(CLIENT, b"r" * 16, now=0.0, ttl_s=10.0) is ReplayVerdict.FRESH
    assert cache.check_and_insert(b"d" * 32, b"r" * 16, now=0.0, ttl_s=10.0) is ReplayVerdict.FRESH
    assert cache.check_and_insert(CLIENT, b"s" * 16, now=0.0, ttl_s=10.0) is ReplayVerdict.FRESH
    assert len(cache) == 3


def test_full_cache_fails_closed_until_entries_expire() -> None:
    cache = ReplayCache(max_entries=3)
    for index in range(3):
        assert cache.check_and_insert(CLIENT, bytes([index]) * 16, now=0.0, ttl_s=10.0) is ReplayVerdict.FRESH
    assert cache.check_and_insert(CLIENT, b"x" * 16, now=5.0, ttl_s=10.0) is ReplayVerdict.FULL
    assert cache.check_and_insert(CLIENT, bytes([0]) * 16, now=5.0, ttl_s=10.0) is ReplayVerdict.REPLAY
    assert cache.check_and_insert(CLIENT, b"x" * 16, now=10.5, ttl_s=10.0) is ReplayVerdict.FRESH
    assert cache.purge(10.5) == 1


def test_mixed_ttls_expire_independently() -> None:
    cache = ReplayCache()
    cache.check_and_insert(CLIENT, b"long" * 4, now=0.0, ttl_s=1000.0)
    cache.check_and_insert(CLIENT, b"shrt" * 4, now=0.0, ttl_s=10.0)
    assert cache.purge(11.0) == 1
    assert cache.check_and_insert(CLIENT, b"long" * 4, now=11.0, ttl_s=10.0) is ReplayVerdict.REPLAY


def _insert_concurrently(cache: ReplayCache, req_id: bytes, threads: int) -> list[ReplayVerdict]:
    barrier = threading.Barrier(threads)
    verdicts: list[ReplayVerdict] = []

    def race() -> None:
        barrier.wait()
        verdicts.append(cache.check_and_insert(CLIENT, req_id, now=0.0, ttl_s=60.0))

    workers = [threading.Thread(target=race) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return verdicts


def test_threads_racing_on_one_request_admit_exactly_one() -> None:
    for round_ in range(50):
        verdicts = _insert_concurrently(ReplayCache(), round_.to_bytes(16, "big"), 4)
        assert sorted(v.value for v in verdicts) == ["fresh", "replay", "replay", "replay"]


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayCache(max_entries=0)
