"""The installer's record (/opt/edged/install.json): --uninstall removes files by it, so a damaged one is refused."""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bundle"))

from edged_install import system  # noqa: E402

DIGEST = "ab" * 32
GOOD = {"arch": "x86_64", "bundle": "edged-0.1.0-linux-x86_64", "config_sha256": DIGEST, "group_created": True,
        "profiles": {"balanced.toml": DIGEST}, "sums_sha256": DIGEST, "version": "0.1.0"}


def write_raw(root: Path, data: bytes) -> None:
    path = system.inside(root, system.RECORD)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_no_record_means_nothing_was_installed(tmp_path: Path) -> None:
    assert system.read_record(tmp_path) == {}


def test_record_written_is_read_back(tmp_path: Path) -> None:
    system.write_record(tmp_path, GOOD)
    assert system.read_record(tmp_path) == GOOD


def test_unknown_keys_of_a_newer_installer_are_kept(tmp_path: Path) -> None:
    system.write_record(tmp_path, {**GOOD, "added_by_a_later_version": [1, 2]})
    assert system.read_record(tmp_path)["added_by_a_later_version"] == [1, 2]


@pytest.mark.parametrize("data, problem", [
    (json.dumps(GOOD).encode()[:-9], "not valid JSON"),  # truncated
    (b"", "not valid JSON"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[" * 30000 + b"]" * 30000, "not valid JSON"),  # nested past the recursion limit, under the size cap
    (b" " * (system.MAX_RECORD_BYTES + 1), "over 65536 bytes"),
    (b"[]", "not a JSON object"),
    (json.dumps({**GOOD, "group_created": "yes"}).encode(), "group_created is not true or false"),
    (json.dumps({**GOOD, "user_created": 1}).encode(), "user_created is not true or false"),
    (json.dumps({**GOOD, "config_sha256": "abc"}).encode(), "config_sha256 is not a SHA-256"),
    (json.dumps({**GOOD, "sums_sha256": None}).encode(), "sums_sha256 is not a SHA-256"),
    (json.dumps({**GOOD, "version": 2}).encode(), "must be strings"),
    (json.dumps({**GOOD, "profiles": ["balanced.toml"]}).encode(), "profiles is not an object"),
    (json.dumps({**GOOD, "profiles": {"balanced.toml": 5}}).encode(), "'balanced.toml', which is not"),
    # uninstall unlinks PROFILES/<name>: a name that is a path would reach outside /etc/edged/profiles
    (json.dumps({**GOOD, "profiles": {"../../passwd": DIGEST}}).encode(), "'../../passwd', which is not"),
    (json.dumps({**GOOD, "profiles": {"sub/x.toml": DIGEST}}).encode(), "'sub/x.toml', which is not"),
    (json.dumps({**GOOD, "profiles": {"balanced": DIGEST}}).encode(), "'balanced', which is not"),
])
def test_damaged_or_hostile_record_is_refused(tmp_path: Path, data: bytes, problem: str) -> None:
    write_raw(tmp_path, data)
    with pytest.raises(system.RecordError, match="damaged") as raised:
        system.read_record(tmp_path)
    assert problem in str(raised.value) and "move it aside" in str(raised.value)


def test_unreadable_record_is_refused(tmp_path: Path) -> None:
    system.inside(tmp_path, system.RECORD).mkdir(parents=True)  # a directory where the file should be
    with pytest.raises(system.RecordError, match=r"cannot read /opt/edged/install\.json"):
        system.read_record(tmp_path)


# ./install itself: a damaged record stops it before it changes anything.

MACHINES = {"x86_64": 62, "aarch64": 183}


def fake_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "edged-0.1.0-linux-test"
    shutil.copytree(REPO / "bundle/edged_install", bundle / "lib/edged_install")
    shutil.copy2(REPO / "bundle/install", bundle / "install")
    copies = {"config/edged.toml": "bundle/edged.toml", "profiles/balanced.toml": "profiles/balanced.toml",
              "systemd/edged.service": "systemd/edged.service", "doc/operations.md": "docs/operations.md"}
    for name, source in copies.items():
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / source, bundle / name)
    manifest = {"arch": platform.machine(), "version": "0.1.0", "glibc": "2.17", "wheels": [], "installer": "tools"}
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(bundle)}\n"
             for p in sorted(bundle.rglob("*")) if p.is_file()]
    (bundle / "SHA256SUMS").write_text("".join(lines))
    return bundle


def fake_root(tmp_path: Path) -> Path:
    """Enough of a Debian root for the target check: an ELF python3.11 of this machine and a libc version."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    header = b"\x7fELF\x02\x01\x01" + bytes(11) + MACHINES[platform.machine()].to_bytes(2, "little")
    (root / "usr/bin/python3.11").write_bytes(header + bytes(100))
    libc = root / f"usr/lib/{platform.machine()}-linux-gnu/libc.so.6"
    libc.parent.mkdir(parents=True)
    libc.write_bytes(b"\0GNU C Library (Debian GLIBC) stable release version 2.36.\n\0")
    (root / "etc").mkdir()
    (root / "etc/group").write_text("root:x:0:\n")
    # A service user left by an earlier install: the installer keeps existing accounts, so the tests need no useradd.
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nedged:x:999:999::/nonexistent:/usr/sbin/nologin\n")
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.skipif(os.geteuid() != 0, reason="./install runs as root only")
@pytest.mark.skipif(platform.machine() not in MACHINES, reason="the installer knows x86_64 and aarch64")
@pytest.mark.parametrize("action", [[], ["--uninstall"]])
def test_install_and_uninstall_stop_at_a_damaged_record_and_change_nothing(tmp_path: Path, action: list[str]) -> None:
    bundle, root = fake_bundle(tmp_path), fake_root(tmp_path)
    write_raw(root, json.dumps({**GOOD, "profiles": {"../../group": DIGEST}}).encode())
    for name in ("opt/edged/.venv/pyvenv.cfg", "etc/edged/edged.toml", "etc/systemd/system/edged.service"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("installed earlier\n")
    before = tree(root)
    done = subprocess.run([sys.executable, str(bundle / "install"), "--root", str(root), *action],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "install: /opt/edged/install.json under" in done.stderr and "is damaged" in done.stderr
    assert "Traceback" not in done.stderr
    assert tree(root) == before


def load_installer(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """The bundle's ./install as a module (it sets dont_write_bytecode and sys.path: both put back afterwards)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a .pyc in the bundle is a file SHA256SUMS does not list
    monkeypatch.setattr(sys, "path", list(sys.path))
    loader = importlib.machinery.SourceFileLoader("bundle_install", str(bundle / "install"))
    spec = importlib.util.spec_from_loader("bundle_install", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.skipif(platform.machine() not in MACHINES, reason="the installer knows x86_64 and aarch64")
def test_a_unit_that_will_not_start_leaves_a_record_uninstall_can_follow(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bundle, root = fake_bundle(tmp_path), fake_root(tmp_path)
    before = tree(root)
    installer = load_installer(bundle, monkeypatch)
    # Fakes for what needs root or a booted systemd; the record, config, profiles and unit files are real.
    monkeypatch.setattr(system, "add_group", lambda r: (r / "etc/group").write_text("root:x:0:\nedged:x:999:\n"))
    monkeypatch.setattr(system, "remove_group", lambda r: (r / "etc/group").write_text("root:x:0:\n"))
    monkeypatch.setattr(installer, "install_venv", lambda r, *_: system.write_file(
        system.inside(r, f"{system.VENV}/pyvenv.cfg"), b"home = /usr/bin\n", 0o644))
    monkeypatch.setattr(system, "systemd_running", lambda r: True)
    monkeypatch.setattr(system, "systemctl", lambda *a: subprocess.CompletedProcess(
        ["systemctl", *a], 1 if "start" in a else 0, "", "Job for edged.service failed"))
    args = argparse.Namespace(root=root, verify_root=None, force=False)
    with pytest.raises(OSError, match="systemctl could not start edged"):
        installer.install(args)  # type: ignore[attr-defined]
    record = system.read_record(root)
    assert record["group_created"] is True and "balanced.toml" in record["profiles"] and "config_sha256" in record
    assert (root / "etc/systemd/system/edged.service").is_file()

    monkeypatch.setattr(system, "systemd_running", lambda r: False)
    assert installer.uninstall(args) == 0  # type: ignore[attr-defined]
    assert tree(root) == before
