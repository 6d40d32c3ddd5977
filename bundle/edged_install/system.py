"""What the installer adds outside /opt/edged: the user and group, the config, the unit, and the record of it all.

Every path is taken inside ``root`` (``/`` on the device, the image's root with --root). The
record (/opt/edged/install.json) lets --uninstall remove exactly what was added and keep what an
operator changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

PREFIX = "/opt/edged"
VENV = f"{PREFIX}/.venv"
CONFIG = "/etc/edged/edged.toml"
PROFILES = "/etc/edged/profiles"
UNIT = "/etc/systemd/system/edged.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/edged.service"
DOC = "/usr/share/doc/edged"
RECORD = f"{PREFIX}/install.json"
GROUP = "edged"
# The unit's DynamicUser= takes the unit's name as the user name. systemd refuses to start it
# (EILSEQ, status 217/USER) when a static group of that name exists and no static user does, so
# the group that lets local clients in always comes with a system user of the same name.
USER = "edged"


def inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _listed(root: Path, database: str, name: str) -> bool:
    try:
        lines = inside(root, database).read_text().splitlines()
    except FileNotFoundError:
        return False
    return any(line.split(":", 1)[0] == name for line in lines)


def group_exists(root: Path) -> bool:
    return _listed(root, "/etc/group", GROUP)


def user_exists(root: Path) -> bool:
    return _listed(root, "/etc/passwd", USER)


def _prefix(root: Path) -> list[str]:
    # --prefix edits the root's files without chroot, so no binary of the target runs.
    return [] if root == Path("/") else ["--prefix", str(root)]


def _shadow_tool(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise OSError(f"{command[0]} not found (Debian: apt-get install passwd)") from None
    except subprocess.CalledProcessError as exc:
        raise OSError(f"{command[0]} failed: {exc.stderr.strip()}") from None


def add_group(root: Path) -> None:
    _shadow_tool(["groupadd", *_prefix(root), "--system", GROUP])


def add_user(root: Path) -> None:
    """A system user in the group, with no home and no login: the service runs as it."""
    _shadow_tool(["useradd", *_prefix(root), "--system", "--gid", GROUP, "--no-create-home",
                  "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--comment", "edged daemon", USER])


def remove_user(root: Path) -> None:
    subprocess.run(["userdel", *_prefix(root), USER], check=False, capture_output=True)


def remove_group(root: Path) -> None:
    subprocess.run(["groupdel", *_prefix(root), GROUP], check=False, capture_output=True)


def write_file(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_bytes(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def install_profiles(root: Path, source: Path) -> list[str]:
    """Copy the shipped profiles that are not there yet; edited ones stay as the operator left them."""
    added = []
    for profile in sorted(source.glob("*.toml")):
        target = inside(root, f"{PROFILES}/{profile.name}")
        if not target.exists():
            write_file(target, profile.read_bytes(), 0o644)
            added.append(profile.name)
    return added


def enable_unit(root: Path, unit_text: bytes) -> None:
    """What `systemctl enable` does for WantedBy=multi-user.target, without needing systemctl in the root."""
    write_file(inside(root, UNIT), unit_text, 0o644)
    wants = inside(root, WANTS)
    wants.parent.mkdir(parents=True, exist_ok=True)
    if wants.is_symlink() or wants.exists():
        wants.unlink()
    os.symlink(UNIT, wants)


def disable_unit(root: Path) -> None:
    for path in (WANTS, UNIT):
        target = inside(root, path)
        if target.is_symlink() or target.exists():
            target.unlink()


def systemd_running(root: Path) -> bool:
    """sd_booted(3): systemd is PID 1 of the machine being installed (never for an image root)."""
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def systemctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], check=False, capture_output=True, text=True)


def read_record(root: Path) -> dict:
    try:
        return json.loads(inside(root, RECORD).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_record(root: Path, record: dict) -> None:
    write_file(inside(root, RECORD), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), 0o644)


def remove_tree(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        path.unlink()
        return True
    if path.is_dir():
        shutil.rmtree(path)
        return True
    return False
