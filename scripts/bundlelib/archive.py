"""A tar.gz that depends only on its content: sorted members, one mtime, root owner, no gzip timestamp."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import tarfile
from pathlib import Path

from bundlelib.wheels import BundleBuildError
from edged_install.verify import PATH_PATTERN


def unlisted_names(names: list[str]) -> list[str]:
    """The names the installer's SHA256SUMS parser would refuse (a space, a quote, non-ASCII, ...)."""
    return [name for name in names if not re.fullmatch(PATH_PATTERN, name)]


def write_sums(staging: Path, exclude: set[str]) -> bytes:
    """SHA256SUMS in `sha256sum -c` format over every file under ``staging``, sorted by path."""
    lines = []
    files = sorted(p for p in staging.rglob("*") if p.is_file())
    if refused := unlisted_names([p.relative_to(staging).as_posix() for p in files]):
        raise BundleBuildError(f"{refused[0]!r}: ./install accepts only letters, digits and . _ + - / in file names "
                               "(the bundle would never install); rename it")
    for path in files:
        name = path.relative_to(staging).as_posix()
        if name not in exclude:
            lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n")
    return "".join(lines).encode("ascii")


def _normalise(info: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    info.mtime = epoch
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if info.isdir():
        info.mode = 0o755
    elif info.isfile():
        info.mode = 0o755 if info.mode & 0o100 else 0o644
    return info


def write_tar_gz(staging: Path, out: Path, epoch: int) -> None:
    """``out`` holds ``staging``'s directory as its one top-level entry."""
    members = [staging, *sorted(staging.rglob("*"), key=lambda p: p.relative_to(staging).as_posix())]
    temporary = out.with_name(f".{out.name}.partial")
    with temporary.open("wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, mtime=0, fileobj=raw) as compressed:
            with tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as archive:
                for path in members:
                    arcname = (Path(staging.name) / path.relative_to(staging)).as_posix()
                    info = _normalise(archive.gettarinfo(str(path), arcname=arcname), epoch)
                    if info.isfile():
                        with path.open("rb") as handle:
                            archive.addfile(info, handle)
                    else:
                        archive.addfile(info)
    os.replace(temporary, out)
