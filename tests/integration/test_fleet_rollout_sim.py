"""The fleet simulator against a real mosquitto and the real depot: 20 devices, a rollout in three waves through
the real `edged fleet rollout start` process, one device that rolls back within the error threshold."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.depot.rollout_state import RolloutLock, RolloutStore
from edged.fleet.manifest import Artifact, ReleaseManifest
from edged.fleet.trust import read_self_signed_root, utc_now
from edged.mqtt.settings import MqttSettings
from edged.testing.fleet_sim import SimulatedFleet, plan_devices
from tests.daemon import REPO
from tests.mosquitto import Mosquitto
from tests.mqtt_probe import Probe
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


def edged_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True,
                          timeout=scaled(timeout), cwd=REPO)


def wait_until(check: Any, what: str, process: subprocess.Popen[str] | None = None, timeout: float = 60) -> None:
    end = time.monotonic() + scaled(timeout)
    while not check():
        assert process is None or process.poll() is None, f"{what}: the rollout exited: {process.communicate()}"
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_pause_resume_and_abort_reach_the_running_process(tmp_path: Path, broker: Mosquitto) -> None:
    """One lab device never finishes its download, so the lab wave stays open while the operator acts."""
    keys = OperatorKeys.create(tmp_path / "keys", root_keys=1, root_threshold=1, release_keys=1, release_threshold=1,
                               expires=utc_now() + timedelta(days=30))
    models = tmp_path / "models"
    models.mkdir()
    manifest = sign_small_release(keys, models, "ops", 1)
    depot = start_depot(broker, keys.directory, models, tmp_path / "depot.log")
    devices = plan_devices(10, [("canary", 2), ("lab", 8)], fail=set(), stall=frozenset({"lab-1"}))
    fleet = SimulatedFleet(MqttSettings(url=broker.url), read_self_signed_root(keys.root_path.read_bytes()), devices)
    fleet.start()
    store = RolloutStore(keys.directory)
    base = ["--dir", str(keys.directory)]
    mqtt = ["--mqtt", broker.url]
    start = [sys.executable, "-m", "edged", "fleet", "rollout", "start", str(manifest), *base, *mqtt,
             "--wave", "canary", "--wave", "lab", "--wave-timeout", "10m"]
    try:
        wait_until(fleet.connected, "the simulated devices")
        runner = subprocess.Popen(start, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        wait_until(lambda: store.exists("default-ops-1") and store.load("default-ops-1").waves[1].counts()[
            "succeeded"] == 7, "seven of eight lab devices active", runner)
        watch = edged_cli("fleet", "watch", *mqtt, "--duration", "2")
        assert "rollout default-ops-1: running, wave 2 of 2" in watch.stdout, watch.stdout
        paused = edged_cli("fleet", "rollout", "pause", *base)
        assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
        out, _ = runner.communicate(timeout=scaled(60))
        assert runner.returncode == 0 and "paused: carry on with" in out
        assert "paused" in edged_cli("fleet", "rollout", "status", *base).stdout
        resume = [sys.executable, "-m", "edged", "fleet", "rollout", "resume", *base, *mqtt]
        resumed = subprocess.Popen(resume, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        lock = RolloutLock(store, "default-ops-1")
        wait_until(lambda: store.load("default-ops-1").phase == "running" and lock.held_elsewhere(), "resumed",
                   resumed)
        resumed.send_signal(signal.SIGTERM)  # stopped, not paused: the record stays running
        _, err = resumed.communicate(timeout=scaled(60))
        assert resumed.returncode == 130 and "the rollout is recorded" in err
        assert store.load("default-ops-1").phase == "running" and not lock.held_elsewhere()
        resumed = subprocess.Popen(resume, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        wait_until(lock.held_elsewhere, "resumed again", resumed)
        shown = json.loads(edged_cli("fleet", "rollout", "status", *base, "--json").stdout)
        assert shown["phase"] == "running" and shown["runner"]["pid"] == resumed.pid
        assert shown["devices"]["lab-1"]["outcome"] == "in_progress"
        aborted = edged_cli("fleet", "rollout", "abort", *base, *mqtt)
        assert aborted.returncode == 0, aborted.stderr
        out, _ = resumed.communicate(timeout=scaled(60))
        assert resumed.returncode == 1 and "aborted" in out
    finally:
        fleet.stop()
        depot.terminate()
        depot.wait(30)
    report = aborted.stdout
    assert "committed to ops v1, and keeping it (9): canary-1, canary-2, lab-2" in report
    assert "lab-1" not in report.split("keeping it")[1].split("\n")[0]
    assert f"edged fleet release --dir {keys.directory} --model MODELS/sim.gguf --channel ops --version 2" in report
    state = store.load("default-ops-1")
    assert state.phase == "aborted" and (state.reason or "").startswith("aborted by ")
    with Probe(MqttSettings(url=broker.url), "edged/fleet/default/group/+/offer", client_id="offers") as probe:
        time.sleep(1.0)
        assert all(not m.payload for m in probe.drain())  # both group offers withdrawn
    assert not store.request_path("default-ops-1").exists()
