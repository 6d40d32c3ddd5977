"""Release listings with several files (an ONNX directory): every hostile listing refused before anything is recorded."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_fleet_trust_cli import _run as fleet_command
from edged.errors import ConfigError, UpdateError
from edged.fleet.artifacts import layout_of, listing_digest
from edged.fleet.device.release_files import slot_entry
from edged.fleet.manifest import MAX_RELEASE_FILES, Artifact, ArtifactLimits, FleetMembership, ReleaseVerifier
from edged.fleet.settings import UpdateSettings
from edged.fleet.trust import ExpiryClock, TrustStore
from tests.unit import test_fleet_trust_manifest as manifests

SHA = "ab" * 32
DEVICE_LIMITS = UpdateSettings(max_artifact_bytes=10_000).limits()


def onnx(*names: str, size: int = 100) -> list[dict[str, Any]]:
    return [{"name": name, "size": size, "sha256": SHA, "format": "onnx-dir"} for name in names]


GOOD = onnx("m/edged_model.json", "m/model.onnx", "m/model.onnx.data", "m/tokenizer.json")


def artifacts(listing: list[dict[str, Any]]) -> list[Artifact]:
    return [Artifact.model_validate(item) for item in listing]


HOSTILE = {
    "parent-dir": (onnx("m/edged_model.json", "m/../etc/passwd"), "unsafe part '..'"),
    "dotdot-top": (onnx("../edged_model.json"), "unsafe part '..'"),
    "absolute": (onnx("/m/edged_model.json"), "must be relative"),
    "backslash": (onnx("m/edged_model.json", "m\\model.onnx"), "must be relative"),
    "bare-file": (onnx("edged_model.json"), "must be <directory>/<file>"),
    "too-deep": (onnx("m/edged_model.json", "m/a/b/c/d.bin"), "at most 4 parts"),
    "empty-part": (onnx("m/edged_model.json", "m//model.onnx"), "unsafe part ''"),
    "dot-part": (onnx("m/edged_model.json", "m/./model.onnx"), "unsafe part '.'"),
    "hidden": (onnx("m/edged_model.json", "m/.model.onnx"), "unsafe part '.model.onnx'"),
    "work-file": (onnx("m/edged_model.json", "m/model.onnx.partial"), "unsafe part"),
    "duplicate": (onnx("m/edged_model.json", "m/model.onnx", "m/model.onnx"), "appears twice"),
    "case-duplicate": (onnx("m/edged_model.json", "m/Model.onnx", "m/model.ONNX"), "appears twice"),
    "file-and-dir": (onnx("m/edged_model.json", "m/a", "m/a/b"), "as a file and as a directory"),
    "two-tops": (onnx("m/edged_model.json", "n/model.onnx"), "one top directory"),
    "no-config": (onnx("m/model.onnx", "m/tokenizer.json"), "no m/edged_model.json"),
    "config-case-trick": (onnx("m/Edged_Model.json", "m/model.onnx"), "no m/edged_model.json"),
    "config-nested": (onnx("m/sub/edged_model.json", "m/model.onnx"), "no m/edged_model.json"),
    "mixed-formats": (onnx("m/edged_model.json") + [{"name": "x.gguf", "size": 1, "sha256": SHA,
                                                      "format": "gguf"}], "cannot be mixed"),
    "two-ggufs": ([{"name": f"{n}.gguf", "size": 1, "sha256": SHA, "format": "gguf"} for n in "ab"], "one file"),
    "gguf-path": ([{"name": "a/b.gguf", "size": 1, "sha256": SHA, "format": "gguf"}], "unsafe artifact name"),
    "file-over-cap": (onnx("m/edged_model.json", "m/model.onnx", size=10_001), "over the 10000-byte cap"),
    "total-over-cap": (onnx("m/edged_model.json", "m/a", "m/b", size=4000), "total 12000 bytes"),
}


@pytest.mark.parametrize("listing, message", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_listings_are_refused_with_a_clear_reason(listing: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(UpdateError) as caught:
        DEVICE_LIMITS.check(artifacts(listing))
    assert caught.value.reason == "artifact" and message in str(caught.value)


@pytest.mark.parametrize("listing, message", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_signed_manifests_record_no_version(tmp_path: Path, listing: list[dict[str, Any]],
                                                    message: str) -> None:
    fleet = manifests.Fleet(tmp_path)
    fleet.verifier.limits = DEVICE_LIMITS
    assert fleet.rejected(fleet.signed(artifacts=listing)) == "artifact"  # versions.json unchanged
    assert fleet.verifier.verify(fleet.signed(artifacts=GOOD)).version == 5  # the same version, listed well


def test_too_many_files_are_refused_as_malformed_before_the_limits(tmp_path: Path) -> None:
    fleet = manifests.Fleet(tmp_path)
    fleet.verifier.limits = DEVICE_LIMITS
    listing = onnx("m/edged_model.json", *(f"m/part{i}.bin" for i in range(MAX_RELEASE_FILES)))
    assert fleet.rejected(fleet.signed(artifacts=listing)) == "malformed"
    fewer = ArtifactLimits(max_artifacts=3, allowed_formats=["gguf", "onnx-dir"])
    with pytest.raises(UpdateError, match="at most 3 file"):
        fewer.check(artifacts(GOOD))


def test_an_old_style_device_refuses_an_onnx_release_before_recording_it(tmp_path: Path) -> None:
    """What a device of the single-file era does: its limits allowed one gguf file, so reason `artifact`."""
    fleet = manifests.Fleet(tmp_path)
    fleet.verifier.limits = ArtifactLimits(max_artifacts=1, allowed_formats=["gguf"])
    assert fleet.rejected(fleet.signed(artifacts=GOOD)) == "artifact"


def test_single_file_manifests_stay_valid(tmp_path: Path) -> None:
    fleet = manifests.Fleet(tmp_path)
    fleet.verifier.limits = DEVICE_LIMITS
    manifest = fleet.verifier.verify(fleet.signed())
    layout = layout_of(manifest.artifacts)
    assert (layout.kind, layout.name, layout.digest) == ("file", "model.gguf", manifests.SHA)
    assert slot_entry(manifest.artifacts) == manifest.artifacts[0]


def test_the_slot_entry_of_a_directory_binds_every_file() -> None:
    listing = artifacts(GOOD)
    entry = slot_entry(listing)
    assert (entry.name, entry.size, entry.format) == ("m", 400, "onnx-dir")
    assert entry.sha256 == listing_digest(list(reversed(listing)))  # the order of the listing does not matter
    changed = [*listing[:3], listing[3].model_copy(update={"sha256": "cd" * 32})]
    assert slot_entry(changed).sha256 != entry.sha256


# ---- the operator's side: edged fleet release --model DIR ----------------------------------------

def onnx_dir(root: Path) -> Path:
    directory = root / "tiny-onnx"
    directory.mkdir()
    for name, size in (("edged_model.json", 50), ("model.onnx", 3000), ("model.onnx.data", 70_000),
                       ("tokenizer.json", 900)):
        (directory / name).write_bytes(os.urandom(size))
    return directory


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    fleet_command("init", "--dir", str(keys), "--root-keys", "1", "--root-threshold", "1")
    return keys


def release(keys_dir: Path, model: Path, *extra: str) -> int:
    return fleet_command("release", "--dir", str(keys_dir), "--model", str(model), "--channel", "stable",
                         "--version", "1", *extra)


def test_release_of_a_directory_lists_every_file_and_a_device_accepts_it(tmp_path: Path, keys_dir: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    model = onnx_dir(tmp_path)
    assert release(keys_dir, model, "--out", str(tmp_path / "r.json")) == 0
    assert "ONNX directory tiny-onnx, 4 files" in capsys.readouterr().out
    store = TrustStore(tmp_path / "device", ExpiryClock(policy="trust-system-clock"))
    store.provision((keys_dir / "root.json").read_bytes())
    verifier = ReleaseVerifier(store, FleetMembership(fleet="default", device_id="pi"),
                               UpdateSettings().limits())
    manifest = verifier.verify((tmp_path / "r.json").read_bytes())
    listed = {a.name: (a.size, a.sha256, a.format) for a in manifest.artifacts}
    assert listed == {f"tiny-onnx/{p.name}": (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest(), "onnx-dir")
                      for p in model.iterdir()}
    stored = json.loads((keys_dir / "releases" / "stable-1.json").read_text())
    assert stored == json.loads((tmp_path / "r.json").read_text())


def test_release_of_a_directory_with_a_subdirectory_and_a_new_name(tmp_path: Path, keys_dir: Path) -> None:
    model = onnx_dir(tmp_path)
    (model / "extra").mkdir()
    (model / "extra" / "weights.bin").write_bytes(b"w" * 10)
    assert release(keys_dir, model, "--artifact-name", "smol-v2") == 0
    envelope = (keys_dir / "releases" / "stable-1.json").read_bytes()
    assert b"smol-v2/extra/weights.bin" in base64.b64decode(json.loads(envelope)["payload"])


@pytest.mark.parametrize("hostile", ["symlink-out", "symlinked-dir", "hidden", "empty", "no-config", "too-many",
                                     "bad-name"])
def test_release_refuses_hostile_directories_before_signing(tmp_path: Path, keys_dir: Path, hostile: str) -> None:
    model = onnx_dir(tmp_path)
    extra: list[str] = []
    message = {"symlink-out": "is a symlink", "symlinked-dir": "is a symlink", "hidden": "unsafe part",
               "empty": "is empty", "no-config": "no edged_model.json", "too-many": "at most 16",
               "bad-name": "not a safe directory name"}[hostile]
    if hostile == "symlink-out":
        (tmp_path / "secret").write_text("key material")
        (model / "tokenizer.json").unlink()
        (model / "tokenizer.json").symlink_to(tmp_path / "secret")
    elif hostile == "symlinked-dir":
        link = tmp_path / "linked"
        link.symlink_to(model)
        model = link
    elif hostile == "hidden":
        (model / ".DS_Store").write_bytes(b"x")
    elif hostile == "empty":
        (model / "empty.bin").write_bytes(b"")
    elif hostile == "no-config":
        (model / "edged_model.json").unlink()
    elif hostile == "too-many":
        for index in range(MAX_RELEASE_FILES):
            (model / f"part{index}.bin").write_bytes(b"p")
    elif hostile == "bad-name":
        extra = ["--artifact-name", "../up"]
    with pytest.raises(ConfigError, match=message):
        release(keys_dir, model, *extra)
    assert not list((keys_dir / "releases").glob("*.json"))
