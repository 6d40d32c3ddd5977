"""The target's Python and the venv: written by hand, wheels unpacked by `installer`, nothing run on the target.

A venv is a directory layout (PEP 405): pyvenv.cfg, bin/python* links to the base interpreter and
an empty site-packages. Writing it ourselves instead of running the target's `python3 -m venv`
means no code of the target architecture runs on an image-building host, and Debian's
python3-venv package (ensurepip) is not needed on the device. The wheels were resolved for the
target when the bundle was built, so they are unpacked as they are (pypa's `installer`, shipped
in the bundle), not resolved again.
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import sys
from pathlib import Path

ELF_MACHINES = {62: "x86_64", 183: "aarch64"}
PYTHON = "python3.11"


class TargetError(Exception):
    """The target cannot run this bundle; nothing has been installed."""


def elf_machine(path: Path) -> str:
    with path.open("rb") as handle:
        header = handle.read(20)
    if header[:4] != b"\x7fELF" or header[5] != 1:
        raise TargetError(f"{path} is not a little-endian ELF executable")
    machine = int.from_bytes(header[18:20], "little")
    return ELF_MACHINES.get(machine, f"ELF machine {machine}")


def resolve_in_root(root: Path, path: str) -> Path:
    """``path`` inside ``root``, following symlinks as the target would (absolute links stay in the root)."""
    current = root / path.lstrip("/")
    for _ in range(16):
        if not current.is_symlink():
            return current
        link = os.readlink(current)
        current = root / link.lstrip("/") if link.startswith("/") else current.parent / link
    raise TargetError(f"too many symlinks at {path} in {root}")


def glibc_version(root: Path, arch: str) -> tuple[int, int] | None:
    triplet = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}[arch]
    for candidate in (f"/lib/{triplet}/libc.so.6", f"/usr/lib/{triplet}/libc.so.6"):
        libc = resolve_in_root(root, candidate)
        if libc.is_file():
            match = re.search(rb"GNU C Library [^\n]*?version (\d+)\.(\d+)", libc.read_bytes())
            if match:
                return int(match[1]), int(match[2])
    return None


def check_target(root: Path, manifest: dict) -> str:
    """The base interpreter's path on the target, once it can run the bundle's wheels."""
    base = f"/usr/bin/{PYTHON}"
    interpreter = resolve_in_root(root, base)
    if not interpreter.is_file():
        raise TargetError(f"{root / base.lstrip('/')} not found: the bundle needs Python 3.11 on the target "
                          "(Debian 12 / Raspberry Pi OS bookworm: apt-get install python3)")
    machine = elf_machine(interpreter)
    if machine != manifest["arch"]:
        raise TargetError(f"this bundle is for {manifest['arch']} but {base} on the target is {machine}: "
                          f"use edged-{manifest['version']}-linux-{machine}.tar.gz")
    have = glibc_version(root, manifest["arch"])
    need = tuple(int(part) for part in manifest["glibc"].split("."))
    if have is None:
        raise TargetError("cannot find the target's glibc (libc.so.6); is this a Debian-like root?")
    if have < need:
        raise TargetError(f"the target has glibc {have[0]}.{have[1]}; this bundle's wheels need {manifest['glibc']} "
                          "(Debian 12 / Raspberry Pi OS bookworm or newer)")
    return base


def target_python_version(root: Path) -> str:
    """The patch version for pyvenv.cfg (informational), from dpkg's records when there are any."""
    status = root / "var/lib/dpkg/status"
    if status.is_file():
        match = re.search(r"^Package: python3\.11-minimal\n(?:[^\n]+\n)*?Version: (3\.11\.\d+)",
                          status.read_text(errors="replace"), re.M)
        if match:
            return match[1]
    return "3.11"


def write_venv(staging: Path, base: str, version: str) -> Path:
    """An empty venv at ``staging``; returns its site-packages. Links point at ``base`` as the target sees it."""
    site = staging / "lib" / PYTHON / "site-packages"
    site.mkdir(parents=True)
    (staging / "bin").mkdir()
    (staging / "include").mkdir()
    os.symlink("lib", staging / "lib64")
    os.symlink(base, staging / "bin" / PYTHON)
    os.symlink(PYTHON, staging / "bin" / "python3")
    os.symlink(PYTHON, staging / "bin" / "python")
    (staging / "pyvenv.cfg").write_text(
        f"home = {os.path.dirname(base)}\ninclude-system-site-packages = false\nversion = {version}\n"
        f"executable = {base}\n")
    return site


def install_wheels(wheels: list[Path], staging: Path, site: Path, prefix: str) -> None:
    """Unpack each wheel into the staging venv; scripts get ``<prefix>/bin/python`` as interpreter."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.sources import WheelFile

    scheme = {"purelib": str(site), "platlib": str(site), "scripts": str(staging / "bin"),
              "data": str(staging), "headers": str(staging / "include" / "site" / PYTHON)}
    destination = SchemeDictionaryDestination(scheme, interpreter=f"{prefix}/bin/python", script_kind="posix")
    for wheel in wheels:
        with WheelFile.open(wheel) as source:
            install(source, destination, {"INSTALLER": b"edged-bundle\n"})


def compile_bytecode(site: Path, final_site: str) -> bool:
    """Compile .pyc files as the target will find them; only a 3.11 host makes 3.11 bytecode."""
    if sys.version_info[:2] != (3, 11):
        return False
    return bool(compileall.compile_dir(str(site), ddir=final_site, quiet=2, workers=1))


def swap_into_place(staging: Path, final: Path) -> None:
    """Replace the old venv by the new one; a failure before this point leaves the old one running."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.rename(final, old)
    os.rename(staging, final)
    if old.exists():
        shutil.rmtree(old)
