"""Release manifest fields, target matching and artifact limits, checked without the signing layer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.errors import UpdateError
from edged.fleet.manifest import (
    Artifact,
    ArtifactLimits,
    FleetMembership,
    TargetSelector,
    encode_manifest,
    is_safe_name,
    parse_manifest,
)

SHA = "cd" * 32
ME = FleetMembership(fleet="acme", device_id="pi-07", groups=frozenset({"lab", "eu"}), hardware=frozenset({"rpi5"}))
LIMITS = ArtifactLimits(max_artifact_bytes=1000, max_total_bytes=1500, allowed_formats=["gguf"])
BOTH = ArtifactLimits(max_artifact_bytes=1000, max_total_bytes=1500, allowed_formats=["gguf", "onnx-dir"])
MANIFEST: dict[str, Any] = {
    "fleet": "acme",
    "channel": "stable",
    "version": 5,
    "expires": "2026-07-01T00:00:00Z",
    "artifacts": [{"name": "model.gguf", "size": 900, "sha256": SHA, "format": "gguf"}],
    "chunk_size": 65536,
}


def _artifact(name: str = "model.gguf", size: int = 10, format: str = "gguf") -> Artifact:
    return Artifact(name=name, size=size, sha256=SHA, format=format)


def test_a_manifest_survives_encode_and_parse_unchanged() -> None:
    manifest = parse_manifest(json.dumps(MANIFEST).encode())
    assert parse_manifest(encode_manifest(manifest)) == manifest
    assert manifest.targets == TargetSelector() and manifest.health_check is None


@pytest.mark.parametrize(
    "changes",
    [
        {"version": "6"},
        {"version": True},
        {"version": 0},
        {"version": 2**63},
        {"expires": "2026-07-01 00:00:00"},
        {"expires": "2026-07-01T00:00:00+00:00"},
        {"expires": "2026-7-1T0:0:0Z"},
        {"chunk_size": 1024},
        {"chunk_size": 4 * 1024 * 1024},
        {"artifacts": []},
        {"artifacts": [{"name": "m.gguf", "size": 1, "sha256": SHA.upper(), "format": "gguf"}]},
        {"artifacts": [{"name": "m.gguf", "size": 0, "sha256": SHA, "format": "gguf"}]},
        {"targets": {"devices": ["a/b"]}},
        {"targets": {"groups": ["x"], "everyone": True}},
        {"surprise": 1},
        {"health_check": {"prompt": "", "max_tokens": 4, "timeout_s": 30}},
        {"health_check": {"prompt": "hi", "max_tokens": 4, "timeout_s": 2.5}},
    ],
)
def test_malformed_manifests_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(UpdateError) as caught:
        parse_manifest(json.dumps({**MANIFEST, **changes}).encode())
    assert caught.value.reason == "malformed"


def test_malformed_errors_do_not_echo_the_health_prompt() -> None:
    prompt = "my secret prompt " * 200
    with pytest.raises(UpdateError) as caught:
        parse_manifest(json.dumps({**MANIFEST, "health_check": {"prompt": prompt}}).encode())
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("targets", "mine"),
    [
        ({}, True),
        ({"devices": ["pi-01", "pi-07"]}, True),
        ({"groups": ["eu", "us"], "hardware": ["rpi5"]}, True),
        ({"devices": ["pi-08"]}, False),
        ({"groups": ["field"]}, False),
        ({"hardware": ["rpi4"]}, False),
        ({"devices": ["pi-07"], "hardware": ["rpi4"]}, False),
    ],
)
def test_targets_match_within_a_list_by_any_and_across_lists_by_all(targets: dict[str, list[str]], mine: bool) -> None:
    assert ME.matches(TargetSelector.model_validate(targets)) is mine


@pytest.mark.parametrize(
    "artifacts",
    [
        [_artifact(size=1001)],
        [_artifact("m/edged_model.json", 800, "onnx-dir"), _artifact("m/model.onnx", 800, "onnx-dir")],
        [_artifact("model.onnx", format="onnx-dir")],
        [_artifact("model.bin", format="pickle")],
        [_artifact("a.gguf"), _artifact("A.gguf")],
    ],
    ids=["over-artifact-cap", "over-total-cap", "format-not-allowed", "unknown-format", "duplicate-name"],
)
def test_artifact_limits_are_enforced(artifacts: list[Artifact]) -> None:
    with pytest.raises(UpdateError) as caught:
        (BOTH if artifacts[0].format == "onnx-dir" and len(artifacts) > 1 else LIMITS).check(artifacts)
    assert caught.value.reason == "artifact"


def test_artifacts_within_the_limits_pass() -> None:
    assert LIMITS.check([_artifact("a.gguf", 1000)]).kind == "file"
    listing = [_artifact("m/edged_model.json", 1000, "onnx-dir"), _artifact("m/model.onnx", 500, "onnx-dir")]
    assert BOTH.check(listing).kind == "directory"


@pytest.mark.parametrize(
    "name",
    [
        "../model.gguf",
        "a/b.gguf",
        "a\\b.gguf",
        ".hidden",
        "..",
        "a..b",
        "model.gguf.partial",
        "x.tmp",
        "mödel.gguf",
        "-rf",
        "a b",
        "model.gguf\n",
        "/etc/passwd",
        "",
        "x" * 129,
    ],
)
def test_unsafe_artifact_names_are_refused(name: str) -> None:
    assert not is_safe_name(name)
    with pytest.raises(UpdateError) as caught:
        LIMITS.check([_artifact().model_copy(update={"name": name})])  # bypasses the length bound
    assert caught.value.reason == "artifact"


@pytest.mark.parametrize("name", ["model.gguf", "SmolLM2-135M.Q8_0.gguf", "a", "x" * 128])
def test_plain_file_names_are_safe(name: str) -> None:
    assert is_safe_name(name)


def test_a_device_cannot_allow_a_format_edged_does_not_know() -> None:
    with pytest.raises(ValueError, match="unknown formats"):
        ArtifactLimits(allowed_formats=["gguf", "pickle"])


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from([*MANIFEST, "targets", "health_check", "x"]), _VALUES, max_size=8))
def test_signed_but_arbitrary_payloads_only_ever_raise_update_error(changes: dict[str, Any]) -> None:
    try:
        parse_manifest(json.dumps({**MANIFEST, **changes}).encode())
    except UpdateError as error:
        assert error.reason == "malformed"
