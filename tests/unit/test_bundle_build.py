"""scripts/bundle's archive and target tags, and the installer's checks of the target root."""

from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "bundle"))

from bundlelib import archive, wheels  # noqa: E402
from edged_install import venv  # noqa: E402


def staging(tmp_path: Path, mtime: int) -> Path:
    root = tmp_path / "edged-0.1.0-linux-x86_64"
    (root / "wheels").mkdir(parents=True)
    for name, data in {"wheels/b.whl": b"b", "wheels/a.whl": b"a", "install": b"#!x"}.items():
        (root / name).write_bytes(data)
        os.utime(root / name, (mtime, mtime))
    os.chmod(root / "install", 0o700)
    return root


def test_archive_bytes_depend_only_on_content(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    archive.write_tar_gz(staging(first, 1_000_000), first / "out.tar.gz", epoch=1234)
    archive.write_tar_gz(staging(second, 2_000_000), second / "out.tar.gz", epoch=1234)
    assert (first / "out.tar.gz").read_bytes() == (second / "out.tar.gz").read_bytes()
    with tarfile.open(first / "out.tar.gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["edged-0.1.0-linux-x86_64", "edged-0.1.0-linux-x86_64/install",
                                         "edged-0.1.0-linux-x86_64/wheels", "edged-0.1.0-linux-x86_64/wheels/a.whl",
                                         "edged-0.1.0-linux-x86_64/wheels/b.whl"]
    assert {(m.mtime, m.uid, m.uname) for m in members} == {(1234, 0, "root")}
    assert members[1].mode == 0o755 and members[3].mode == 0o644


def test_sums_are_sorted_and_sha256sum_compatible(tmp_path: Path) -> None:
    text = archive.write_sums(staging(tmp_path, 0), exclude=set()).decode()
    assert [line.split("  ")[1] for line in text.splitlines()] == ["install", "wheels/a.whl", "wheels/b.whl"]


def test_platform_tags_cover_every_manylinux_up_to_the_target_glibc() -> None:
    tags = wheels.platform_tags("aarch64")
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_17_aarch64" in tags
    assert "manylinux2014_aarch64" in tags and "linux_aarch64" in tags and "manylinux_2_37_aarch64" not in tags
    assert "manylinux1_x86_64" in wheels.platform_tags("x86_64")


def test_glibc_needed_reads_the_tag_or_the_libraries(tmp_path: Path) -> None:
    import zipfile

    assert wheels.glibc_needed(Path("numpy-2-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl")) == (2, 27)
    assert wheels.glibc_needed(Path("cffi-2-cp311-cp311-manylinux2014_x86_64.whl")) == (2, 17)
    wheel = tmp_path / "llama_cpp_python-0.3.16-cp311-cp311-linux_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("llama_cpp/lib/libllama.so", b"\0GLIBC_2.17\0GLIBC_2.34\0GLIBC_2.29\0")
    assert wheels.glibc_needed(wheel) == (2, 34)


def fake_root(tmp_path: Path, machine: int, glibc: str) -> Path:
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    header = b"\x7fELF\x02\x01\x01" + bytes(11) + machine.to_bytes(2, "little")
    (root / "usr/bin/python3.11").write_bytes(header + bytes(100))
    libc = root / "usr/lib/aarch64-linux-gnu/libc.so.6"
    libc.parent.mkdir(parents=True)
    libc.write_bytes(b"\0GNU C Library (Debian GLIBC) stable release version " + glibc.encode() + b".\n\0")
    (root / "lib").symlink_to("usr/lib")
    return root


MANIFEST = {"arch": "aarch64", "version": "0.1.0", "glibc": "2.34"}


def test_target_check_accepts_a_matching_root(tmp_path: Path) -> None:
    assert venv.check_target(fake_root(tmp_path, 183, "2.36"), MANIFEST) == "/usr/bin/python3.11"


@pytest.mark.parametrize("machine, glibc, message", [
    (62, "2.36", "this bundle is for aarch64 but /usr/bin/python3.11 on the target is x86_64"),
    (183, "2.31", "the target has glibc 2.31; this bundle's wheels need 2.34"),
])
def test_target_check_refuses_another_arch_or_an_old_glibc(tmp_path: Path, machine: int, glibc: str,
                                                          message: str) -> None:
    with pytest.raises(venv.TargetError, match=message):
        venv.check_target(fake_root(tmp_path, machine, glibc), MANIFEST)


def test_target_check_refuses_a_root_without_python(tmp_path: Path) -> None:
    with pytest.raises(venv.TargetError, match=r"needs Python 3\.11"):
        venv.check_target(tmp_path, MANIFEST)


def test_sums_carry_only_names_the_installer_accepts(tmp_path: Path) -> None:
    from edged_install import verify

    root = staging(tmp_path, 0)
    (root / "model").mkdir()
    (root / "model/gateway_v2+q4.gguf").write_bytes(b"GGUF")
    assert "model/gateway_v2+q4.gguf" in verify.parse_sums(archive.write_sums(root, exclude=set()).decode())
    for refused in ("my model.gguf", 'quote".gguf', "modèle.gguf"):
        (root / "model" / refused).write_bytes(b"GGUF")
        # Written as it is, SHA256SUMS would have a line ./install refuses: a bundle that never installs.
        with pytest.raises(wheels.BundleBuildError, match="rename it"):
            archive.write_sums(root, exclude=set())
        (root / "model" / refused).unlink()


@pytest.mark.parametrize("layout", ["file", "directory"])
def test_bundle_refuses_a_model_name_the_installer_would_refuse_before_building(tmp_path: Path, layout: str) -> None:
    import subprocess

    if layout == "file":
        model = tmp_path / "my model.gguf"
        model.write_bytes(b"GGUF")
    else:
        model = tmp_path / "onnx-model"
        model.mkdir()
        (model / "model.onnx").write_bytes(b"onnx")
        (model / "tokenizer (copy).json").write_text("{}")
    done = subprocess.run([sys.executable, str(REPO / "scripts/bundle"), "--arch", "x86_64", "--model", str(model),
                           "--out", str(tmp_path / "dist")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "has a character ./install refuses in a file name" in done.stderr and "==>" not in done.stderr
    assert not (tmp_path / "dist").exists()
