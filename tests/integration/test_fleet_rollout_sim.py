"""The fleet simulator against a real mosquitto and the real depot: 20 devices, a rollout in three waves through
the real `edged fleet rollout start` process, one device that rolls back within the error threshold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.depot.rollout_state import RolloutStore
from edged.fleet.manifest import Artifact, ReleaseManifest
from edged.fleet.trust import read_self_signed_root, utc_now
from edged.mqtt import MqttSettings
from edged.testing.fleet_sim import SimulatedFleet, plan_devices
from tests.daemon import REPO
from tests.mosquitto import Mosquitto
from tests.slowdown import scaled

pytestmark = pytest.mark.slow


def sign_small_release(keys: OperatorKeys, models: Path, channel: str, version: int, size: int = 40_000) -> Path:
    import hashlib

    data = os.urandom(size)
    (models / f"{channel}-{version}.gguf").write_bytes(data)
    manifest = ReleaseManifest(fleet="default", channel=channel, version=version,
                               expires=utc_now() + timedelta(days=1), chunk_size=16 * 1024,
                               artifacts=[Artifact(name=f"{channel}-{version}.gguf", size=size,
                                                   sha256=hashlib.sha256(data).hexdigest(), format="gguf")])
    keys.sign_release(manifest)
    return keys.directory / "releases" / f"{channel}-{version}.json"


def start_depot(broker: Mosquitto, keys_dir: Path, models: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "edged", "fleet", "depot", "--mqtt", broker.url, "--dir",
                                    str(keys_dir), "--models", str(models)], stdout=out, stderr=subprocess.STDOUT,
                                   cwd=REPO)
    end = time.monotonic() + scaled(60)
    while b"depot ready" not in log.read_bytes():
        assert process.poll() is None and time.monotonic() < end, log.read_text(errors="replace")
        time.sleep(0.05)
    return process


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "broker").start()
    yield mosquitto
    mosquitto.stop()


def test_twenty_simulated_devices_take_a_three_wave_rollout(tmp_path: Path, broker: Mosquitto) -> None:
    keys = OperatorKeys.create(tmp_path / "keys", root_keys=1, root_threshold=1, release_keys=1, release_threshold=1,
                               expires=utc_now() + timedelta(days=30))
    models = tmp_path / "models"
    models.mkdir()
    manifest = sign_small_release(keys, models, "sim", 1)
    depot = start_depot(broker, keys.directory, models, tmp_path / "depot.log")
    devices = plan_devices(20, [("canary", 2), ("lab", 8), ("field", 10)], fail={"field-3"})
    fleet = SimulatedFleet(MqttSettings(url=broker.url), read_self_signed_root(keys.root_path.read_bytes()), devices,
                           devices_per_link=6)
    fleet.start()
    try:
        end = time.monotonic() + scaled(30)
        while not fleet.connected():
            assert time.monotonic() < end, "the simulated devices did not connect"
            time.sleep(0.05)
        run = subprocess.run([sys.executable, "-m", "edged", "fleet", "rollout", "start", str(manifest), "--dir",
                              str(keys.directory), "--mqtt", broker.url, "--wave", "canary", "--wave", "lab:50",
                              "--wave", "field", "--success-threshold", "90", "--error-threshold", "10",
                              "--wave-timeout", "2m"], capture_output=True, text=True, timeout=scaled(180), cwd=REPO)
        assert run.returncode == 0, run.stdout + run.stderr + (tmp_path / "depot.log").read_text()[-2000:]
    finally:
        fleet.stop()
        depot.terminate()
        depot.wait(30)
    state = RolloutStore(keys.directory).load("default-sim-1")
    assert state.phase == "finished"
    counts = [wave.counts() for wave in state.waves]
    assert [c["total"] for c in counts] == [2, 4, 10]  # half of lab, chosen by the release's spread
    assert counts[2]["succeeded"] == 9 and state.waves[2].devices["field-3"].outcome != "succeeded"
    lab = {d.device_id for d in devices if d.groups == ["lab"]}
    untouched = lab - set(state.waves[1].devices)
    assert len(untouched) == 4 and all(fleet.devices[d].release is None for d in untouched)  # never offered
    assert fleet.counters["active"] == 15 and fleet.counters["rolled_back"] <= 1
    assert "wave 3/3 field" in run.stdout
    status = subprocess.run([sys.executable, "-m", "edged", "fleet", "rollout", "status", "default-sim-1", "--dir",
                             str(keys.directory), "--json"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert json.loads(status.stdout)["phase"] == "finished"
