"""`edged fleet init | release | rotate-root | install-root`, ending in a device-side verify."""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import pytest

from edged.commands import fleet_keys
from edged.errors import ConfigError, UpdateError
from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.manifest import FleetMembership, ReleaseVerifier
from edged.fleet.trust import ExpiryClock, TrustStore

SYNCED = ExpiryClock(synced=lambda: True)
DEVICE = FleetMembership(fleet="default", device_id="pi-01", groups=frozenset({"lab"}))


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edged")
    fleet = parser.add_subparsers(dest="command", required=True).add_parser("fleet")
    fleet_keys.register(fleet.add_subparsers(dest="fleet_command", required=True))
    args = parser.parse_args(["fleet", *argv])
    return int(args.func(args))


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    return path


@pytest.fixture()
def keys_dir(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    assert _run("init", "--dir", str(keys), "--root-keys", "2", "--root-threshold", "2") == 0
    return keys


def _device(tmp_path: Path, *roots: Path) -> ReleaseVerifier:
    state = tmp_path / "device"
    assert _run("install-root", "--state-dir", str(state), *map(str, roots)) == 0
    return ReleaseVerifier(TrustStore(state, SYNCED), DEVICE)


def test_init_release_then_the_device_verifies_the_manifest(
    tmp_path: Path, keys_dir: Path, model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stable-3.json"
    assert (
        _run(
            "release",
            "--dir",
            str(keys_dir),
            "--model",
            str(model),
            "--channel",
            "stable",
            "--version",
            "3",
            "--target-group",
            "lab",
            "--health-prompt",
            "Say OK.",
            "--out",
            str(out),
        )
        == 0
    )
    assert "stable v3" in capsys.readouterr().out
    manifest = _device(tmp_path, keys_dir / "root.json").verify(out.read_bytes())
    artifact = manifest.artifacts[0]
    assert (artifact.name, artifact.size, artifact.format) == ("tiny.gguf", model.stat().st_size, "gguf")
    assert artifact.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert manifest.health_check is not None and manifest.health_check.prompt == "Say OK."
    assert (keys_dir / "releases" / "stable-3.json").read_bytes() == out.read_bytes()


def test_init_writes_private_keys_0600_and_refuses_a_used_directory(keys_dir: Path) -> None:
    pems = sorted(keys_dir.glob("*/*.pem"))
    assert len(pems) == 3
    assert all(pem.stat().st_mode & 0o777 == 0o600 for pem in pems)
    assert keys_dir.stat().st_mode & 0o777 == 0o700
    with pytest.raises(ConfigError, match="not empty"):
        _run("init", "--dir", str(keys_dir))


def test_init_refuses_an_impossible_threshold_without_leaving_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        _run("init", "--dir", str(tmp_path / "k"), "--root-keys", "1", "--root-threshold", "2")
    assert not list((tmp_path / "k").rglob("*.pem"))


def test_release_refuses_a_version_not_above_the_last_one(keys_dir: Path, model: Path) -> None:
    common = ["release", "--dir", str(keys_dir), "--model", str(model), "--channel", "stable"]
    _run(*common, "--version", "4")
    with pytest.raises(ConfigError, match="rollback is a new, higher version"):
        _run(*common, "--version", "4")
    missing = ["--model", str(model.with_name("not-hashed-yet.gguf"))]
    with pytest.raises(ConfigError, match="rollback"):  # refused before the (long) hash of the model
        _run(*common, *missing, "--version", "3")
    assert _run(*common, "--channel", "beta", "--version", "1") == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--expires", "yesterday"], "expires"),
        (["--expires", "2001-01-01T00:00:00Z"], "passed"),
        (["--chunk-size", "100"], "chunk_size"),
        (["--artifact-name", "../x.gguf"], "safe file name"),
        (["--channel", "a/b"], "channel"),
    ],
)
def test_release_explains_bad_options(keys_dir: Path, model: Path, extra: list[str], message: str) -> None:
    argv = ["release", "--dir", str(keys_dir), "--model", str(model), "--channel", "stable", "--version", "1"]
    with pytest.raises(ConfigError, match=message):
        _run(*argv, *extra)


def test_release_refuses_unfinished_directories_and_other_formats(tmp_path: Path, keys_dir: Path) -> None:
    onnx = tmp_path / "onnx-model"
    onnx.mkdir()
    with pytest.raises(ConfigError, match=r"no edged_model\.json"):
        _run("release", "--dir", str(keys_dir), "--model", str(onnx), "--channel", "s", "--version", "1")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ConfigError, match="gguf"):
        _run("release", "--dir", str(keys_dir), "--model", str(tmp_path / "m.bin"), "--channel", "s", "--version", "1")


def test_release_works_with_the_root_keys_offline_but_rotation_needs_them(
    tmp_path: Path, keys_dir: Path, model: Path
) -> None:
    offline = tmp_path / "usb-stick"
    shutil.move(str(keys_dir / "root"), offline)
    assert _run("release", "--dir", str(keys_dir), "--model", str(model), "--channel", "s", "--version", "1") == 0
    with pytest.raises(ConfigError, match="offline keys"):
        _run("rotate-root", "--dir", str(keys_dir))


def test_rotating_release_keys_reaches_devices_through_install_root(
    tmp_path: Path, keys_dir: Path, model: Path
) -> None:
    base = ["release", "--dir", str(keys_dir), "--model", str(model), "--channel", "stable"]
    _run(*base, "--version", "1")
    old_key_id = next((keys_dir / "release").glob("*.pem")).stem
    device = _device(tmp_path, keys_dir / "root.json")

    assert _run("rotate-root", "--dir", str(keys_dir), "--add-release-keys", "1", "--remove-key", old_key_id) == 0
    assert (keys_dir / "retired" / "release" / f"{old_key_id}.pem").exists()
    _run(*base, "--version", "2")
    release_2 = (keys_dir / "releases" / "stable-2.json").read_bytes()
    with pytest.raises(UpdateError) as caught:
        device.verify(release_2)  # the device still trusts root v1 and its old release key
    assert caught.value.reason == "signature"

    _device(tmp_path, keys_dir / "roots" / "1.root.json", keys_dir / "roots" / "2.root.json")
    assert device.trust.current().version == 2  # a running verifier sees the root install-root advanced
    assert device.verify(release_2).version == 2
    with pytest.raises(UpdateError) as caught:
        device.verify((keys_dir / "releases" / "stable-1.json").read_bytes())
    assert caught.value.reason == "signature"  # signed only by the revoked key


def test_rotate_root_refuses_an_ambiguous_or_unknown_key_id(keys_dir: Path) -> None:
    with pytest.raises(ConfigError, match="matches 0 keys"):
        _run("rotate-root", "--dir", str(keys_dir), "--remove-key", "0000000000")
    with pytest.raises(ConfigError, match="at least 8"):
        _run("rotate-root", "--dir", str(keys_dir), "--remove-key", "ab")
    assert OperatorKeys(keys_dir).current_root().version == 1


def test_install_root_refuses_a_skipped_version(tmp_path: Path, keys_dir: Path) -> None:
    _run("rotate-root", "--dir", str(keys_dir))
    _run("rotate-root", "--dir", str(keys_dir))
    _device(tmp_path, keys_dir / "roots" / "1.root.json")
    with pytest.raises(UpdateError) as caught:
        _run("install-root", "--state-dir", str(tmp_path / "device"), str(keys_dir / "roots" / "3.root.json"))
    assert caught.value.reason == "version"  # the same root keys signed v3, but only v2 may follow v1
    assert TrustStore(tmp_path / "device", SYNCED).current().version == 1


@pytest.mark.parametrize("command", ["init", "release", "rotate-root", "install-root"])
def test_help_texts_teach_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _run(command, "--help")
    assert exited.value.code == 0
    assert "examples:" in capsys.readouterr().out
