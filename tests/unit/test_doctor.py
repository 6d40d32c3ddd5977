"""`edged doctor`: each check says what is wrong and what to do; a crashing engine is reported, not suffered."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import edged.crypto.clock
from edged.commands.doctor import (Check, check_broker, check_clock, check_engine, check_generation, check_model,
                                   check_state_dir, cmd_doctor, run_checks)
from edged.config import load_config

CRASH = "import os, signal; os.kill(os.getpid(), signal.{})"


@pytest.mark.parametrize("name", ["SIGILL", "SIGSEGV"])
def test_an_engine_that_dies_of_a_signal_is_named_as_a_build_for_another_cpu(tmp_path: Path, name: str) -> None:
    check = check_generation(tmp_path / "m.gguf", [sys.executable, "-c", CRASH.format(name)])
    assert check.status == "fail"
    assert name in check.summary and "built for another CPU" in check.summary
    assert "scripts/setup" in check.hint


def test_a_probe_that_prints_no_report_fails_clearly(tmp_path: Path) -> None:
    check = check_generation(tmp_path / "m.gguf", [sys.executable, "-c", "import sys; sys.exit(3)"])
    assert check.status == "fail" and "exited 3 without a report" in check.summary


def test_a_probe_report_of_failure_is_passed_on(tmp_path: Path) -> None:
    report = json.dumps({"ok": False, "error": "cannot read model"})
    check = check_generation(tmp_path / "m.gguf", [sys.executable, "-c", f"print({report!r})"])
    assert check.status == "fail" and check.summary == "cannot read model"


def test_model_checks(tmp_path: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    check, model = check_model(load_config(overrides={"model": {"path": str(text)}}, environ={}))
    assert check.status == "fail" and "not a GGUF file" in check.summary and model is None
    check, model = check_model(load_config(overrides={"model": {"path": str(tmp_path / "gone.gguf")}}, environ={}))
    assert check.status == "fail" and "cannot read" in check.summary
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    check, _ = check_model(load_config(overrides={"model": {"path": str(onnx)}}, environ={}))
    assert check.status == "fail" and "model.onnx" in check.summary


def test_state_dir_checks(tmp_path: Path) -> None:
    config = load_config(overrides={"state_dir": str(tmp_path / "new")}, environ={})
    assert check_state_dir(config).status == "ok"
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    check = check_state_dir(load_config(overrides={"state_dir": str(loose)}, environ={}))
    assert check.status == "fail" and "world-writable" in check.summary and "chmod 700" in check.hint
    link = tmp_path / "link"
    link.symlink_to(loose)
    assert check_state_dir(load_config(overrides={"state_dir": str(link)}, environ={})).status == "fail"


def test_a_broken_check_does_not_hide_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edged.commands.doctor as doctor

    def explode(_config: object) -> None:
        raise RuntimeError("sensor tree on fire")

    monkeypatch.setattr(doctor, "check_power", explode)
    config = load_config(overrides={"state_dir": str(tmp_path / "s"), "model": {"path": str(tmp_path / "x")}},
                         environ={})
    names = {check.name: check for check in run_checks(config, probe=False)}
    assert names["power"].status == "fail" and "sensor tree on fire" in names["power"].summary
    assert {"model", "clock", "state"} <= set(names)


def doctor_with_engine_library(library_dir: Path, state_dir: Path) -> dict[str, Any]:
    """`edged doctor --json` with llama.cpp looked up in `library_dir`; it must fail without a traceback."""
    done = subprocess.run([sys.executable, "-m", "edged", "doctor", "--no-generate", "--json",
                           "--state-dir", str(state_dir)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LLAMA_CPP_LIB_PATH": str(library_dir)})
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def test_an_engine_library_for_another_architecture_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "libllama.so").write_bytes(b"\x7fELF" + b"\x00" * 60)  # not loadable here
    checks = {check["name"]: check for check in doctor_with_engine_library(tmp_path, tmp_path / "state")["checks"]}
    assert checks["engine"]["status"] == "fail"
    assert "built for another machine" in checks["engine"]["summary"]


def test_a_missing_engine_library_is_one_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "lib"
    empty.mkdir()  # the package is there, its libllama.so is not (a half-copied venv or image)
    report = doctor_with_engine_library(empty, tmp_path / "state")
    assert report["healthy"] is False
    engine = next(check for check in report["checks"] if check["name"] == "engine")
    assert engine["status"] == "fail" and "cannot be loaded" in engine["summary"]
    assert "scripts/setup" in engine["summary"] and "scripts/setup" in engine["hint"]


def test_the_engine_check_names_the_variant_and_the_features_it_runs_with(tmp_path: Path) -> None:
    check = check_engine(tmp_path / "model.gguf")  # the model is not opened: this is the installed engine
    assert check.status == "ok", check.summary
    variant = check.details["variant"]
    assert f"CPU variant {variant}" in check.summary and variant in check.details["available_variants"]
    assert check.details["enabled_features"], check.details
    for feature in check.details["enabled_features"]:
        assert feature in check.summary


class _Listener:
    """A real TCP socket that accepts: the broker check only needs the port to answer."""

    def __enter__(self) -> int:
        self.server = socket.create_server(("127.0.0.1", 0))
        return int(self.server.getsockname()[1])

    def __exit__(self, *_exc: object) -> None:
        self.server.close()


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def test_the_broker_is_checked_only_when_mqtt_is_configured(tmp_path: Path) -> None:
    assert check_broker(load_config(environ={})) is None
    with _Listener() as port:
        up = check_broker(load_config(overrides={"mqtt": {"url": f"mqtt://127.0.0.1:{port}"}}, environ={}))
    assert up is not None and up.status == "ok" and f"127.0.0.1:{port}" in up.summary
    closed = _free_port()
    down = check_broker(load_config(overrides={"mqtt": {"url": f"mqtt://127.0.0.1:{closed}"}}, environ={}))
    assert down is not None and down.status == "fail"
    assert f"cannot reach mqtt://127.0.0.1:{closed}" in down.summary and "[mqtt] url" in down.hint


@pytest.mark.parametrize(("synced", "policy", "status", "says"), [
    (True, "reject", "ok", "sealed MQTT requests and updates are accepted"),
    (False, "reject", "warn", "refused until it is"),
    (False, "trust-system-clock", "warn", "accepts requests anyway"),
])
def test_the_clock_check_says_what_the_sync_state_means(monkeypatch: pytest.MonkeyPatch, synced: bool,
                                                        policy: str, status: str, says: str) -> None:
    monkeypatch.setattr(edged.crypto.clock, "clock_synchronised", lambda: synced)
    check = check_clock(load_config(overrides={"e2e": {"clock_policy": policy}}, environ={}))
    assert check.status == status and says in check.summary
    if not synced:
        assert "NTP" in check.hint


def _doctor_args(tmp_path: Path, as_json: bool) -> argparse.Namespace:
    return argparse.Namespace(config=None, model=None, state_dir=tmp_path / "state", json=as_json, no_generate=True)


@pytest.mark.parametrize(("statuses", "code"), [(["ok", "ok"], 0), (["ok", "warn"], 0), (["warn", "fail"], 1)])
def test_the_exit_status_is_0_only_without_a_failed_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str], statuses: list[str],
                                                          code: int) -> None:
    import edged.commands.doctor as doctor

    checks = [Check(f"check{i}", status, f"summary {i}", "do this") for i, status in enumerate(statuses)]  # type: ignore[arg-type]
    monkeypatch.setattr(doctor, "run_checks", lambda _config, probe: checks)
    assert cmd_doctor(_doctor_args(tmp_path, as_json=True)) == code
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is (code == 0)
    assert [check["status"] for check in report["checks"]] == statuses
    assert cmd_doctor(_doctor_args(tmp_path, as_json=False)) == code
    text = capsys.readouterr().out
    assert ("-> do this" in text) is any(status != "ok" for status in statuses)  # hints only where needed
