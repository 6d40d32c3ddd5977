"""The aarch64 bundle on an emulated Raspberry Pi 4 (QEMU_CPU=cortex-a72), in the arm64 root of
scripts/arm64-root, with the network cut: installed into the image from the x86-64 host
(`./install --root`, nothing of the target runs), and installed on the "device" itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_bundle import ASK, build_bundle, unpack

REPO = Path(__file__).resolve().parents[2]
ARM64_ROOT = REPO / "scripts/arm64-root"
PI4 = "cortex-a72"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts, chroot and binfmt_misc need root"),
]


def arm64(*argv: str, layers: tuple[Path, ...] = (), upper: Path | None = None,
          binds: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``argv`` in an overlay of the arm64 root under QEMU as a Pi 4, in a namespace without network."""
    options = [f"--layer={layer}" for layer in layers] + [f"--bind={bind}" for bind in binds]
    if upper is not None:
        options.append(f"--upper={upper}")
    return subprocess.run(["unshare", "--net", sys.executable, str(ARM64_ROOT), "run", "--cpu", PI4, *options,
                           "--", *argv], capture_output=True, text=True, timeout=3000)


@pytest.fixture(scope="module")
def arm64_root() -> Path:
    built = subprocess.run([sys.executable, str(ARM64_ROOT)], capture_output=True, text=True, timeout=3000)
    assert built.returncode == 0, built.stderr
    return Path(built.stdout.strip())


@pytest.fixture(scope="module")
def bundle(arm64_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle-arm64")
    return unpack(build_bundle(out / "dist", arch="aarch64"), out / "unpacked")


def test_image_install_from_the_host_then_ask_on_a_pi4(arm64_root: Path, bundle: Path, tmp_path: Path) -> None:
    upper, work, merged = tmp_path / "upper", tmp_path / "work", tmp_path / "merged"
    for directory in (upper, work, merged):
        directory.mkdir()
    # The image being built: an overlay of the pristine root, so the cached root stays untouched.
    script = 'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" && exec "$5" --root "$4"'
    done = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script, "sh",
                           str(arm64_root), str(upper), str(work), str(merged), str(bundle / "install")],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "aarch64, /usr/bin/python3.11" in done.stdout and "skipped: it runs the target's engine" in done.stdout
    assert (upper / "opt/edged/.venv/bin/edged").is_file()

    # edged doctor runs in the next test (the device's own install); here the answer is the proof.
    asked = arm64("/bin/sh", "-c", ASK, layers=(upper,))
    assert asked.returncode == 0, asked.stdout + asked.stderr
    assert asked.stdout.strip()


def test_install_on_the_emulated_pi4_itself(bundle: Path, tmp_path: Path) -> None:
    # The device's own python3 runs ./install under QEMU; it checks the result with edged doctor.
    done = arm64("/bundle/install", binds=(f"{bundle}:/bundle:ro",), upper=tmp_path / "upper")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checking the target /" in done.stdout and "OK   generation" in done.stdout
    assert "CPU variant armv8.0" in done.stdout  # a Cortex-A72 has no dotprod: the baseline kernels
    assert (tmp_path / "upper/etc/edged/edged.toml").is_file()
