"""The artifacts of a release, listed on the operator's machine: one GGUF file, or an ONNX model directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from edged.errors import ConfigError, UpdateError
from edged.fleet.artifacts import GGUF_FORMAT, ONNX_CONFIG_FILE, ONNX_DIR_FORMAT, is_safe_name, layout_of
from edged.fleet.manifest import MAX_RELEASE_FILES, Artifact

PLACEHOLDER_SHA256 = "0" * 64
Hasher = Callable[[Path], tuple[int, str]]


def model_files(model: Path, name: str | None) -> list[tuple[Path, str]]:
    """(local file, artifact name) for each file the release lists; ConfigError says what to fix.

    A directory's files are listed as ``<name>/<relative path>``. Symlinks are refused rather than
    followed: one pointing outside would put a file nobody meant to release into a signed release.
    """
    if model.is_symlink():
        raise ConfigError(f"{model} is a symlink; release the file or directory it points to")
    if model.is_dir():
        return _directory_files(model, name or model.name)
    if not model.is_file():
        raise ConfigError(f"{model}: no such file or directory")
    if model.suffix != ".gguf":
        raise ConfigError(f"{model}: release a .gguf file or an ONNX model directory (edged convert onnx makes one)")
    entry = name or model.name
    if not is_safe_name(entry):
        raise ConfigError(f"{entry!r} is not a safe file name (letters, digits, . _ -; no '..', no leading dot)")
    return [(model, entry)]


def _directory_files(directory: Path, name: str) -> list[tuple[Path, str]]:
    if not is_safe_name(name):
        raise ConfigError(f"{name!r} is not a safe directory name (letters, digits, . _ -; no '..', no leading dot);"
                          " choose one with --artifact-name")
    if not (directory / ONNX_CONFIG_FILE).is_file():
        raise ConfigError(f"{directory} has no {ONNX_CONFIG_FILE}: it is no ONNX model directory (or its conversion"
                          " did not finish; run edged convert onnx again)")
    found: list[tuple[Path, str]] = []
    for root, directories, files in os.walk(directory, followlinks=False):
        for entry in sorted([*directories, *files]):
            path = Path(root) / entry
            if path.is_symlink():
                raise ConfigError(f"{path} is a symlink: copy the file it points to into the directory instead")
        for entry in sorted(files):
            path = Path(root) / entry
            if not path.is_file():
                raise ConfigError(f"{path} is not a regular file")
            found.append((path, f"{name}/{path.relative_to(directory).as_posix()}"))
    if len(found) > MAX_RELEASE_FILES:
        raise ConfigError(f"{directory} holds {len(found)} files; a release lists at most {MAX_RELEASE_FILES}")
    return sorted(found, key=lambda item: item[1])


def placeholder_artifacts(files: list[tuple[Path, str]], is_directory: bool) -> list[Artifact]:
    """The listing with real sizes and no hashes yet, so a bad listing fails before a long hash."""
    kind = ONNX_DIR_FORMAT if is_directory else GGUF_FORMAT
    artifacts = []
    for path, name in files:
        size = path.stat().st_size
        if size == 0:
            raise ConfigError(f"{path} is empty")
        artifacts.append(Artifact(name=name, size=size, sha256=PLACEHOLDER_SHA256, format=kind))
    check_layout(artifacts)
    return artifacts


def hashed_artifacts(files: list[tuple[Path, str]], placeholders: list[Artifact], hasher: Hasher) -> list[Artifact]:
    artifacts = []
    for (path, _), placeholder in zip(files, placeholders, strict=True):
        size, sha256 = hasher(path)
        if size != placeholder.size:
            raise ConfigError(f"{path} changed while it was being hashed; release again")
        artifacts.append(placeholder.model_copy(update={"sha256": sha256}))
    return artifacts


def check_layout(artifacts: list[Artifact]) -> None:
    try:
        layout_of(artifacts)
    except UpdateError as exc:
        raise ConfigError(f"this release would be refused by every device: {str(exc).removeprefix('artifact: ')}"
                          ) from None
