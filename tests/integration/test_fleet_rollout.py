"""Staged rollouts end to end (issue 18): a real mosquitto, one real depot, four `edged serve` daemons in two
groups (canary: 1, lab: 3) and the real `edged fleet rollout` processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.fleet.depot.rollout_state import RolloutStore
from edged.fleet.messages import parse_state
from edged.fleet.trust import ExpiryClock, TrustStore
from tests.daemon import REPO, DaemonProcess
from tests.integration.test_fleet_update import Operator, device_env, settings
from tests.integration.test_fleet_update import broker, depot, operator  # noqa: F401  (the module-scoped fixtures, shared)
from tests.mosquitto import Mosquitto
from tests.mqtt_probe import Probe
from tests.slowdown import scaled

pytestmark = pytest.mark.slow
GROUPS = {"canary-1": "canary", "lab-1": "lab", "lab-2": "lab", "lab-3": "lab"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto, operator: Operator, depot: Path
          ) -> Iterator[dict[str, DaemonProcess]]:
    """Four daemons, started in parallel (each loads the demo model)."""
    root = tmp_path_factory.mktemp("fleet")
    daemons = {}
    for device, group in GROUPS.items():
        daemon = DaemonProcess(root / device, "--device-id", device,
                               env=device_env(broker, groups=json.dumps([group])))
        TrustStore(daemon.state_dir, ExpiryClock(policy="trust-system-clock")).provision(
            operator.keys.root_path.read_bytes())
        daemons[device] = daemon
    for daemon in daemons.values():
        daemon.start(wait_ready=False)
    for daemon in daemons.values():
        daemon.wait_ready()
    yield daemons
    for daemon in daemons.values():
        daemon.kill()


def rollout(operator: Operator, broker: Mosquitto, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", "fleet", "rollout", *args, "--dir", str(operator.keys_dir),
                           "--mqtt", broker.url], capture_output=True, text=True, timeout=scaled(timeout), cwd=REPO)


def start_args(manifest: Path) -> list[str]:
    return ["start", str(manifest), "--wave", "canary", "--wave", "lab", "--wave-timeout", str(int(scaled(240)))]


def signed(operator: Operator, channel: str, model: str = "smollm2.gguf") -> Path:
    envelope = operator.sign(channel, 1, model, chunk_size=512 * 1024)
    path = operator.root / f"{channel}-1.json"
    path.write_bytes(envelope)
    return path


def retained_states(broker: Mosquitto) -> dict[str, object]:
    with Probe(settings(broker), "edged/+/update/state", client_id="states-probe") as probe:
        time.sleep(1.0)
        messages = probe.drain()
    return {m.topic.split("/")[1]: parse_state(m.payload) for m in messages if m.payload}


def test_a_rollout_goes_through_two_waves(broker, operator, depot, fleet) -> None:
    manifest = signed(operator, "waves")
    run = rollout(operator, broker, *start_args(manifest))
    logs = "".join(d.log_tail(1500) for d in fleet.values())
    assert run.returncode == 0, run.stdout + run.stderr + logs
    assert "wave 1/2 canary" in run.stdout and "wave 2/2 lab" in run.stdout and "finished" in run.stdout
    state = RolloutStore(operator.keys_dir).load("default-waves-1")
    assert state.phase == "finished" and [set(w.devices) for w in state.waves] == [{"canary-1"},
                                                                                  {"lab-1", "lab-2", "lab-3"}]
    assert state.waves[0].started_unix_ms < state.waves[1].started_unix_ms  # type: ignore[operator]
    for device, daemon in fleet.items():
        assert daemon.status()["model"]["path"].endswith("/smollm2.gguf"), device
        assert "/models/slot-" in daemon.status()["model"]["path"]
    shown = subprocess.run([sys.executable, "-m", "edged", "fleet", "rollout", "status", "default-waves-1", "--dir",
                            str(operator.keys_dir)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert "finished" in shown.stdout and "lab" in shown.stdout
    watch = subprocess.run([sys.executable, "-m", "edged", "fleet", "watch", "--mqtt", broker.url, "--duration", "2"],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    assert "default-waves-1" in watch.stdout and "finished" in watch.stdout


def test_a_failing_canary_aborts_before_the_second_wave_is_touched(broker, operator, depot, fleet) -> None:
    manifest = signed(operator, "broken", "corrupt.gguf")  # llama.cpp cannot load it: the health check fails
    run = rollout(operator, broker, *start_args(manifest))
    assert run.returncode == 1, run.stdout + run.stderr + fleet["canary-1"].log_tail(3000)
    assert "aborted" in run.stdout and "wave 1 (canary)" in run.stdout
    assert "no device committed the new release" in run.stdout
    state = RolloutStore(operator.keys_dir).load("default-broken-1")
    assert state.phase == "aborted" and state.waves[1].phase == "waiting" and not state.waves[1].devices
    states = retained_states(broker)
    assert states["canary-1"].state == "rolled_back" and states["canary-1"].reason == "load"  # type: ignore[attr-defined]
    for device in ("lab-1", "lab-2", "lab-3"):
        release = states[device].release  # type: ignore[attr-defined]
        assert release is None or release.channel != "broken", device
    with Probe(settings(broker), "edged/fleet/default/group/+/offer", client_id="offers-probe") as probe:
        time.sleep(1.0)
        offers = probe.drain()
    assert all(b"broken" not in m.payload for m in offers)  # the canary offer was withdrawn
    with fleet["canary-1"].client() as client:  # the canary still answers, on the model it had
        assert list(client.ask({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}))


def test_the_rollout_command_restarted_mid_wave_carries_on(broker, operator, depot, fleet) -> None:
    manifest = signed(operator, "restart")
    first = subprocess.Popen([sys.executable, "-m", "edged", "fleet", "rollout", *start_args(manifest), "--dir",
                              str(operator.keys_dir), "--mqtt", broker.url], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=REPO)
    store = RolloutStore(operator.keys_dir)
    end = time.monotonic() + scaled(180)
    while not (store.exists("default-restart-1") and store.load("default-restart-1").current_wave() == 1):
        assert first.poll() is None and time.monotonic() < end, first.communicate()[0]
        time.sleep(0.05)
    second = rollout(operator, broker, *start_args(manifest))  # another operator, same release
    assert second.returncode == 2 and "is being run by" in second.stderr and f"pid {first.pid}" in second.stderr
    first.send_signal(signal.SIGKILL)  # in the middle of wave 2
    first.wait(30)
    assert store.load("default-restart-1").phase == "running"
    done: list[subprocess.CompletedProcess[str]] = []
    worker = threading.Thread(target=lambda: done.append(rollout(operator, broker, *start_args(manifest))))
    worker.start()
    worker.join(scaled(300))
    assert done and done[0].returncode == 0, (done[0].stdout + done[0].stderr) if done else "no result"
    assert "carrying on from the recorded state" in done[0].stderr
    state = store.load("default-restart-1")
    assert state.phase == "finished" and len(state.waves[1].devices) == 3
    starts = [line for line in state.history if "started" in line]
    assert len(starts) == 2  # each wave started once, the restart did not start wave 2 again


def test_a_device_offline_when_its_wave_starts_is_pending_until_it_comes_back(broker, operator, depot, fleet) -> None:
    manifest = signed(operator, "offline")
    assert fleet["lab-3"].stop() == 0  # its retained status is now `stopped`, still naming its group
    store = RolloutStore(operator.keys_dir)
    runner = subprocess.Popen([sys.executable, "-m", "edged", "fleet", "rollout", *start_args(manifest), "--dir",
                               str(operator.keys_dir), "--mqtt", broker.url], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        end = time.monotonic() + scaled(180)
        while not (store.exists("default-offline-1") and store.load("default-offline-1").current_wave() == 1
                   and store.load("default-offline-1").waves[1].counts()["succeeded"] == 2):
            assert runner.poll() is None and time.monotonic() < end, runner.communicate()[0]
            time.sleep(0.1)
        wave = store.load("default-offline-1").waves[1]
        assert wave.devices["lab-3"].presence_at_start == "stopped" and wave.devices["lab-3"].outcome == "offline"
        assert runner.poll() is None  # two of three is below the success threshold: the wave waits for lab-3
        fleet["lab-3"].start()  # the retained group offer reaches it when it connects
        out, _ = runner.communicate(timeout=scaled(240))
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, out + fleet["lab-3"].log_tail(3000)
    state = store.load("default-offline-1")
    assert state.phase == "finished" and state.waves[1].devices["lab-3"].outcome == "succeeded"
    assert "(1 offline)" in out
