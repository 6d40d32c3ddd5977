"""`edged doctor`: each check says what is wrong and what to do; a crashing engine is reported, not suffered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edged.commands.doctor import check_generation, check_model, check_state_dir, run_checks
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


def test_an_engine_library_for_another_architecture_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "libllama.so").write_bytes(b"\x7fELF" + b"\x00" * 60)  # not loadable here
    done = subprocess.run([sys.executable, "-m", "edged", "doctor", "--no-generate", "--json",
                           "--state-dir", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LLAMA_CPP_LIB_PATH": str(tmp_path)})
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    assert checks["engine"]["status"] == "fail"
    assert "built for another machine" in checks["engine"]["summary"]
