"""Fresh Debian 12 roots for installing bundles into, and running commands in them with the network cut.

A root is made once per architecture with mmdebstrap (minbase plus python3, what a bare gateway
has) and cached as a tarball under ~/.cache/edged/roots; each test unpacks its own copy. Foreign
architectures run through qemu-user's binfmt handler (QEMU_CPU picks the emulated CPU).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

DEBIAN_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# Mount /proc and /dev inside a private mount namespace, so they vanish with the command.
ENTER = 'mount -t proc proc "$0/proc" && mount --bind /dev "$0/dev" && exec chroot "$0" "$@"'


def cache_dir() -> Path:
    base = os.environ.get("EDGED_CACHE") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edged")
    return Path(base) / "roots"


def ensure_tools(*commands: str) -> None:
    """Install the Debian packages behind missing commands (the tests run as root, on a fresh Debian 12 too)."""
    packages = {"mmdebstrap": "mmdebstrap", "unshare": "util-linux"}
    missing = sorted({packages[c] for c in commands if shutil.which(c) is None})
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env,
                       capture_output=True)


def root_tarball(arch: str) -> Path:
    """A cached minbase bookworm root with python3 for ``arch`` (about 2 min to make, 80 MB)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"bookworm-{DEBIAN_ARCH[arch]}-python3.tar"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            ensure_tools("mmdebstrap")
            partial = tarball.with_name(tarball.name + ".partial.tar")
            subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", "--include=python3",
                            f"--architectures={DEBIAN_ARCH[arch]}", "bookworm", str(partial)], check=True)
            os.replace(partial, tarball)
    return tarball


def fresh_root(arch: str, into: Path) -> Path:
    into.mkdir(parents=True)
    with tarfile.open(root_tarball(arch)) as archive:
        archive.extractall(into, filter="fully_trusted")  # our own root: device nodes and setuid files stay
    return into


def run_in_root(root: Path, *argv: str, env: dict[str, str] | None = None, timeout: float = 900,
                network: bool = False) -> subprocess.CompletedProcess[str]:
    """``argv`` chrooted into ``root``; without ``network`` in a namespace with only a down loopback."""
    command = ["unshare", "--mount", "--fork", *([] if network else ["--net"]), "sh", "-c", ENTER, str(root), *argv]
    full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                **(env or {})}
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout)


def offline(*argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``argv`` on the host, in a fresh network namespace: no interface but a down loopback."""
    return subprocess.run(["unshare", "--net", *argv], capture_output=True, text=True, timeout=timeout)


# The root bound onto itself noexec: nothing in it can be executed, natively or through qemu-user's binfmt handler.
NOEXEC = 'mount --bind "$0" "$0" && mount -o remount,bind,noexec "$0" && exec "$@"'


def offline_without_running_the_root(root: Path, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``argv`` on the host with the network cut and every file under ``root`` unexecutable (EACCES)."""
    command = ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", NOEXEC, str(root), *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
