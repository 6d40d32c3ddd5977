"""What the installer adds outside /opt/edged: the user and group, the config, the unit, and the record of it all.

Every path is taken inside ``root`` (``/`` on the device, the image's root with --root). The
record (/opt/edged/install.json) lets --uninstall remove exactly what was added and keep what an
operator changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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


class RecordError(Exception):
    """The install record is damaged; nothing has been changed."""


MAX_RECORD_BYTES = 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}\.toml")  # a file in PROFILES, never a path
_RECORD_TEXT = ("bundle", "version", "arch")


def _check_record(record: object) -> str | None:
    """What is wrong with a parsed record, or None. Unknown keys are left alone (a newer installer's)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for key, value in record.items():  # group_created and the like: what --uninstall deletes again
        if key.endswith("_created") and not isinstance(value, bool):
            return f"{key[:40]} is not true or false"
    for key in ("config_sha256", "sums_sha256"):
        if key in record and not (isinstance(record[key], str) and _HEX64.fullmatch(record[key])):
            return f"{key} is not a SHA-256"
    if any(key in record and not isinstance(record[key], str) for key in _RECORD_TEXT):
        return f"{', '.join(_RECORD_TEXT)} must be strings"
    profiles = record.get("profiles", {})
    if not isinstance(profiles, dict):
        return "profiles is not an object"
    for name, digest in profiles.items():
        if not _PROFILE_NAME.fullmatch(name) or not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
            return f"profiles lists {name[:100]!r}, which is not a profile file name with its SHA-256"
    return None


def read_record(root: Path) -> dict:
    """What an earlier ./install added here ({} when none did); RecordError when the record is damaged.

    Uninstall removes files by this record, so a damaged one is refused rather than guessed at.
    """
    path = inside(root, RECORD)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RecordError(f"cannot read {RECORD}: {exc.strerror}") from None
    problem = f"over {MAX_RECORD_BYTES} bytes" if len(data) > MAX_RECORD_BYTES else None
    if problem is None:
        try:
            record = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            problem = "not valid JSON (truncated?)"
        else:
            problem = _check_record(record)
    if problem is not None:
        raise RecordError(f"{RECORD} under {root} is damaged ({problem}). It says what the bundle installed, so "
                          "nothing was changed; move it aside to install afresh (then --uninstall keeps the group, "
                          "config and profiles, which it can no longer attribute to the bundle)")
    return record


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
