"""The shipped unit works on a stock Debian 12 / Raspberry Pi OS (issue 12 item 2).

systemd is not PID 1 here, so the unit is read as text; `systemd-analyze verify` runs when installed.
"""

from __future__ import annotations

import grp
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "edged.service"
# Groups of a stock Debian 12 (base-passwd) that the service may name.
DEBIAN_GROUPS = {"video", "audio", "dialout", "gpio", "render", "plugdev", "input"}


def settings() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        values.setdefault(key, []).append(value)
    return values


def words(key: str) -> list[str]:
    return [word for value in settings().get(key, []) for word in value.split()]


def test_supplementary_groups_exist_on_stock_debian() -> None:
    """`i2c` is not a Debian 12 group: the service failed with 216/GROUP."""
    groups = words("SupplementaryGroups")
    assert "i2c" not in groups
    assert set(groups) <= DEBIAN_GROUPS


# The calls that read the clock state: glibc's adjtimex() is the clock_adjtime syscall (strace on
# Debian 12), clock_adjtime64 on 32-bit ARM. Without systemd-analyze, the groups that hold them.
CLOCK_READ_CALLS = {"adjtimex", "clock_adjtime", "clock_adjtime64"}
GROUPS_WITH_CLOCK_CALLS = {"@clock", "@privileged", "@known"}


def syscall_group(name: str) -> set[str]:
    """The system calls in a seccomp group, nested groups expanded (systemd-analyze), or a name itself."""
    if not name.startswith("@"):
        return {name}
    if shutil.which("systemd-analyze") is None:
        return set(CLOCK_READ_CALLS) if name in GROUPS_WITH_CLOCK_CALLS else set()
    listing = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    calls: set[str] = set()
    for line in listing.splitlines()[1:]:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            calls |= syscall_group(entry)
    return calls


def effective_syscall_filter() -> tuple[bool, set[str]]:
    """(allow_list, calls) as systemd combines the SystemCallFilter= lines: the first line's kind sets
    the default, then each line adds to or removes from the set, in order."""
    allow_list: bool | None = None
    calls: set[str] = set()
    for value in settings().get("SystemCallFilter", []):
        deny = value.startswith("~")
        named = set().union(*(syscall_group(word) for word in value.lstrip("~").split()))
        if allow_list is None:
            allow_list = not deny
        if deny == allow_list:  # a deny line in an allow list, or an allow line in a deny list
            calls -= named
        else:
            calls |= named
    return allow_list is not False, calls


def test_the_clock_state_stays_readable() -> None:
    """ProtectClock= and a filter without the @clock calls make adjtimex(2) fail: no synchronised clock, ever.

    ~@privileged removes all of @clock, so the unit must allow the read calls again after it.
    """
    assert settings().get("ProtectClock", ["no"])[-1] in ("no", "false")
    allow_list, calls = effective_syscall_filter()
    if allow_list:
        assert {"adjtimex", "clock_adjtime"} <= calls, "adjtimex(2) would fail with EPERM under the unit"
    else:
        assert not calls & CLOCK_READ_CALLS
    assert settings().get("CapabilityBoundingSet") == [""]  # and no CAP_SYS_TIME to set it with


def test_no_private_users_so_plaintext_uids_can_match() -> None:
    assert settings().get("PrivateUsers", ["no"])[-1] in ("no", "false")


def test_the_firmware_device_nodes_are_exposed_in_the_private_dev() -> None:
    values = settings()
    allowed = {value.split()[0] for value in values.get("DeviceAllow", [])}
    assert {"/dev/vcio", "/dev/vchiq"} <= allowed
    if values.get("PrivateDevices", ["no"])[-1] == "yes":  # a private /dev shows only what is bound into it
        bound = {path.lstrip("-") for path in words("BindPaths") + words("BindReadOnlyPaths")}
        assert {"/dev/vcio", "/dev/vchiq"} <= bound
    assert values.get("DevicePolicy") == ["closed"]


def test_the_service_group_is_named_for_plaintext_clients() -> None:
    assert settings().get("Group") == ["edged"]
    assert settings().get("RuntimeDirectoryMode") == ["0750"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "edged.service"
    # verify checks that ExecStart= exists; the real one is only there after installation.
    unit.write_text("\n".join("ExecStart=/bin/true" if line.startswith("ExecStart=") else line
                              for line in UNIT.read_text().splitlines()) + "\n")
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    if any(name == "video" for name in (g.gr_name for g in grp.getgrall())):
        assert "video" in words("SupplementaryGroups")
