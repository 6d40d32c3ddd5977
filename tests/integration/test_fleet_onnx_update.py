"""ONNX model directories over the fleet (issue 18 item 7): real mosquitto, real depot, real daemons and models.

A device serving the GGUF demo model takes a release of the same model converted to an ONNX directory
(`edged fleet release --model DIR`), answers with onnxruntime, then takes a GGUF release again; a broken
ONNX release rolls back, and a file changed after signing is never served or installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.fleet.messages import parse_state
from edged.fleet.depot.operator import push
from edged.testing import PAUSE_ENV
from tests.daemon import DaemonProcess
from tests.e2e_keys import edged
from tests.integration.test_fleet_update import (Operator, ask, device_env, model_path, provisioned, settings,
                                                 start_depot, state_is)
from tests.integration.test_fleet_update import broker  # noqa: F401  (the module-scoped fixtures, shared)
from tests.integration.test_onnx_serve import converted_demo
from tests.mosquitto import Mosquitto
from tests.mqtt_probe import Probe

pytestmark = pytest.mark.slow
CHUNK = str(256 * 1024)
PREFIX = "onnxfleet"


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> Operator:
    """The operator's models: the demo GGUF and its ONNX conversion, copied into the depot's directory as it is."""
    operator = Operator(tmp_path_factory.mktemp("operator"), demo_model)
    shutil.copytree(converted_demo(tmp_path_factory), operator.models / "smollm2-onnx")
    return operator


@pytest.fixture(scope="module")
def depot(broker: Mosquitto, operator: Operator) -> Iterator[Path]:
    process, log = start_depot(broker, operator, PREFIX)
    yield log
    process.terminate()
    process.wait(30)


def release(operator: Operator, model: Path, channel: str, version: int) -> Path:
    out = operator.root / f"{channel}-{version}.json"
    edged("fleet", "release", "--dir", str(operator.keys_dir), "--model", str(model), "--channel", channel,
          "--version", str(version), "--chunk-size", CHUNK, "--health-prompt", "Say hi.", "--health-max-tokens", "2",
          "--health-timeout", "120", "--out", str(out))
    return out


def offer(broker: Mosquitto, device: str, manifest: Path) -> None:
    push(settings(broker, PREFIX), f"{PREFIX}/{device}/update/offer", manifest.read_bytes())


def loaded(daemon: DaemonProcess) -> list[tuple[str, str]]:
    """(path, engine) of every model the daemon loaded (only the ONNX engine logs a format)."""
    return [(line["path"], line.get("format", "gguf")) for line in daemon.log_lines()
            if line.get("event") == "model loaded"]


def test_a_gguf_device_takes_an_onnx_release_and_then_a_gguf_one(make_daemon, broker, operator, depot, demo_model):
    onnx_release = release(operator, operator.models / "smollm2-onnx", "switch", 1)
    gguf_release = release(operator, operator.models / "smollm2.gguf", "switch", 2)
    daemon = provisioned(make_daemon, operator, "switch-1", device_env(broker, PREFIX))
    with Probe(settings(broker, PREFIX), f"{PREFIX}/switch-1/update/state") as probe:
        daemon.start()
        assert model_path(daemon) == str(demo_model)
        offer(broker, "switch-1", onnx_release)
        active = probe.wait_for(state_is("active", 1), "ONNX release active", timeout=180, watch=daemon)
        onnx_dir = daemon.state_dir / "models" / "slot-a" / "smollm2-onnx"
        assert model_path(daemon) == str(onnx_dir)
        assert daemon.status()["model"]["format"] == "onnx"
        assert ask(daemon).strip()  # onnxruntime answers through the socket
        report = parse_state(active.payload)
        assert report.active is not None and (report.active.slot, report.active.model) == ("slot-a", "smollm2-onnx")
        assert sorted(p.name for p in onnx_dir.iterdir()) == sorted(p.name for p in
                                                                   (operator.models / "smollm2-onnx").iterdir())
        assert daemon.stop() == 0  # a restart starts on what the slot holds, with the engine it needs
        daemon.log_path.rename(daemon.workdir / "edged.onnx-life.log")
        daemon.start()
        assert model_path(daemon) == str(onnx_dir) and daemon.status()["model"]["format"] == "onnx"
        offer(broker, "switch-1", gguf_release)
        probe.wait_for(state_is("active", 2), "GGUF release active", timeout=180, watch=daemon)
    assert model_path(daemon) == str(daemon.state_dir / "models" / "slot-b" / "smollm2.gguf")
    assert daemon.status()["model"]["format"] == "gguf"
    assert ask(daemon).strip()
    models = daemon.state_dir / "models"
    assert loaded(daemon) == [(str(models / "slot-a" / "smollm2-onnx"), "onnx"),
                              (str(models / "slot-b" / "smollm2.gguf"), "gguf")]
    first_life = (daemon.workdir / "edged.onnx-life.log").read_text()
    assert first_life.count('"event": "download complete"') == 4  # one per file of the directory
    assert daemon.stop() == 0


def test_killed_after_the_download_an_onnx_update_resumes_without_fetching_again(make_daemon, broker, operator,
                                                                                 depot):
    """Paused right before the journal records `downloaded` (every file on disk and checked), killed -9."""
    manifest = release(operator, operator.models / "smollm2-onnx", "resume", 1)
    daemon = provisioned(make_daemon, operator, "resume-1", {**device_env(broker, PREFIX), PAUSE_ENV: "downloaded"})
    with Probe(settings(broker, PREFIX), f"{PREFIX}/resume-1/update/state") as probe:
        daemon.start()
        offer(broker, "resume-1", manifest)
        daemon.wait_for_log(lambda line: line.get("event") == "update paused for test", timeout=120)
        daemon.kill()
        daemon.log_path.rename(daemon.workdir / "edged.first-life.log")
        del daemon.env[PAUSE_ENV]
        daemon.start()
        probe.wait_for(state_is("active", 1), "finished after restart", timeout=180, watch=daemon)
    opened = [line for line in daemon.log_lines() if line.get("event") == "download opened"]
    assert len(opened) == 4 and all(line["on_disk"] == line["chunks"] for line in opened)  # per file, all there
    assert model_path(daemon) == str(daemon.state_dir / "models" / "slot-a" / "smollm2-onnx")
    assert ask(daemon).strip()
    assert daemon.stop() == 0


def test_an_onnx_release_that_fails_its_health_check_rolls_back(make_daemon, broker, operator, depot, demo_model):
    broken = operator.models / "broken-onnx"
    shutil.copytree(operator.models / "smollm2-onnx", broken)
    (broken / "model.onnx").write_bytes(b"this is not a protobuf")  # signed as it is: its hash matches
    manifest = release(operator, broken, "broken", 1)
    daemon = provisioned(make_daemon, operator, "broken-1", device_env(broker, PREFIX))
    with Probe(settings(broker, PREFIX), f"{PREFIX}/broken-1/update/state") as probe:
        daemon.start()
        offer(broker, "broken-1", manifest)
        final = probe.wait_for(state_is("rolled_back", 1, "load"), "rolled back", timeout=180, watch=daemon)
    assert "onnxruntime could not load" in (parse_state(final.payload).detail or "")
    assert model_path(daemon) == str(demo_model)
    assert ask(daemon).strip()  # the old model still answers
    assert not (daemon.state_dir / "models" / "current").exists()
    assert daemon.stop() == 0


def test_a_file_changed_after_signing_is_never_installed(make_daemon, broker, operator, depot, demo_model):
    tampered = operator.models / "tampered-onnx"
    shutil.copytree(operator.models / "smollm2-onnx", tampered)
    manifest = release(operator, tampered, "tampered", 1)
    config = bytearray((tampered / "edged_model.json").read_bytes())
    config[20] ^= 0x01  # the same size, one bit different from what was signed
    (tampered / "edged_model.json").write_bytes(bytes(config))
    daemon = provisioned(make_daemon, operator, "tampered-1",
                         device_env(broker, PREFIX, max_retries="2", idle_timeout_s="0.5"))
    with Probe(settings(broker, PREFIX), f"{PREFIX}/tampered-1/update/state") as probe:
        daemon.start()
        offer(broker, "tampered-1", manifest)
        final = probe.wait_for(state_is("failed", 1, "transfer"), "failed", timeout=180, watch=daemon)
    assert parse_state(final.payload).active is not None
    assert any(line.get("event") == "depot refused request" and "tampered-onnx/edged_model.json" in line.get("reason", "")
               for line in daemon.log_lines())
    assert model_path(daemon) == str(demo_model)
    assert ask(daemon).strip()
    directory = daemon.state_dir / "models" / "slot-a" / "tampered-onnx"
    assert not (directory / "edged_model.json").exists() and not (daemon.state_dir / "models" / "current").exists()
    assert daemon.stop() == 0
