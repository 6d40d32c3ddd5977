"""Files that decide who is trusted must not be writable by anyone else (like sshd's StrictModes).

A client allow-list, a trust root or the accepted versions that another local user can rewrite,
directly or through a group/world-writable directory or symlink on the way, hands that user the
device. Such a file is refused with an error that says how to fix it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edged.errors import ConfigError

_MAX_SYMLINKS = 40  # as the kernel's ELOOP limit


def _component_problem(path: Path, info: os.stat_result, trusted: set[int]) -> str | None:
    if info.st_uid not in trusted:
        return f"{path} is owned by uid {info.st_uid}, not by root or uid {os.geteuid()}"
    if stat.S_ISLNK(info.st_mode):
        return None  # a symlink's own mode means nothing; its directory and target are checked
    if info.st_mode & 0o022:
        if stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX:
            return None  # sticky (/tmp): others cannot rename or delete what is ours in it
        who = "world" if info.st_mode & 0o002 else "group"
        return f"{path} is {who}-writable (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def unsafe_reason(path: Path) -> str | None:
    """Why someone other than root or this user could change ``path``, or None if nobody can.

    Walks the path as written and, through every symlink, the path it leads to: each component
    must be owned by root or us and not group- or world-writable (sticky directories excepted).
    A missing file is checked as far as its directories exist.
    """
    trusted = {0, os.geteuid()}
    pending = [Path(os.path.abspath(path))]
    hops = 0
    while pending:
        current = pending.pop()
        for component in (current, *current.parents):
            try:
                info = component.lstat()
            except FileNotFoundError:
                continue
            problem = _component_problem(component, info, trusted)
            if problem is not None:
                return problem
            if stat.S_ISLNK(info.st_mode):
                hops += 1
                if hops > _MAX_SYMLINKS:
                    return f"{path}: too many symlinks"
                target = Path(os.readlink(component))
                pending.append(Path(os.path.abspath(component.parent / target)))
    return None


def check_strict(path: Path, what: str) -> None:
    """ConfigError if ``path`` could be changed by another local user (see ``unsafe_reason``)."""
    problem = unsafe_reason(path)
    if problem is not None:
        raise ConfigError(f"refusing the {what} {path}: {problem}; another local user could rewrite it. "
                          "Fix it with chown root (or the daemon's user) and chmod go-w on it and its directories")


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` 0700, or accept it only if it is ours, a real directory and private.

    For a runtime directory under a shared /tmp: another user could have created it first and
    swapped the socket in it, capturing plaintext prompts and forging answers.
    """
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    problem = private_dir_problem(path)
    if problem is not None:
        raise ConfigError(f"refusing the runtime directory {path}: {problem}. Remove it (or set "
                          "XDG_RUNTIME_DIR, or pass --socket in a directory only you can write)")


def private_dir_problem(path: Path) -> str | None:
    """Why ``path`` is not a private directory of this user, or None."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "it does not exist"
    if stat.S_ISLNK(info.st_mode):
        return "it is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "it is not a directory"
    if info.st_uid != os.geteuid():
        return f"it is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"it is group- or world-writable (mode {stat.S_IMODE(info.st_mode):04o})"
    return None
