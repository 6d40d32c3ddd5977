"""Clock synchronisation detection (movable root, fake kernel status) and the cached guard."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.crypto.clock import (
    STA_UNSYNC,
    ClockGuard,
    clock_synchronised,
    kernel_clock_status,
)


def _flag(root: Path) -> None:
    flag = root / "run/systemd/timesync/synchronized"
    flag.parent.mkdir(parents=True)
    flag.touch()


def test_timesyncd_flag_file_means_synchronised(tmp_path: Path) -> None:
    _flag(tmp_path)
    assert clock_synchronised(tmp_path, read_kernel_status=lambda: STA_UNSYNC)


@pytest.mark.parametrize("status,expected", [(0, True), (0x2001, True), (STA_UNSYNC, False),
                                             (STA_UNSYNC | 0x1, False), (None, False)])
def test_kernel_status_decides_without_the_flag_file(tmp_path: Path, status: int | None, expected: bool) -> None:
    assert clock_synchronised(tmp_path, read_kernel_status=lambda: status) is expected


def test_real_adjtimex_answers_or_reports_unavailable() -> None:
    status = kernel_clock_status()
    assert status is None or isinstance(status, int)


def test_guard_caches_and_rechecks(tmp_path: Path) -> None:
    calls: list[int] = []
    status = {"value": STA_UNSYNC}

    def read() -> int:
        calls.append(1)
        return status["value"]

    guard = ClockGuard("reject", root=tmp_path, recheck_s=10.0, read_kernel_status=read)
    assert not guard.synchronised(0.0)
    status["value"] = 0
    assert not guard.synchronised(9.9)  # cached
    assert guard.synchronised(10.0)
    assert len(calls) == 2


def test_guard_refuses_unknown_policy() -> None:
    with pytest.raises(ValueError):
        ClockGuard("maybe")  # type: ignore[arg-type]


def test_trust_system_clock_policy_never_asks_the_kernel():
    from edged.crypto.clock import ClockGuard

    def kernel_says_unsynced() -> int:
        raise AssertionError("the trust-system-clock policy must not consult the kernel")

    assert ClockGuard("trust-system-clock", read_kernel_status=kernel_says_unsynced).synchronised(0.0)


class _FakeLibc:
    """adjtimex as the sandbox answers it: -1 (EPERM under ProtectClock/@clock), or a state."""

    def __init__(self, state: int, status: int = 0) -> None:
        self.state, self.status = state, status

    def adjtimex(self, pointer) -> int:  # noqa: ANN001
        pointer._obj.status = self.status
        return self.state


@pytest.mark.parametrize("state,status,expected", [(-1, 0, False), (5, 0, False), (0, STA_UNSYNC, False),
                                                   (0, 0, True), (1, 0x2001, True)])
def test_one_clock_answer_for_e2e_and_updates_where_an_error_means_unsynchronised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: int, status: int, expected: bool) -> None:
    """Issue 12: a failing adjtimex made the update check say "synchronised" while e2e said not."""
    from edged.crypto import clock
    from edged.fleet import trust

    monkeypatch.setattr(clock.ctypes, "CDLL", lambda *_a, **_k: _FakeLibc(state, status))
    assert clock.clock_synchronised(tmp_path) is expected
    assert trust.system_clock_synced(tmp_path) is expected
