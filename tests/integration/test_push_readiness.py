"""`edged fleet push --device X` warns when X's retained status says it cannot take the offer now."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from edged.crypto.clock import clock_synchronised
from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.manifest import Artifact, HealthCheck, ReleaseManifest, TargetSelector
from edged.fleet.trust import utc_now
from tests.daemon import REPO
from tests.e2e_keys import edged
from tests.mosquitto import mosquitto_plain  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow  # a broker and two daemons (in-process)


def signed_manifest(tmp_path: Path) -> Path:
    keys_dir = tmp_path / "keys"
    edged("fleet", "init", "--dir", str(keys_dir), "--root-keys", "1", "--root-threshold", "1")
    manifest = ReleaseManifest(
        fleet="default", channel="stable", version=1, expires=utc_now() + timedelta(days=1),
        targets=TargetSelector(), chunk_size=256 * 1024,
        artifacts=[Artifact(name="m.gguf", size=1024, sha256="0" * 64, format="gguf")],
        health_check=HealthCheck(prompt="Say hi.", max_tokens=2, timeout_s=120))
    path = tmp_path / "stable-1.json"
    path.write_bytes(OperatorKeys(keys_dir).sign_release(manifest))
    return path


def push(broker_url: str, device: str, manifest: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "edged", "fleet", "push", "--mqtt", broker_url, "--device", device,
                           str(manifest)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"on edged/{device}/update/offer" in done.stdout
    return done


def status_of(broker_url: str, device: str) -> dict[str, object]:
    from edged.fleet.depot.readiness import retained_status
    from edged.mqtt.settings import MqttSettings

    status = retained_status(MqttSettings(url=broker_url), device, wait_s=10)
    assert status is not None
    return status


def test_push_warns_about_a_device_without_updates_and_one_whose_clock_blocks_them(make_inprocess_daemon, tmp_path,
                                                                                   mosquitto_plain):
    broker = mosquitto_plain.url
    manifest = signed_manifest(tmp_path)
    mqtt = {"EDGED_MQTT__URL": broker, "EDGED_E2E__CLOCK_POLICY": "trust-system-clock"}
    make_inprocess_daemon("--device-id", "plain-1", env=mqtt).start()
    make_inprocess_daemon("--device-id", "strict-1", env={**mqtt, "EDGED_UPDATES__CLOCK_POLICY": "reject"}).start()

    plain = status_of(broker, "plain-1")
    assert plain["updates"] == {"enabled": False} and "updates" not in plain["capabilities"]  # type: ignore[operator]
    assert "updates are off" in push(broker, "plain-1", manifest).stderr

    strict = status_of(broker, "strict-1")
    synchronised = clock_synchronised()  # this machine's clock decides which warning is right
    assert strict["updates"] == {"enabled": True, "clock_policy": "reject", "clock_synchronised": synchronised,
                                 "blocked_by_clock": not synchronised, "install_window": None, "install_when": "any",
                                 "fleet": "default", "groups": []}
    warned = push(broker, "strict-1", manifest).stderr
    assert ("clock is not synchronised" in warned) is (not synchronised)
    assert "updates are off" not in warned

    ghost = push(broker, "ghost-1", manifest).stderr
    assert "ghost-1 has no retained status on this broker" in ghost
