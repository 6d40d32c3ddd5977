"""Signed model updates end to end (issue 6): real mosquitto, real depot subprocess, real daemons and GGUF files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
from edged.fleet.manifest import Artifact, HealthCheck, ReleaseManifest, TargetSelector
from edged.fleet.messages import parse_state
from edged.fleet.depot.operator import push
from edged.testing import PAUSE_ENV
from edged.fleet.trust import ExpiryClock, TrustStore, utc_now
from edged.mqtt.inbound import InboundMessage
from edged.mqtt.settings import MqttSettings
from tests.daemon import REPO, DaemonProcess
from tests.e2e_keys import edged
from tests.mosquitto import Mosquitto
from tests.mqtt_probe import Probe
from tests.slowdown import scaled

pytestmark = pytest.mark.slow
QUESTION = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
FAULTS = "drop=0.03,dup=0.03,reorder=0.05,garble=0.03,truncate=0.02,stale=0.03,seed=5"
STEPS = ("verified", "downloading", "downloaded", "staged", "switched", "committed")


class Operator:
    """The operator's key directory and models; signs in-process (hashes each model file once)."""

    def __init__(self, root: Path, demo_model: Path) -> None:
        self.root = root
        self.keys_dir = root / "keys"
        edged("fleet", "init", "--dir", str(self.keys_dir), "--root-keys", "1", "--root-threshold", "1")
        self.keys = OperatorKeys(self.keys_dir)
        self.models = root / "models"
        self.models.mkdir()
        shutil.copyfile(demo_model, self.models / "smollm2.gguf")
        (self.models / "corrupt.gguf").write_bytes(b"GGUF" + os.urandom(1024 * 1024))
        with demo_model.open("rb") as whole:
            (self.models / "truncated.gguf").write_bytes(whole.read(4 * 1024 * 1024))
        self._hashes: dict[str, tuple[int, str]] = {}

    def sign(self, channel: str, version: int, model: str = "smollm2.gguf", *, chunk_size: int = 256 * 1024,
             targets: TargetSelector | None = None, keys: OperatorKeys | None = None) -> bytes:
        if model not in self._hashes:
            data = (self.models / model).read_bytes()
            self._hashes[model] = (len(data), hashlib.sha256(data).hexdigest())
        size, sha256 = self._hashes[model]
        manifest = ReleaseManifest(
            fleet="default", channel=channel, version=version, expires=utc_now() + timedelta(days=1),
            targets=targets or TargetSelector(), chunk_size=chunk_size,
            artifacts=[Artifact(name=model, size=size, sha256=sha256, format="gguf")],
            health_check=HealthCheck(prompt="Say hi.", max_tokens=2, timeout_s=120))
        return (keys or self.keys).sign_release(manifest)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path_factory.mktemp("broker")).start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> Operator:
    return Operator(tmp_path_factory.mktemp("operator"), demo_model)


def start_depot(broker: Mosquitto, operator: Operator, prefix: str, env: dict[str, str] | None = None,
                ) -> tuple[subprocess.Popen[bytes], Path]:
    log = operator.root / f"depot-{prefix}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "edged", "fleet", "depot", "--mqtt", broker.url, "--topic-prefix", prefix,
             "--share-group", prefix, "--dir", str(operator.keys_dir), "--models", str(operator.models)],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})})
    end = time.monotonic() + 60
    while b"depot ready" not in log.read_bytes():
        assert process.poll() is None and time.monotonic() < end, log.read_text(errors="replace")
        time.sleep(0.05)
    return process, log


@pytest.fixture(scope="module")
def depot(broker: Mosquitto, operator: Operator) -> Iterator[Path]:
    process, log = start_depot(broker, operator, "edged")
    yield log
    process.terminate()
    process.wait(30)


def device_env(broker: Mosquitto, prefix: str = "edged", **updates: str) -> dict[str, str]:
    env = {"EDGED_MQTT__URL": broker.url, "EDGED_MQTT__TOPIC_PREFIX": prefix, "EDGED_MQTT__BACKOFF_MIN_S": "0.1",
           "EDGED_MQTT__BACKOFF_MAX_S": "0.5", "EDGED_E2E__CLOCK_POLICY": "trust-system-clock",
           "EDGED_UPDATES__CLOCK_POLICY": "trust-system-clock", "EDGED_UPDATES__IDLE_TIMEOUT_S": "1"}
    return env | {f"EDGED_UPDATES__{key.upper()}": value for key, value in updates.items()}


def provisioned(make_daemon: Any, operator: Operator, device: str, env: dict[str, str]) -> DaemonProcess:
    daemon = make_daemon("--device-id", device, env=env)
    TrustStore(daemon.state_dir, ExpiryClock(policy="trust-system-clock")).provision(operator.keys.root_path.read_bytes())
    return daemon


def settings(broker: Mosquitto, prefix: str = "edged") -> MqttSettings:
    return MqttSettings(url=broker.url, topic_prefix=prefix, backoff_min_s=0.05, backoff_max_s=0.3)


def state_is(state: str, version: int | None = None, reason: str | None = None) -> Any:
    def check(message: InboundMessage) -> bool:
        report = parse_state(message.payload)
        return (report.state == state and (version is None or (report.release is not None
                                                               and report.release.version == version))
                and (reason is None or report.reason == reason))
    return check


def ask(daemon: DaemonProcess) -> str:
    with daemon.client() as client:
        answer = list(client.ask(QUESTION))[-1]
    return answer["choices"][0]["message"]["content"]


def model_path(daemon: DaemonProcess) -> str:
    return daemon.status()["model"]["path"]


def test_release_push_depot_install_and_answer(make_daemon, tmp_path, broker, operator, depot, demo_model):
    """The operator's commands end to end: release, depot (fixture), push, status; the daemon serves the new model."""
    manifest = tmp_path / "stable-1.json"
    edged("fleet", "release", "--dir", str(operator.keys_dir), "--model", str(operator.models / "smollm2.gguf"),
          "--channel", "stable", "--version", "1", "--chunk-size", str(128 * 1024), "--health-prompt", "Say hi.",
          "--health-max-tokens", "2", "--out", str(manifest))
    daemon = make_daemon("--device-id", "happy-1", env=device_env(broker, channels='["stable"]'))
    edged("fleet", "install-root", "--state-dir", str(daemon.state_dir), str(operator.keys_dir / "root.json"))
    daemon.start()
    assert model_path(daemon) == str(demo_model)
    pushed = time.monotonic()
    edged("fleet", "push", "--mqtt", broker.url, "--channel", "stable", "--dir", str(operator.keys_dir),
          str(manifest))
    watched = subprocess.run([sys.executable, "-m", "edged", "fleet", "status", "--mqtt", broker.url, "--device",
                              "happy-1", "--until", "active", "--timeout", str(int(scaled(120))), "--json"],
                             capture_output=True, text=True, timeout=scaled(150), cwd=REPO)
    took = time.monotonic() - pushed
    assert watched.returncode == 0, watched.stdout + watched.stderr + daemon.log_text()[-3000:]
    final = json.loads(watched.stdout.splitlines()[-1])
    assert final["state"] == "active" and final["release"] == {"channel": "stable", "version": 1}
    assert model_path(daemon) == str(daemon.state_dir / "models" / "slot-a" / "smollm2.gguf")
    assert ask(daemon).strip()
    once = edged("fleet", "status", "--mqtt", broker.url, "--once", "--json")
    devices = {entry["device_id"]: entry for entry in json.loads(once.stdout)}
    assert devices["happy-1"]["label"] == "active" and devices["happy-1"]["presence"] == "online"
    table = edged("fleet", "status", "--mqtt", broker.url, "--once", "--device", "happy-1").stdout
    assert "happy-1" in table and "slot-a: smollm2.gguf" in table and "stable v1" in table
    done = next(line for line in daemon.log_lines() if line.get("event") == "download complete")
    print(f"push to serving the new model: {took:.1f} s; download stats {done}")
    assert daemon.stop() == 0


def test_trust_faults_and_bad_models_keep_the_old_model(make_daemon, broker, operator, depot, demo_model, tmp_path):
    foreign = OperatorKeys.create(tmp_path / "foreign", root_keys=1, root_threshold=1, release_keys=1,
                                  release_threshold=1, expires=utc_now() + timedelta(days=30))
    not_me = operator.sign("trust", 1, targets=TargetSelector(devices=["someone-else"]))
    lower = operator.sign("trust", 2)
    corrupt = operator.sign("trust", 3, "corrupt.gguf", chunk_size=64 * 1024)
    truncated = operator.sign("trust", 4, "truncated.gguf", chunk_size=64 * 1024)
    forged = operator.sign("trust", 9, keys=foreign)
    daemon = provisioned(make_daemon, operator, "strict-1", device_env(broker))
    offer = "edged/strict-1/update/offer"
    with Probe(settings(broker), "edged/strict-1/update/state") as probe:
        daemon.start()
        probe.wait_for(state_is("idle"), "idle")
        push(settings(broker), offer, not_me)
        probe.wait_for(state_is("rejected", reason="target"), "rejected (target)")
        push(settings(broker), offer, forged)  # unsigned junk is only counted: it must not replace the state
        daemon.wait_for_log(lambda line: line.get("event") == "update offer unverified"
                            and line.get("kind") == "signature")
        assert not (daemon.state_dir / "models").exists()  # nothing downloaded for a refused manifest
        for version, envelope in ((3, corrupt), (4, truncated)):
            push(settings(broker), offer, envelope)
            probe.wait_for(state_is("rolled_back", version, "load"), f"v{version} rolled back", timeout=120, watch=daemon)
            assert model_path(daemon) == str(demo_model)
        assert ask(daemon).strip()  # the old model still answers
        push(settings(broker), offer, lower)
        probe.wait_for(state_is("rejected", reason="version"), "rejected (version)")
    assert not (daemon.state_dir / "models" / "current").exists()
    assert json.loads((daemon.state_dir / "trust" / "versions.json").read_text())["channels"]["trust"]["version"] == 4
    assert daemon.stop() == 0


def test_faulty_depot_over_the_broker_still_installs(make_daemon, broker, operator, demo_model):
    """Drops, duplicates, reordering, garbled, truncated and stale chunks from the real depot's test hook."""
    process, _ = start_depot(broker, operator, "faulty", {"EDGED_TEST_DEPOT_FAULTS": FAULTS})
    try:
        envelope = operator.sign("faulty", 2)
        daemon = provisioned(make_daemon, operator, "faulty-1",
                             device_env(broker, "faulty", idle_timeout_s="0.3", max_retries="50"))
        with Probe(settings(broker, "faulty"), "faulty/faulty-1/update/state") as probe:
            daemon.start()
            push(settings(broker, "faulty"), "faulty/faulty-1/update/offer", envelope)
            probe.wait_for(state_is("active", 2), "active", timeout=150, watch=daemon)
        stats = next(line for line in daemon.log_lines() if line.get("event") == "download complete")
        assert stats["garbled"] > 0 and stats["duplicates"] > 0 and stats["stale"] > 0 and stats["re_requests"] > 0
        assert model_path(daemon) == str(daemon.state_dir / "models" / "slot-a" / "smollm2.gguf")
        assert ask(daemon).strip()
        assert daemon.stop() == 0
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("step", STEPS)
def test_kill_9_at_every_step_leaves_a_valid_model(make_daemon, broker, operator, depot, demo_model, step):
    """Paused right before the journal records `step` (test hook), killed -9, restarted without the hook."""
    device = f"kill-{step}"
    envelope = operator.sign(device, 1)
    daemon = provisioned(make_daemon, operator, device, {**device_env(broker), PAUSE_ENV: step})
    with Probe(settings(broker), f"edged/{device}/update/state") as probe:
        daemon.start()
        push(settings(broker), f"edged/{device}/update/offer", envelope)
        daemon.wait_for_log(lambda line: line.get("event") == "update paused for test", timeout=120)
        daemon.kill()
        daemon.log_path.rename(daemon.workdir / "edged.first-life.log")
        del daemon.env[PAUSE_ENV]
        daemon.start()
        if step == "committed":  # switched, health check passed, not committed: undone at start
            final = probe.wait_for(state_is("rolled_back", 1, "interrupted"), "rolled back at start", timeout=120,
                                   watch=daemon)
            expected = str(demo_model)
        else:
            final = probe.wait_for(state_is("active", 1), "finished after restart", timeout=120, watch=daemon)
            expected = str(daemon.state_dir / "models" / "slot-a" / "smollm2.gguf")
    second_life = [line for line in daemon.log_lines() if line.get("event") == "update step"]
    assert second_life[0]["step"] == ("rolled_back" if step == "committed" else step)  # resumed where it stopped
    if step == "downloaded":  # everything was on disk: nothing fetched again
        opened = next(line for line in daemon.log_lines() if line.get("event") == "download opened")
        assert opened["on_disk"] == opened["chunks"]
    assert model_path(daemon) == expected
    assert ask(daemon).strip()
    journal = json.loads((daemon.state_dir / "update" / "journal.json").read_text())
    assert journal["update"]["step"] == ("rolled_back" if step == "committed" else "committed")
    assert parse_state(final.payload).active is not None
    assert daemon.stop() == 0


@pytest.mark.parametrize("crash", [signal.SIGSEGV, signal.SIGILL], ids=["SIGSEGV", "SIGILL"])
def test_a_crash_while_the_new_model_is_on_trial_rolls_back_at_start(make_daemon, broker, operator, depot,
                                                                     demo_model, crash):
    """The new model is loaded and on trial when the daemon dies of a signal (what a model or an engine build
    that crashes llama.cpp does); the next start goes back to the previous model and says why."""
    device = f"crash-{crash.name.lower()}"
    envelope = operator.sign(device, 1)
    daemon = provisioned(make_daemon, operator, device, {**device_env(broker), PAUSE_ENV: "health_check"})
    with Probe(settings(broker), f"edged/{device}/update/state") as probe:
        daemon.start()
        push(settings(broker), f"edged/{device}/update/offer", envelope)
        daemon.wait_for_log(lambda line: line.get("event") == "update paused for test", timeout=120)
        assert model_path(daemon) == str(daemon.state_dir / "models" / "slot-a" / "smollm2.gguf")  # on trial
        daemon.send_signal(crash)
        assert daemon.proc is not None and daemon.proc.wait(30) == -crash
        daemon.log_path.rename(daemon.workdir / "edged.first-life.log")
        del daemon.env[PAUSE_ENV]
        daemon.start()
        final = probe.wait_for(state_is("rolled_back", 1, "interrupted"), "rolled back at start", timeout=120)
    assert "on trial" in (parse_state(final.payload).detail or "")
    assert any(line.get("event") == "update rolled back at start" for line in daemon.log_lines())
    assert model_path(daemon) == str(demo_model)
    assert ask(daemon).strip()
    assert not (daemon.state_dir / "models" / "current").exists()
    assert daemon.stop() == 0
